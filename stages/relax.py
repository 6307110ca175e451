"""DVC stage relax: the per-step activation bitwidth schedule -> schedule.json (and bits.csv, its plot)."""

from pcr import stage
from pcr.config import load_params
from pcr.relax import relax


def main(argv: list[str] | None = None) -> None:
    params, qconfig, sensitivity, out, bits = stage.paths(argv, ["params", "qconfig", "sensitivity", "schedule", "bits"], "relax")
    stage.run(lambda: relax(load_params(params).relax, qconfig, out, sensitivity, bits))


if __name__ == "__main__":
    main()
