"""DVC stage reference: FP32 images of the evaluation prompts with the evaluation seeds -> reference.zarr."""

from pcr import stage
from pcr.config import load_params
from pcr.generate import reference


def main(argv: list[str] | None = None) -> None:
    params, out = stage.paths(argv, ["params", "reference"], "reference")
    stage.run(lambda: reference(load_params(params), out))


if __name__ == "__main__":
    main()
