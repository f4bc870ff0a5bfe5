"""The shape of a probe-accuracy curve over noise levels, decided by a stated bootstrap test.

Li et al. (NeurIPS 2025, arXiv 2502.05743, Fig. 1): the linear-probe accuracy of a diffusion model's
features over noise level is unimodal (best at an intermediate noise) when the model generalizes and
decreases monotonically toward noise (best on clean data) when it memorizes. A point estimate cannot
tell these apart when adjacent levels differ by a standard error, so here the curve comes with its
uncertainty:

- ``cross_validated_correct``: every labelled image the representation never trained on is scored
  once, by a linear probe fitted on all the other labelled images (k folds), giving per-sample
  correctness rather than one accuracy on a small val split;
- ``bootstrap_curves`` (``callbacks.metrics.hierarchical_bootstrap``): a hierarchical bootstrap of the
  mean curve, resampling training seeds and, within each, the scored images (paired across levels);
- ``shape_verdict``: the test, with simultaneous (Bonferroni) percentile intervals, stated in its docstring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.utils.data import DataLoader

from callbacks.features import EmbedFn, noise_averaged_features
from callbacks.metrics.hierarchical_bootstrap import bootstrap_curves, percentile_interval
from callbacks.metrics.linear import fit_logistic_regression, standardize

VERDICTS = ("unimodal", "monotone", "flat", "neither")


def cross_validated_correct(
    features: Tensor,
    labels: Tensor,
    scored: Tensor,
    folds: int = 5,
    seed: int = 0,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
) -> Tensor:
    """Per-sample correctness (bool, in dataset order) of the labelled ``scored`` rows under k-fold probing.

    The labelled ``scored`` rows are cut into ``folds`` random folds (seeded); each fold is predicted
    by the zoo's linear probe (standardised features, L-BFGS logistic regression, as ``LinearProbe``)
    fitted on every other labelled row, the unscored ones included (the images the representation
    trained on may train the probe, never be scored).
    """
    if folds < 2:
        raise ValueError(f"folds={folds}: cross-validation needs at least 2 folds")
    labelled = labels >= 0
    candidates = (scored.bool() & labelled).nonzero().squeeze(1)
    if len(candidates) < folds:
        raise ValueError(
            f"{len(candidates)} labelled scored samples cannot fill folds={folds}; score more samples"
        )
    generator = torch.Generator().manual_seed(seed)
    order = candidates[torch.randperm(len(candidates), generator=generator)]
    classes = int(labels[labelled].max()) + 1
    correct = torch.zeros(len(labels), dtype=torch.bool)
    for held in order.chunk(folds):
        train = labelled.clone()
        train[held] = False
        train_z, held_z = standardize(features[train], features[held])
        weight, bias = fit_logistic_regression(train_z, labels[train], classes, weight_decay, max_iter)
        correct[held] = (held_z @ weight + bias).argmax(1).eq(labels[held])
    return correct[candidates]


def cross_validated_curve(
    module: nn.Module,
    loader: DataLoader,
    scored: Tensor,
    levels: Sequence[float],
    draws: int = 4,
    folds: int = 5,
    seed: int = 0,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
    embed_kwargs: Mapping[str, Any] | None = None,
    embed_fn: EmbedFn | None = None,
) -> Tensor:
    """Correctness ``[len(levels), n_scored]`` of ``embed(x, t=level)`` features (averaged over ``draws``
    noise draws) under ``cross_validated_correct``, the same folds at every level."""
    rows = []
    for t in levels:
        kwargs = {**(embed_kwargs or {}), "t": t}
        features, labels = noise_averaged_features(module, loader, draws, kwargs, embed_fn, seed)
        if len(labels) != len(scored):
            raise ValueError(f"scored has {len(scored)} entries for a loader of {len(labels)} samples")
        rows.append(cross_validated_correct(features, labels, scored, folds, seed, weight_decay, max_iter))
    return torch.stack(rows)


@dataclass(frozen=True)
class ShapeVerdict:
    """A curve over ``levels`` (ascending, 1 = data), its band, the peak-minus-data-end gap and the verdict."""

    verdict: str
    levels: list[float]
    accuracy: list[float]
    lo: list[float]
    hi: list[float]
    peak_t: float
    gap: float
    gap_lo: float
    gap_hi: float
    drop: float
    drop_lo: float
    drop_hi: float
    level: float

    def summary(self) -> dict[str, float | str]:
        """The scalar fields, for a table."""
        return {
            "verdict": self.verdict,
            "peak_t": self.peak_t,
            "gap": self.gap,
            "gap_lo": self.gap_lo,
            "gap_hi": self.gap_hi,
            "drop": self.drop,
            "drop_lo": self.drop_lo,
            "drop_hi": self.drop_hi,
        }


def shape_verdict(
    levels: Sequence[float],
    correct: Sequence[Tensor],
    alpha: float = 0.1,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> ShapeVerdict:
    """The verdict on the mean curve of per-seed correctness ``[L, N_s]`` (rows in ``levels`` order).

    With levels sorted from the noisiest to the cleanest, ``A_i`` the accuracy at level ``i``, ``c``
    the cleanest and ``s`` the noisiest level, and ``I_a(d)`` the percentile interval of a contrast
    ``d`` over ``bootstrap_curves`` replicates at level ``1 - a``:

    - **unimodal**: some interior level ``i`` has ``I(A_i - A_c)`` and ``I(A_i - A_s)`` above zero,
      both at the Bonferroni level ``a = alpha / (L - 2)`` over the interior levels;
    - **monotone** (decreasing toward noise): not unimodal, ``I_alpha(A_c - A_s)`` above zero, and no
      step toward noise rises: ``I(A_i - A_{i+1})`` is not above zero for any ``i``, at ``alpha / (L - 1)``;
    - **flat**: not unimodal, ``I_alpha(A_c - A_s)`` contains zero and no ``I(A_i - A_c)`` at
      ``alpha / (L - 1)`` excludes zero;
    - **neither**: anything else (a peak at the noisy end, a significant zig-zag).

    ``gap`` is ``A_p - A_c`` at the interior peak ``p`` of the mean curve, with its interval at the
    unimodal test's level; ``drop`` is ``A_c - A_s`` with its ``1 - alpha`` interval; the band is the
    pointwise ``1 - alpha`` interval.
    """
    levels = [float(t) for t in levels]
    if len(levels) < 3 or len(set(levels)) != len(levels):
        raise ValueError(f"a curve shape needs at least 3 distinct levels, got {levels}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} must be in (0, 1)")
    if any(c.shape[0] != len(levels) for c in correct):
        raise ValueError(f"each correctness matrix needs one row per level ({len(levels)})")
    order = sorted(range(len(levels)), key=levels.__getitem__)
    correct = [c[order] for c in correct]
    levels = [levels[i] for i in order]
    replicates = bootstrap_curves(correct, n_bootstrap, seed)
    point = torch.stack([c.double().mean(1) for c in correct]).mean(0)
    size = len(levels)
    clean, noisy = size - 1, 0
    interior = range(1, size - 1)
    per_interior = alpha / (size - 2)
    per_step = alpha / (size - 1)

    def above(d: Tensor, a: float) -> bool:
        return percentile_interval(d, a)[0] > 0

    unimodal = any(
        above(replicates[:, i] - replicates[:, clean], per_interior)
        and above(replicates[:, i] - replicates[:, noisy], per_interior)
        for i in interior
    )
    drop_samples = replicates[:, clean] - replicates[:, noisy]
    drop_lo, drop_hi = percentile_interval(drop_samples, alpha)
    no_rise = not any(above(replicates[:, i] - replicates[:, i + 1], per_step) for i in range(size - 1))
    spans = [percentile_interval(replicates[:, i] - replicates[:, clean], per_step) for i in range(size - 1)]
    all_level = all(low <= 0 <= high for low, high in spans)
    if unimodal:
        verdict = "unimodal"
    elif drop_lo > 0 and no_rise:
        verdict = "monotone"
    elif drop_lo <= 0 <= drop_hi and all_level:
        verdict = "flat"
    else:
        verdict = "neither"
    peak = max(interior, key=lambda i: (float(point[i]), levels[i]))
    gap_lo, gap_hi = percentile_interval(replicates[:, peak] - replicates[:, clean], per_interior)
    band = [percentile_interval(replicates[:, i], alpha) for i in range(size)]
    return ShapeVerdict(
        verdict=verdict,
        levels=levels,
        accuracy=[float(a) for a in point],
        lo=[low for low, _ in band],
        hi=[high for _, high in band],
        peak_t=levels[peak],
        gap=float(point[peak] - point[clean]),
        gap_lo=gap_lo,
        gap_hi=gap_hi,
        drop=float(point[clean] - point[noisy]),
        drop_lo=drop_lo,
        drop_hi=drop_hi,
        level=1 - alpha,
    )


def band_figure(
    curves: Mapping[str, ShapeVerdict], ylabel: str = "linear probe top-1 (cross-validated)"
) -> Figure:
    """Each curve with its band over noise level ``t`` (1 = data), its verdict in the legend."""
    figure = Figure(figsize=(5.5, 3.6), tight_layout=True)
    axes = figure.add_subplot()
    for label, curve in curves.items():
        line = axes.plot(
            curve.levels, curve.accuracy, marker="o", markersize=3, label=f"{label}: {curve.verdict}"
        )[0]
        axes.fill_between(curve.levels, curve.lo, curve.hi, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("noise level t (0 = noise, 1 = data)")
    axes.set_ylabel(ylabel)
    level = next(iter(curves.values())).level if curves else 0.9
    axes.set_title(f"probe accuracy over noise, {level:.0%} bands", fontsize=9)
    axes.legend(fontsize=7)
    return figure
