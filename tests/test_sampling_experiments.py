"""The sampling-time experiments: self-refining sampling on the Gaussian mixture, reward guidance."""

from __future__ import annotations

import json
import math

import pytest
import torch

from zoo.app.studies.refine_gmm import mode_statistics
from zoo.app.train import main

MEANS = torch.tensor([[math.cos(a), math.sin(a)] for a in (0.0, math.pi / 2, math.pi, 3 * math.pi / 2)])


def test_mode_statistics_on_constructed_points() -> None:
    on_modes = MEANS.repeat(25, 1)
    assert mode_statistics(on_modes, MEANS) == pytest.approx({"mode_distance": 0.0, "coverage": 1.0, "spread": 0.0}, abs=1e-6)
    one_mode = MEANS[:1].repeat(100, 1) + torch.tensor([[0.1, 0.0]])
    stats = mode_statistics(one_mode, MEANS)
    assert stats["coverage"] == 0.25 and stats["mode_distance"] == pytest.approx(0.1)
    assert stats["spread"] == pytest.approx(0.1 / math.sqrt(2))


@pytest.mark.slow
def test_refinement_pulls_samples_toward_the_modes(make_config, tmp_path) -> None:
    """A reduced refine_gmm (half the training, 2,000 samples): K = 3 lands nearer the modes than K = 0,
    with every mode still covered (the full run: 0.120 -> 0.098 on seed 0, 0.108 -> 0.092 on seed 1)."""
    cfg = make_config("experiment=refine_gmm", "data.train_repeats=20", "study.n_samples=2000", "study.ks=[0,3]",
                      output_dir=tmp_path / "refine")
    main(cfg)
    table = json.loads((tmp_path / "refine" / "refine_gmm.json").read_text())
    assert table["3"]["mode_distance"] < table["0"]["mode_distance"]
    assert table["3"]["spread"] < table["0"]["spread"]
    assert table["3"]["coverage"] == 1.0
