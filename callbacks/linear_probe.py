"""Linear probe: a multinomial logistic regression on frozen features (the standard SSL protocol).

MoCo (He et al. 2020, Sec. 4.1) trains a linear classifier on frozen features with SGD; here the
head is fitted to convergence instead, deterministically: features standardised with the train
split's statistics, then full-batch L-BFGS in float64 on the L2-regularised cross-entropy
``mean_i CE(W z_i + b, y_i) + weight_decay / 2 * ||W||^2`` from a zero start (the problem is convex,
so the start does not matter). The same inputs give the same accuracy on every rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader

from callbacks.features import EmbedFn
from callbacks.frozen_probe import FrozenFeatureProbe
from callbacks.metrics.linear import linear_probe_accuracy


class LinearProbe(FrozenFeatureProbe):
    """Logs ``{prefix}/linear_top1``: ``linear_probe_accuracy`` of frozen ``embed`` features.

    Schedule, data, gathering and logging as in ``FrozenFeatureProbe``.
    """

    metric = "linear_top1"

    def __init__(
        self,
        every_n_epochs: int = 1,
        embed_kwargs: Mapping[str, Any] | None = None,
        embed_fn: EmbedFn | None = None,
        loaders: tuple[DataLoader, DataLoader] | None = None,
        weight_decay: float = 1e-4,
        max_iter: int = 100,
        prefix: str = "probe",
        seed: int | None = 0,
    ) -> None:
        super().__init__(every_n_epochs, embed_kwargs, embed_fn, loaders, prefix, seed)
        self.weight_decay = weight_decay
        self.max_iter = max_iter

    def score(self, train_feats: Tensor, train_y: Tensor, val_feats: Tensor, val_y: Tensor) -> float:
        return linear_probe_accuracy(
            train_feats, train_y, val_feats, val_y, weight_decay=self.weight_decay, max_iter=self.max_iter
        )
