"""JiT's experiments (Li & He, arXiv 2511.13720) as configs: the runs their studies list, and the toy's result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from zoo.methods.diffusion import Diffusion

PREDICTIONS = ("x", "eps", "v")
CLAMPS = {"x": ("min_b", 0.05), "eps": ("min_a", 0.05), "v": None}


def sub_run(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """A study run's config: the experiment's with the run's ``key=value`` overrides (all plain values,
    so merging them equals composing them; a misspelt key fails the same way on the struct config)."""
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))


def method_of(cfg: DictConfig, shape: list[int], num_classes: int) -> Diffusion:
    """The run's method, built with the shape the datamodule would report."""
    with open_dict(cfg):
        cfg.shape, cfg.num_classes = shape, num_classes
    return instantiate(cfg.method, net=instantiate(cfg.net))


def check_clamp(method: Diffusion, prediction: str, min_b: float = 0.0) -> None:
    """x-prediction clamps 1 - t (JiT's 0.05), eps-prediction clamps t, v-prediction needs neither;
    ``min_b`` is the clamp every run has (the JiT preset clamps 1 - t for all)."""
    clamp = CLAMPS[prediction]
    expected = {"min_b": min_b, "min_a": 0.0}
    if clamp is not None:
        expected[clamp[0]] = clamp[1]
    assert {"min_b": method.denoiser.min_b, "min_a": method.denoiser.min_a} == expected


def test_jit_toy_runs_every_prediction_at_every_dimension(make_config) -> None:
    cfg = make_config("experiment=jit_toy")
    assert cfg.study.report == "gen/manifold_distance"
    assert list(cfg.callbacks.generative.metrics) == ["manifold_distance"]
    assert cfg.callbacks.samples.projection == "P"
    runs = cfg.study.runs
    assert set(runs) == {f"{dim}/{p}" for dim in (2, 8, 16, 512) for p in PREDICTIONS}
    for label, overrides in runs.items():
        dim, prediction = label.split("/")
        sub = sub_run(cfg, overrides)
        assert (sub.data.kind, sub.data.ambient_dim) == ("spiral", int(dim))
        method = method_of(sub, [int(dim)], 1)
        assert (method.prediction, method.loss_space) == (prediction, "v")
        assert (method.net.num_blocks + 1, method.net.hidden_layers[0].out_features) == (5, 256)
        assert (method.sampler["name"], method.sampler["steps"]) == ("euler", 50)
        check_clamp(method, prediction)


def test_jit_grid_runs_the_three_by_three_at_two_patch_sizes(make_config) -> None:
    cfg = make_config("experiment=jit_grid")
    assert cfg.study.report == "gen/fd_pixels" and cfg.data.image_size == 16
    runs = cfg.study.runs
    assert set(runs) == {
        f"patch{patch}/{loss}-loss/{p}-pred" for patch in (8, 2) for loss in PREDICTIONS for p in PREDICTIONS
    }
    for label, overrides in runs.items():
        patch, loss, prediction = (part.split("-")[0].removeprefix("patch") for part in label.split("/"))
        sub = sub_run(cfg, overrides)
        method = method_of(sub, [1, 16, 16], 10)
        assert (method.prediction, method.loss_space, method.net.patch_size) == (prediction, loss, int(patch))
        patch_dim = int(patch) ** 2
        assert (patch_dim > method.net.width) == (patch == "8"), "patch 8: 64 numbers per token; patch 2: 4"
        check_clamp(method, prediction, min_b=0.05)


UNIFORM_DISK_DISTANCE = 0.144
"""Mean distance of uniform points in the unit disk to the 1-arm spiral: a model that learned nothing."""


@pytest.mark.slow
def test_reduced_jit_toy_keeps_x_prediction_and_loses_eps_and_v_at_high_dimension(make_config) -> None:
    """JiT Fig. 2 at D in {2, 512} and 600 steps: all learn the spiral at D = 2, only x-prediction at D = 512.

    Measured (1,000 samples): D = 2 x 0.053, eps 0.108, v 0.092; D = 512 x 0.074, eps 1007, v 21.9.
    """
    cfg = make_config("experiment=jit_toy", "study_jobs=2", "data.train_repeats=24", "callbacks.generative.n_samples=1000")
    with open_dict(cfg):
        for label in [label for label in cfg.study.runs if label.split("/")[0] not in ("2", "512")]:
            del cfg.study.runs[label]
    instantiate(cfg.study, _partial_=True)(cfg)
    table = json.loads((Path(cfg.paths.output_dir) / "jit_toy.json").read_text())
    low, high = table["2"], table["512"]
    assert max(low.values()) < 0.9 * UNIFORM_DISK_DISTANCE, table
    assert high["x"] < 0.15, table
    assert high["eps"] > 5 * high["x"] and high["v"] > 5 * high["x"], table
