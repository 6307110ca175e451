"""DVC stage score: QDiffBench metrics -> metrics.json, plots/."""

from pcr import stage
from pcr.config import load_params
from pcr.score import score


def main(argv: list[str] | None = None) -> None:
    names = ["params", "reference", "generated", "trajectories", "calib", "metrics", "plots"]
    params, *paths = stage.paths(argv, names, "score")
    stage.run(lambda: score(load_params(params), *paths))


if __name__ == "__main__":
    main()
