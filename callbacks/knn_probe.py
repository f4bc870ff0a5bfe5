"""Weighted k-nearest-neighbour probe on cosine similarity (Wu et al. 2018; DINO, Caron et al. 2021).

Each val feature votes with its ``k`` most similar train features (cosine similarity ``s``); a
neighbour adds ``exp(s / T)`` to the score of its class and the class with the largest score wins
(DINO's ``eval_knn.py`` protocol, k 20, T 0.07).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from callbacks.features import (
    EmbedFn,
    check_every_n_epochs,
    labeled,
    probe_due,
    probe_loaders,
    probe_split_features,
    require_embed,
)


def knn_accuracy(
    train_feats: Tensor,
    train_y: Tensor,
    val_feats: Tensor,
    val_y: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy of DINO's weighted cosine kNN vote (labels -1 are dropped), in float64.

    Uses ``min(k, number of labeled train samples)`` neighbours; ``num_classes`` defaults to one more
    than the largest label seen.
    """
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be positive")
    train_feats, train_y = labeled(train_feats, train_y, "train", "knn_accuracy")
    val_feats, val_y = labeled(val_feats, val_y, "val", "knn_accuracy")
    classes = num_classes or int(max(train_y.max(), val_y.max())) + 1
    train_z = F.normalize(train_feats.double().cpu(), dim=1)
    train_y = train_y.cpu()
    neighbours = min(k, len(train_z))
    correct = 0
    for start in range(0, len(val_feats), chunk_size):
        query = F.normalize(val_feats[start : start + chunk_size].double().cpu(), dim=1)
        similarity, index = (query @ train_z.T).topk(neighbours, dim=1)
        votes = F.one_hot(train_y[index], classes).double() * (similarity / temperature).exp().unsqueeze(-1)
        correct += int(votes.sum(1).argmax(1).eq(val_y[start : start + chunk_size].cpu()).sum())
    return correct / len(val_feats)


class KNNProbe(L.Callback):
    """Logs ``{prefix}/knn_top1`` (``knn_accuracy`` on frozen ``embed`` features) at validation epoch end.

    Same schedule, data, gathering and logging as ``LinearProbe``: every ``every_n_epochs`` epochs and
    the last, on the probe loaders, identical on every rank and logged with ``sync_dist=False``.
    """

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
        super().__init__()
        if k < 1:
            raise ValueError(f"KNNProbe: k={k} must be >= 1")
        if temperature <= 0:
            raise ValueError(f"KNNProbe: temperature={temperature} must be positive")
        self.k = k
        self.temperature = temperature
        self.every_n_epochs = check_every_n_epochs(every_n_epochs, "KNNProbe")
        self.embed_kwargs = dict(embed_kwargs or {})
        self.embed_fn = embed_fn
        self.loaders = loaders
        self.prefix = prefix
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_embed(pl_module, self.embed_fn, "KNNProbe")
        probe_loaders(trainer, self.loaders, "KNNProbe")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not probe_due(trainer, self.every_n_epochs):
            return
        loaders = probe_loaders(trainer, self.loaders, "KNNProbe")
        train_feats, train_y, val_feats, val_y = probe_split_features(
            pl_module, loaders, "KNNProbe", self.embed_fn, self.embed_kwargs, self.seed
        )
        accuracy = knn_accuracy(train_feats, train_y, val_feats, val_y, k=self.k, temperature=self.temperature)
        pl_module.log(f"{self.prefix}/knn_top1", accuracy, sync_dist=False)
