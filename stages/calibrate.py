"""DVC stage calibrate: weights once, activations per step -> calib.zarr, qparams.safetensors, qconfig.json, activations.zarr."""

from pcr import stage
from pcr.calibrate.run import calibrate
from pcr.config import load_params


def main(argv: list[str] | None = None) -> None:
    params, relax, traj, weights, calib, qparams, qconfig, activations = stage.paths(
        argv, ["params", "relax_calibration", "trajectories", "weights", "calib", "qparams", "qconfig", "activations"], "calibrate")
    stage.run(lambda: calibrate(load_params(params), traj, calib, qparams, qconfig, activations, weights,
                                relax=stage.read_json(relax)))


if __name__ == "__main__":
    main()
