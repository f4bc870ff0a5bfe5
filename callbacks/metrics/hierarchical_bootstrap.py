"""Hierarchical percentile bootstrap of mean accuracies: over training seeds, then over the scored images.

A probe scored on a few thousand test images has a standard error of about ``sqrt(p (1 - p) / n)``; a
comparison of training runs adds the spread over seeds. ``bootstrap_curves`` resamples both (Efron &
Tibshirani 1993, Ch. 13; the two-stage bootstrap of Davison & Hinkley 1997, Sec. 3.8), paired across
rows: each replicate draws the same images for every row (every noise level of a curve, every learner
of a table), so a difference of two rows gets the interval of the paired difference.
``accuracy_intervals`` gives a table's rows and its contrasts (a row minus another, a difference of two
such differences) with percentile intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def bootstrap_curves(correct: Sequence[Tensor], n_bootstrap: int = 2000, seed: int = 0) -> Tensor:
    """``[n_bootstrap, L]`` resampled mean curves from per-seed correctness matrices ``[L, N_s]``.

    Each replicate draws the seeds with replacement (when there are several) and, within each seed,
    its ``N_s`` scored samples with replacement, the same draw at every level; the replicate's curve is
    the mean over the drawn seeds of their accuracy on the drawn samples.
    """
    if not correct:
        raise ValueError("bootstrap_curves needs the correctness of at least one seed")
    if len({c.shape[0] for c in correct}) != 1:
        raise ValueError(f"every seed needs the same levels, got shapes {[tuple(c.shape) for c in correct]}")
    generator = torch.Generator().manual_seed(seed)
    per_seed = []
    for c in correct:
        n = c.shape[1]
        draws = torch.randint(n, (n_bootstrap, n), generator=generator)
        counts = torch.zeros(n_bootstrap, n, dtype=torch.float64).scatter_add_(
            1, draws, torch.ones_like(draws, dtype=torch.float64)
        )
        per_seed.append(counts @ c.double().T / n)
    stacked = torch.stack(per_seed)
    if len(correct) == 1:
        return stacked[0]
    pick = torch.randint(len(correct), (n_bootstrap, len(correct)), generator=generator)
    return stacked[pick, torch.arange(n_bootstrap).unsqueeze(1)].mean(1)


def percentile_interval(samples: Tensor, alpha: float) -> tuple[float, float]:
    """The ``1 - alpha`` percentile interval of bootstrap replicates ``samples``."""
    low, high = torch.quantile(samples, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=samples.dtype))
    return float(low), float(high)


def accuracy_intervals(
    correct: Sequence[Mapping[str, Tensor]],
    contrasts: Mapping[str, Mapping[str, float]] | None = None,
    n_bootstrap: int = 2000,
    alpha: float = 0.1,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Mean accuracy over seeds and its interval for every row, and for every contrast.

    ``correct`` holds one mapping per training seed, row -> bool ``[N]`` (per scored image, the same images
    in every row and seed; a row that does not train, such as raw pixels, repeats its vector). A contrast
    is row -> coefficient, e.g. ``{"moco": 1, "raw_pixels": -1}`` for a margin. Returns ``{row or contrast:
    {"acc", "lo", "hi"}}``; a contrast's interval is paired (the same images and seeds in every term).
    """
    if not correct:
        raise ValueError("accuracy_intervals needs the correctness of at least one seed")
    rows = list(correct[0])
    if any(list(per_seed) != rows for per_seed in correct):
        raise ValueError(f"every seed needs the same rows {rows}, got {[list(c) for c in correct]}")
    sizes = {int(c[row].numel()) for c in correct for row in rows}
    if len(sizes) != 1:
        raise ValueError(f"every row must score the same images, got sizes {sorted(sizes)}")
    unknown = [name for name, weights in (contrasts or {}).items() if not set(weights) <= set(rows)]
    if unknown:
        raise ValueError(f"contrasts {unknown} name rows outside {rows}")
    replicates = bootstrap_curves([torch.stack([c[row] for row in rows]) for c in correct], n_bootstrap, seed)
    point = torch.stack([torch.stack([c[row].double() for row in rows]).mean(1) for c in correct]).mean(0)
    index = {row: i for i, row in enumerate(rows)}
    table: dict[str, dict[str, float]] = {}
    for row, i in index.items():
        low, high = percentile_interval(replicates[:, i], alpha)
        table[row] = {"acc": float(point[i]), "lo": low, "hi": high}
    for name, weights in (contrasts or {}).items():
        vector = torch.zeros(len(rows), dtype=torch.float64)
        for row, weight in weights.items():
            vector[index[row]] = float(weight)
        low, high = percentile_interval(replicates @ vector, alpha)
        table[name] = {"acc": float(point @ vector), "lo": low, "hi": high}
    return table
