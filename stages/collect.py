"""DVC stage collect: FP32 trajectories of the calibration prompts -> trajectories.zarr."""

from pcr import stage
from pcr.collect import collect
from pcr.config import load_params


def main(argv: list[str] | None = None) -> None:
    params, prompts, out = stage.paths(argv, ["params", "prompts", "trajectories"], "collect")
    stage.run(lambda: collect(load_params(params), out, prompts=stage.read_json(prompts)))


if __name__ == "__main__":
    main()
