"""The zoo's entry point: ``python run.py method=... data=... net=... trainer=...``.

Errors print as one clear message; set ``HYDRA_FULL_ERROR=1`` for the full traceback.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from zoo.train import main as train

    try:
        return train(cfg)
    except (ValueError, TypeError, KeyError, FileNotFoundError, RuntimeError, ArithmeticError, InstantiationException) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {error}\n(set HYDRA_FULL_ERROR=1 for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
