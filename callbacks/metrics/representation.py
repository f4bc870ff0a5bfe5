"""Label-free statistics of a representation, each a pure function of a feature matrix ``N, F`` in float64:
collapse (normalised and raw stds), spikiness (l4/l2), effective rank (Roy & Vetterli 2007), and the
alignment and uniformity of Wang & Isola 2020. ``callbacks.RepresentationStats`` logs them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def normalized_feature_std(features: Tensor) -> float:
    """Mean over features of the std over samples of the L2-normalised features ``z / ||z||``.

    SimSiam's collapse detector (Chen & He 2021, Sec. 4.1): about ``1 / sqrt(F)`` for features spread
    over the sphere, 0 when every sample maps to the same direction (complete collapse).
    """
    return F.normalize(features.double(), dim=1).std(0, correction=0).mean().item()


def sample_std(features: Tensor) -> float:
    """Mean over samples of the std of each sample's activations across its features.

    The spikiness std of Zhang et al. (ICLR 2026, arXiv 2512.20963, ``rep_extraction_utils.py``): high
    for spiky codes (a few large activations), low for balanced ones; their memorization detector.
    """
    return features.double().std(1, correction=0).mean().item()


def feature_std(features: Tensor) -> float:
    """Mean over features of each feature's std across samples (how much units vary over the data)."""
    return features.double().std(0, correction=0).mean().item()


def mean_l2_norm(features: Tensor) -> float:
    """Mean over samples of ``||z||_2``."""
    return features.double().norm(dim=1).mean().item()


def l4_l2_ratio(features: Tensor) -> float:
    """Mean over samples of ``||z||_4 / ||z||_2``: 1 for a one-hot code, ``F^(-1/4)`` for a flat one.

    The spikiness ratio of Zhang et al. (ICLR 2026, arXiv 2512.20963); all-zero rows count as 0.
    """
    features = features.double()
    return (features.norm(p=4, dim=1) / features.norm(dim=1).clamp_min(1e-300)).mean().item()


def effective_rank(features: Tensor) -> float:
    """RankMe (Garrido et al., ICML 2023, Eq. 1): ``exp(-sum_k p_k log p_k)``, ``p_k = s_k / sum_j s_j``.

    ``s_k`` are the singular values of the (uncentred) feature matrix; terms with ``p_k = 0`` count 0.
    1 for identical rows, ``F`` for an isotropic code with many more samples than features.
    """
    singular = torch.linalg.svdvals(features.double())
    p = singular / singular.sum()
    p = p[p > 0]
    return (-(p * p.log()).sum()).exp().item()


def alignment(a: Tensor, b: Tensor, alpha: float = 2.0) -> float:
    """Wang & Isola (ICML 2020, Eq. 4): ``mean_i ||a_i/|a_i| - b_i/|b_i| ||^alpha`` over positive pairs.

    0 when both views map to the same direction; at most ``2^alpha`` (opposite directions).
    """
    if a.shape != b.shape:
        raise ValueError(f"alignment needs paired features of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    diff = F.normalize(a.double(), dim=1) - F.normalize(b.double(), dim=1)
    return diff.norm(dim=1).pow(alpha).mean().item()


def uniformity(features: Tensor, t: float = 2.0, chunk_size: int = 1024) -> float:
    """Wang & Isola (ICML 2020, Eq. 5): ``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` of normalised features.

    0 when all samples coincide, more negative the more uniformly they spread over the sphere (``-2t``
    for orthogonal directions). Computed in row chunks so memory stays ``chunk_size x N``.
    """
    z = F.normalize(features.double(), dim=1)
    n = len(z)
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 samples, got {n}")
    log_sums = []
    for start in range(0, n - 1, chunk_size):
        rows = z[start : start + chunk_size]
        squared = (2 - 2 * rows @ z.T).clamp_min(0)
        i = torch.arange(start, start + len(rows)).unsqueeze(1)
        upper = torch.arange(n).unsqueeze(0) > i
        log_sums.append(torch.logsumexp((-t * squared)[upper], dim=0))
    return (torch.logsumexp(torch.stack(log_sums), dim=0) - math.log(n * (n - 1) / 2)).item()


def representation_stats(features: Tensor, uniformity_samples: int | None = None, seed: int = 0) -> dict[str, float]:
    """Every single-view statistic of this module, by name.

    ``uniformity`` averages over all ``N^2 / 2`` pairs; with ``uniformity_samples`` it is estimated on a
    random subset of that many rows (drawn with ``seed``), as Wang & Isola estimate it on batches: on
    54,000 features the exact figure takes 30 s a call, a subset of 4,096 rows a fraction of a second.
    """
    subset = features
    if uniformity_samples is not None and len(features) > uniformity_samples:
        generator = torch.Generator().manual_seed(seed)
        subset = features[torch.randperm(len(features), generator=generator)[:uniformity_samples]]
    return {
        "normalized_std": normalized_feature_std(features),
        "sample_std": sample_std(features),
        "feature_std": feature_std(features),
        "l2_norm": mean_l2_norm(features),
        "l4_l2": l4_l2_ratio(features),
        "effective_rank": effective_rank(features),
        "uniformity": uniformity(subset),
    }
