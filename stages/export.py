"""DVC stage export: the calibrated UNet with the relax schedule applied -> quantized/ (the artifact users ship)."""

from pcr import stage
from pcr.config import load_params
from pcr.export import export


def main(argv: list[str] | None = None) -> None:
    params, qparams, qconfig, calib, schedule, out = stage.paths(argv, ["params", "qparams", "qconfig", "calib", "schedule", "quantized"], "export")
    stage.run(lambda: export(load_params(params), qparams, qconfig, calib, schedule, out))


if __name__ == "__main__":
    main()
