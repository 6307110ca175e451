"""DVC stage grid: FP32 over quantized images of the standard set -> grid.png."""

from pcr import stage
from pcr.config import load_params
from pcr.grid import grid


def main(argv: list[str] | None = None) -> None:
    params, reference, generated, out = stage.paths(argv, ["params", "reference", "generated", "grid"], "grid")
    stage.run(lambda: grid(load_params(params).generate.grid_images, reference, generated, out))


if __name__ == "__main__":
    main()
