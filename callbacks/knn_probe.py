"""Weighted k-nearest-neighbour probe on cosine similarity (Wu et al. 2018; DINO, Caron et al. 2021).

Each val feature votes with its ``k`` most similar train features (cosine similarity ``s``); a
neighbour adds ``exp(s / T)`` to the score of its class and the class with the largest score wins
(DINO's ``eval_knn.py`` protocol, k 20, T 0.07).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader

from callbacks.features import EmbedFn
from callbacks.frozen_probe import FrozenFeatureProbe
from callbacks.metrics.knn import knn_accuracy


class KNNProbe(FrozenFeatureProbe):
    """Logs ``{prefix}/knn_top1`` (``knn_accuracy`` on frozen ``embed`` features) at validation epoch end.

    Schedule, data, gathering and logging as in ``FrozenFeatureProbe``.
    """

    metric = "knn_top1"

    def __init__(
        self,
        k: int = 20,
        temperature: float = 0.07,
        every_n_epochs: int = 1,
        embed_kwargs: Mapping[str, Any] | None = None,
        embed_fn: EmbedFn | None = None,
        loaders: tuple[DataLoader, DataLoader] | None = None,
        prefix: str = "probe",
        seed: int | None = 0,
    ) -> None:
        super().__init__(every_n_epochs, embed_kwargs, embed_fn, loaders, prefix, seed)
        if k < 1:
            raise ValueError(f"KNNProbe: k={k} must be >= 1")
        if temperature <= 0:
            raise ValueError(f"KNNProbe: temperature={temperature} must be positive")
        self.k = k
        self.temperature = temperature

    def score(self, train_feats: Tensor, train_y: Tensor, val_feats: Tensor, val_y: Tensor) -> float:
        return knn_accuracy(train_feats, train_y, val_feats, val_y, k=self.k, temperature=self.temperature)
