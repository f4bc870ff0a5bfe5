"""Shared fixtures: compose the real Hydra configs the way run.py does."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# No test may reach a model hub: fail at once instead of retrying downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Tiny nets on 2 cores: one thread is faster than two and keeps runs repeatable.
torch.set_num_threads(1)


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The composed run config for ``overrides``, with Hydra's runtime set as under ``run.py``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"hydra.run.dir={output_dir}", f"paths.output_dir={output_dir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_config("method=dae", "trainer=debug")`` -> a composed config writing into tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_config(list(overrides), output_dir or tmp_path / "run")

    return make
