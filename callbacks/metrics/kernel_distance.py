"""Kernel distance (KID, Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel,
averaged over random subsets (torchmetrics' ``KernelInceptionDistance`` on given features)."""

from __future__ import annotations

import warnings

from torch import Tensor, nn
from torchmetrics.image.kid import KernelInceptionDistance

from callbacks.metrics.frechet_distance import (
    check_feature_pair,
)


def kernel_distance(
    real: Tensor, fake: Tensor, subset_size: int = 1000, subsets: int = 100
) -> tuple[Tensor, Tensor]:
    """``(mean, std)`` over random subsets of the unbiased MMD² with the cubic polynomial kernel (KID).

    Bińkowski, Sutherland, Arbel, Gretton, "Demystifying MMD GANs", ICLR 2018, with
    ``k(a, b) = (aᵀb / F + 1)³``, computed by torchmetrics' ``KernelInceptionDistance``. The subset
    size is clamped to ``min(subset_size, len(real), len(fake))`` so that small evaluations work (a
    subset then holds a whole set and the std is 0); the subsets are drawn from torch's global
    generator (seed it for a reproducible value).
    """
    check_feature_pair(real, fake, "kernel_distance")
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(
            f"kernel_distance needs at least 2 real and 2 generated rows, got {len(real)} and {len(fake)}"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Metric `Kernel Inception Distance` will save all")
        metric = KernelInceptionDistance(
            feature=FeatureRows(real.shape[1]),
            subsets=subsets,
            subset_size=size,
            normalize=True,
            sync_on_compute=False,
        )
    metric.update(real, real=True)
    metric.update(fake.to(real.device), real=False)
    mean, std = metric.compute()
    return mean, std


class FeatureRows(nn.Module):
    """The identity, as torchmetrics' custom ``feature`` module for rows that already are features.

    torchmetrics reads the feature width from ``num_features`` (without it, it would probe the module
    with a dummy 3x299x299 image).
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features
