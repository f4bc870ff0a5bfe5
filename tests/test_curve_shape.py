"""The curve-shape verdict on constructed curves, cross-validated probing, and the detector's AUC."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from callbacks import MemorizationDetector
from callbacks.metrics.detection import (
    auc_interval,
    detection_auc,
    detection_aucs,
    per_sample_l4_l2,
    per_sample_std,
)
from callbacks.metrics.hierarchical_bootstrap import bootstrap_curves
from callbacks.metrics.shape_verdict import band_figure, cross_validated_correct, shape_verdict

LEVELS = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]


def correctness(curve: list[float], n: int, seed: int) -> torch.Tensor:
    """Per-sample correctness ``[L, n]`` drawn with the given true accuracies (independent Bernoullis)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(len(curve), n, generator=generator) < torch.tensor(curve).unsqueeze(1)


UNIMODAL = [0.20, 0.40, 0.60, 0.75, 0.85, 0.92, 0.95, 0.95, 0.94, 0.85]
MONOTONE = [0.10, 0.20, 0.30, 0.40, 0.50, 0.58, 0.64, 0.68, 0.70, 0.70]
FLAT = [0.80] * 10


@pytest.mark.parametrize(
    ("curve", "verdict"),
    [(UNIMODAL, "unimodal"), (MONOTONE, "monotone"), (FLAT, "flat"), (list(reversed(MONOTONE)), "neither")],
    ids=["unimodal", "monotone", "flat", "peak-at-noise"],
)
def test_verdict_on_constructed_curves(curve, verdict) -> None:
    seeds = [correctness(curve, 1000, seed) for seed in range(3)]
    result = shape_verdict(LEVELS, seeds, n_bootstrap=500)
    assert result.verdict == verdict
    assert all(lo <= a <= hi for lo, a, hi in zip(result.lo, result.accuracy, result.hi))


def test_a_small_peak_on_few_samples_is_not_called_unimodal() -> None:
    """A 2-point interior bump on 150 samples is inside the noise: the test must not call it significant."""
    noisy = [0.30, 0.45, 0.60, 0.70, 0.78, 0.84, 0.88, 0.91, 0.93, 0.91]
    result = shape_verdict(LEVELS, [correctness(noisy, 150, 0)], n_bootstrap=500)
    assert result.verdict != "unimodal"
    assert result.gap_lo <= 0 < result.gap_hi
    large = shape_verdict(LEVELS, [correctness(noisy, 20000, 0)], n_bootstrap=300)
    assert large.verdict == "unimodal" and large.peak_t == 0.85 and large.gap_lo > 0


def test_verdict_reports_gap_drop_and_band_in_level_order() -> None:
    shuffled = [9, 3, 0, 5, 1, 7, 2, 8, 4, 6]
    seeds = [correctness(UNIMODAL, 800, seed) for seed in range(2)]
    ordered = shape_verdict(LEVELS, seeds, n_bootstrap=300)
    permuted = shape_verdict([LEVELS[i] for i in shuffled], [c[shuffled] for c in seeds], n_bootstrap=300)
    assert permuted.levels == LEVELS and permuted.accuracy == pytest.approx(ordered.accuracy)
    assert ordered.peak_t in (0.65, 0.75)
    assert ordered.gap == pytest.approx(max(ordered.accuracy[1:-1]) - ordered.accuracy[-1])
    assert ordered.drop == pytest.approx(ordered.accuracy[-1] - ordered.accuracy[0])
    assert ordered.gap_lo < ordered.gap < ordered.gap_hi
    assert ordered.summary()["verdict"] == "unimodal"
    figure = band_figure({"n=all": ordered})
    assert figure.axes[0].get_legend().get_texts()[0].get_text() == "n=all: unimodal"


def test_bootstrap_resamples_seeds_and_samples() -> None:
    same = torch.ones(3, 50, dtype=torch.bool)
    assert torch.equal(bootstrap_curves([same, same], 20), torch.ones(20, 3, dtype=torch.float64))
    # Two seeds, one always right and one always wrong: replicates are 0, 0.5 or 1 (seed draws).
    values = bootstrap_curves([same, ~same], 400, seed=1)[:, 0]
    assert set(values.tolist()) == {0.0, 0.5, 1.0}
    # One seed of half-right samples: the bootstrap spread is the binomial one.
    half = torch.arange(400).remainder(2).bool().expand(3, 400)
    spread = bootstrap_curves([half], 2000)[:, 0].std()
    assert spread == pytest.approx(0.5 / 400**0.5, rel=0.15)


def test_verdict_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError, match="at least 3 distinct levels"):
        shape_verdict([0.1, 0.9], [torch.ones(2, 5, dtype=torch.bool)])
    with pytest.raises(ValueError, match="one row per level"):
        shape_verdict([0.1, 0.5, 0.9], [torch.ones(2, 5, dtype=torch.bool)])
    with pytest.raises(ValueError, match="alpha"):
        shape_verdict([0.1, 0.5, 0.9], [torch.ones(3, 5, dtype=torch.bool)], alpha=1.5)
    with pytest.raises(ValueError, match="at least one seed"):
        bootstrap_curves([])


def test_cross_validation_scores_only_unseen_labelled_samples() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    features = torch.eye(3)[labels] * 4 + torch.randn(300, 3, generator=generator)
    labels[:10] = -1
    seen = torch.zeros(300, dtype=torch.bool)
    seen[10:110] = True
    correct = cross_validated_correct(features, labels, ~seen, folds=4)
    assert correct.shape == (190,) and correct.double().mean() > 0.9
    # Random labels: the held-out folds are scored at chance.
    shuffled = labels[torch.randperm(300, generator=generator)]
    shuffled[:10] = -1
    assert cross_validated_correct(features, shuffled, ~seen, folds=4).double().mean() < 0.5
    with pytest.raises(ValueError, match="folds=1"):
        cross_validated_correct(features, labels, ~seen, folds=1)
    with pytest.raises(ValueError, match="cannot fill folds"):
        cross_validated_correct(features, labels, torch.arange(300) == 50, folds=2)


# ---------------------------------------------------------------- the detector's AUC


def test_auc_on_constructed_scores() -> None:
    assert detection_auc(torch.tensor([3.0, 4.0, 5.0]), torch.tensor([0.0, 1.0, 2.0])) == 1.0
    assert detection_auc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 0.0
    assert detection_auc(torch.ones(4), torch.ones(6)) == 0.5
    # One of the 2 x 2 pairs is ranked wrongly: 3 / 4.
    assert detection_auc(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])) == pytest.approx(0.75)
    generator = torch.Generator().manual_seed(0)
    shifted = detection_auc(
        torch.randn(4000, generator=generator) + 1, torch.randn(4000, generator=generator)
    )
    assert shifted == pytest.approx(0.760, abs=0.015)  # Phi(1 / sqrt(2))
    low, high = auc_interval(
        torch.randn(300, generator=generator) + 1, torch.randn(300, generator=generator), 300
    )
    assert low < 0.76 < high and high - low < 0.15
    with pytest.raises(ValueError, match="both kinds"):
        detection_auc(torch.ones(3), torch.ones(0))


def test_spiky_members_are_detected_by_std_and_l4_l2() -> None:
    generator = torch.Generator().manual_seed(0)
    spiky = torch.zeros(50, 100)
    spiky[torch.arange(50), torch.randint(100, (50,), generator=generator)] = 5.0
    balanced = torch.rand(60, 100, generator=generator)
    assert per_sample_std(spiky)[0] > per_sample_std(balanced)[0]
    assert per_sample_l4_l2(spiky)[0] == pytest.approx(1.0)
    aucs = detection_aucs(spiky, balanced, n_bootstrap=50)
    assert aucs["auc_std"] == 1.0 and aucs["auc_l4_l2"] == 1.0
    assert {"auc_std_lo", "auc_std_hi", "auc_l4_l2_lo", "auc_l4_l2_hi"} <= set(aucs)
    assert detection_aucs(balanced, spiky, n_bootstrap=0) == {"auc_std": 0.0, "auc_l4_l2": 0.0}


class Spiky(L.LightningModule):
    """``embed``: a one-hot spike for the training images (label 0 rows), a flat code for the others."""

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        return None

    def embed(self, x: torch.Tensor, **kw) -> torch.Tensor:
        spikes = torch.nn.functional.one_hot(x[:, 0].long().clamp_min(0) % 8, 8).float() * 4
        return torch.where((x[:, 1] > 0).unsqueeze(1), spikes, torch.ones(len(x), 8))


class MemberData(L.LightningDataModule):
    """Probe train: 30 members (x[:, 1] = 1); val: 20 held-out images (x[:, 1] = -1)."""

    def __init__(self) -> None:
        super().__init__()
        self.members = [{"x": torch.tensor([float(i), 1.0]), "y": torch.tensor(0)} for i in range(30)]
        self.held_out = [{"x": torch.tensor([float(i), -1.0]), "y": torch.tensor(0)} for i in range(20)]

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.held_out, batch_size=8)

    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        return DataLoader(self.members, batch_size=8), DataLoader(self.held_out, batch_size=8)


def test_the_detector_callback_logs_both_aucs(tmp_path) -> None:
    trainer = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[MemorizationDetector(n_bootstrap=20)],
        default_root_dir=tmp_path,
    )
    trainer.validate(Spiky(), datamodule=MemberData(), verbose=False)
    metrics = trainer.callback_metrics
    assert float(metrics["detect/auc_std"]) == 1.0 and float(metrics["detect/auc_l4_l2"]) == 1.0
    assert float(metrics["detect/auc_std_lo"]) <= 1.0 == float(metrics["detect/auc_std_hi"])
    with pytest.raises(ValueError, match="n_bootstrap=-1"):
        MemorizationDetector(n_bootstrap=-1)
