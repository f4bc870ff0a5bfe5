"""Shared fixtures: compose the real Hydra configs the way run.py does."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from zoo.study import compose_as_run_py

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# No test may reach a model hub: fail at once instead of retrying downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Tiny nets on 2 cores: one thread is faster than two and keeps runs repeatable.
torch.set_num_threads(1)


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The composed run config for ``overrides``, with Hydra's runtime set as under ``run.py``."""
    return compose_as_run_py(overrides, output_dir)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_config("method=dae", "trainer=debug")`` -> a composed config writing into tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_config(list(overrides), output_dir or tmp_path / "run")

    return make
