"""DVC stage reference: FP32 images of the evaluation prompts with the evaluation seeds -> reference.zarr."""

from pcr import stage
from pcr.config import load_params
from pcr.images import reference


def main(argv: list[str] | None = None) -> None:
    params, prompts, out = stage.paths(argv, ["params", "prompts", "reference"], "reference")
    stage.run(lambda: reference(load_params(params), out, sets=stage.read_json(prompts)))


if __name__ == "__main__":
    main()
