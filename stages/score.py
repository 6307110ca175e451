"""DVC stage score: QDiffBench metrics with intervals -> metrics.json, plots/, samples/."""

from pcr import stage
from pcr.config import load_params
from pcr.score import score


def main(argv: list[str] | None = None) -> None:
    names = ["params", "reference", "generated", "trajectories", "calib", "metrics", "plots", "samples"]
    params, *paths = stage.paths(argv, names, "score")
    stage.run(lambda: score(load_params(params), *paths))


if __name__ == "__main__":
    main()
