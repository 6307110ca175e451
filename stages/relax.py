"""DVC stage relax: the per-step activation bitwidth schedule -> schedule.json."""

from pcr import stage
from pcr.config import load_params
from pcr.relax import relax


def main(argv: list[str] | None = None) -> None:
    params, qconfig, out = stage.paths(argv, ["params", "qconfig", "schedule"], "relax")
    stage.run(lambda: relax(load_params(params).relax, qconfig, out))


if __name__ == "__main__":
    main()
