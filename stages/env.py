"""DVC stage env: validate params; library versions and prompt snapshots -> outputs/env/ (runs on every repro)."""

from pcr import stage
from pcr.env import env


def main(argv: list[str] | None = None) -> None:
    params, out = stage.paths(argv, ["params", "env_dir"], "env")
    stage.run(lambda: env(params, out))


if __name__ == "__main__":
    main()
