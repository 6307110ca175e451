"""DVC stage generate: the exported quantized model on the evaluation prompts -> generated.zarr."""

from pcr import stage
from pcr.config import load_params
from pcr.generate import generate


def main(argv: list[str] | None = None) -> None:
    names = ["params", "quantized", "reference", "generated"]
    params, *paths = stage.paths(argv, names, "generate")
    stage.run(lambda: generate(load_params(params), *paths))


if __name__ == "__main__":
    main()
