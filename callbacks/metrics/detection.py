"""Membership detection from features: the AUC with which a per-sample statistic (the feature std, the
l4/l2 ratio) tells training members from held-out images, with its bootstrap interval."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

from callbacks.metrics.hierarchical_bootstrap import percentile_interval


def per_sample_std(features: Tensor) -> Tensor:
    """Each sample's std across its features ``[N]`` (the per-sample form of ``sample_std``)."""
    return features.double().std(1, correction=0)


def per_sample_l4_l2(features: Tensor) -> Tensor:
    """Each sample's ``||z||_4 / ||z||_2`` ``[N]`` (the per-sample form of ``l4_l2_ratio``; zero rows give 0)."""
    features = features.double()
    return features.norm(p=4, dim=1) / features.norm(dim=1).clamp_min(1e-300)


def detection_auc(members: Tensor, held_out: Tensor) -> float:
    """AUROC of a score for ``members`` (positives) against ``held_out`` (negatives); ties count half."""
    if len(members) == 0 or len(held_out) == 0:
        raise ValueError(
            f"detection_auc needs both kinds of samples, got {len(members)} members, {len(held_out)} held out"
        )
    scores = torch.cat([members, held_out]).double()
    target = torch.cat([torch.ones(len(members)), torch.zeros(len(held_out))]).long()
    return float(binary_auroc(scores, target))


def auc_interval(
    members: Tensor, held_out: Tensor, n_bootstrap: int = 1000, alpha: float = 0.1, seed: int = 0
) -> tuple[float, float]:
    """Percentile ``1 - alpha`` bootstrap interval of ``detection_auc``, each group resampled on its own."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor(
        [
            detection_auc(
                members[torch.randint(len(members), (len(members),), generator=generator)],
                held_out[torch.randint(len(held_out), (len(held_out),), generator=generator)],
            )
            for _ in range(n_bootstrap)
        ],
        dtype=torch.float64,
    )
    return percentile_interval(values, alpha)


def detection_aucs(
    members: Tensor, held_out: Tensor, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, float]:
    """``{"auc_std", "auc_std_lo", "auc_std_hi", "auc_l4_l2", ...}`` from member and held-out features."""
    out: dict[str, float] = {}
    for name, score in SCORES.items():
        positive, negative = score(members), score(held_out)
        out[f"auc_{name}"] = detection_auc(positive, negative)
        if n_bootstrap > 0:
            out[f"auc_{name}_lo"], out[f"auc_{name}_hi"] = auc_interval(
                positive, negative, n_bootstrap, seed=seed
            )
    return out


SCORES: dict[str, Callable[[Tensor], Tensor]] = {"std": per_sample_std, "l4_l2": per_sample_l4_l2}
