"""DVC stage sensitivity: per-step sensitivity of the calibrated model to relax.bits -> sensitivity.csv (relax.where: auto)."""

from pcr import stage
from pcr.config import load_params
from pcr.sensitivity import sensitivity_stage


def main(argv: list[str] | None = None) -> None:
    params, traj, calib, qparams, qconfig, out = stage.paths(
        argv, ["params", "trajectories", "calib", "qparams", "qconfig", "sensitivity"], "sensitivity")
    stage.run(lambda: sensitivity_stage(load_params(params), traj, calib, qparams, qconfig, out))


if __name__ == "__main__":
    main()
