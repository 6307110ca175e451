"""DVC stage weights: quantized weights (rtn or AdaRound reconstruction) -> weights.safetensors, weights_loss.csv."""

from pcr import stage
from pcr.config import load_params
from pcr.weights.run import weights


def main(argv: list[str] | None = None) -> None:
    params, traj, out, losses = stage.paths(argv, ["params", "trajectories", "weights", "losses"], "weights")
    stage.run(lambda: weights(load_params(params), traj, out, losses))


if __name__ == "__main__":
    main()
