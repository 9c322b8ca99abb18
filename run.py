"""Command-line entry: ``python run.py task=inpaint sampler.t0=0.1`` (see README.md)."""

import hydra
from omegaconf import DictConfig

import ccdf.app


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return ccdf.app.main(cfg)


if __name__ == "__main__":
    main()
