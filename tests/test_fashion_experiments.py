"""The Fashion-MNIST experiments compose, every sub-run they fit composes and passes run.py's checks, and the
study joints they need (seeds, a capped probe pool) work."""

from __future__ import annotations

import pytest
import torch
from conftest import CONF

from zoo.app.configs import compose_run
from zoo.app.study import check_sub_run, seed_summaries

FASHION = sorted(p.stem for p in (CONF / "experiment" / "fashion").glob("*.yaml"))


def test_there_is_one_experiment_per_claim() -> None:
    assert FASHION == ["dae_memorization", "moco", "rep_dynamics", "repa", "ssl_vs_diffusion"]


def sub_runs(name: str) -> dict[str, list[str]]:
    """Every sub-run of the experiment's study, as the study composes it (label -> overrides)."""
    study = compose_run([f"experiment=fashion/{name}"]).study
    if "arms" in study:
        runs = {arm: [*study.arm_run, *overrides] for arm, overrides in study.arms.items()}
        runs["encoder"] = list(study.encoder_run)
    elif "learners" in study:
        runs = {learner: list(overrides) for learner, overrides in study.learners.items()}
    else:
        runs = {label: list(overrides) for label, overrides in study.runs.items()}
    return {label: [o.replace("{encoder_ckpt}", "/nonexistent/last.ckpt") for o in overrides]
            for label, overrides in runs.items()}


@pytest.mark.parametrize("name", FASHION)
def test_every_sub_run_composes_on_fashion_mnist_and_passes_the_checks(name: str) -> None:
    for label, overrides in sub_runs(name).items():
        full = [f"experiment=fashion/{name}", *overrides, "study=null"]
        sub = compose_run(full)
        assert sub.data._target_ == "datamodules.FashionMNIST", label
        check_sub_run(name, label, sub, full)


def test_repa_has_the_controls_that_separate_spatial_structure_from_semantics() -> None:
    study = compose_run(["experiment=fashion/repa"]).study
    assert list(study.arms) == ["vanilla", "repa", "random_encoder", "permuted", "pooled"]
    assert len(study.seeds) >= 3
    layouts = {arm: compose_run(["experiment=fashion/repa", *study.arm_run, *overrides, "study=null"]
                                ).method.terms.align.layout
               for arm, overrides in ((a, [o.replace("{encoder_ckpt}", "x") for o in ov])
                                      for a, ov in study.arms.items())}
    assert layouts == {"vanilla": "spatial", "repa": "spatial", "random_encoder": "spatial",
                       "permuted": "permuted", "pooled": "pooled"}


def test_seed_summaries_give_mean_min_and_max_over_the_seeds() -> None:
    results = {"5/seed0": {"auc": 0.9}, "5/seed1": {"auc": 0.7}, "all/seed0": {"auc": 0.5}, "all/seed1": {"auc": 0.6}}
    summary = seed_summaries(results, ["5", "all"], [0, 1])
    assert summary["5/mean"]["auc"] == pytest.approx(0.8)
    assert (summary["all/min"]["auc"], summary["all/max"]["auc"]) == (0.5, 0.6)


def test_the_probe_pool_can_be_capped_to_unseen_images() -> None:
    from hydra.utils import instantiate

    from zoo.app.studies.rep_dynamics import images, labelled_pool

    data = compose_run(["data.n_train=50"]).data
    loader, scored = labelled_pool(data, pool_size=300, seed=1)
    assert len(loader.dataset) == 300 and bool(scored.all())
    seen = {image.numpy().tobytes() for image in images(instantiate(data).splits[0])}
    pooled = images(loader.dataset.samples)
    assert not any(image.numpy().tobytes() in seen for image in pooled)
    again = images(labelled_pool(data, pool_size=300, seed=1)[0].dataset.samples)
    other = images(labelled_pool(data, pool_size=300, seed=2)[0].dataset.samples)
    assert torch.equal(again, pooled) and not torch.equal(other, pooled)
    with pytest.raises(ValueError, match="study.pool_size=5000"):
        labelled_pool(data, pool_size=5000)

