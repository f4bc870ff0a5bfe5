"""The shared skeleton of probes fitted on frozen features of the probe train/val splits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from torch import Tensor
from torch.utils.data import DataLoader

from callbacks.features import (
    EmbedFn,
    ValidationEndProbe,
    check_every_n_epochs,
    probe_due,
    probe_loaders,
    probe_split_features,
    require_embed,
)


class FrozenFeatureProbe(ValidationEndProbe):
    """Logs ``{prefix}/{metric}`` = ``score(train_feats, train_y, val_feats, val_y)`` at validation epoch end
    (at train epoch end, said once, when the fit runs no validation loop).

    Every ``every_n_epochs`` epochs (and at the last epoch) features of the probe train and val splits
    (the datamodule's ``probe_dataloaders()`` or ``loaders``) are extracted through ``embed(x,
    **embed_kwargs)`` or ``embed_fn``, gathered across ranks, and scored identically on every rank;
    the value is logged with ``sync_dist=False`` from every rank. ``seed`` fixes torch's RNG per batch
    during extraction (for modules whose ``embed`` draws noise). Subclasses set ``metric`` and
    implement ``score``.
    """

    metric: str

    def __init__(
        self,
        every_n_epochs: int = 1,
        embed_kwargs: Mapping[str, Any] | None = None,
        embed_fn: EmbedFn | None = None,
        loaders: tuple[DataLoader, DataLoader] | None = None,
        prefix: str = "probe",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.every_n_epochs = check_every_n_epochs(every_n_epochs, type(self).__name__)
        self.embed_kwargs = dict(embed_kwargs or {})
        self.embed_fn = embed_fn
        self.loaders = loaders
        self.prefix = prefix
        self.seed = seed

    def score(self, train_feats: Tensor, train_y: Tensor, val_feats: Tensor, val_y: Tensor) -> float:
        raise NotImplementedError

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_embed(pl_module, self.embed_fn, type(self).__name__)
        probe_loaders(trainer, self.loaders, type(self).__name__)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not probe_due(trainer, self.every_n_epochs):
            return
        name = type(self).__name__
        loaders = probe_loaders(trainer, self.loaders, name)
        features = probe_split_features(pl_module, loaders, name, self.embed_fn, self.embed_kwargs, self.seed)
        pl_module.log(f"{self.prefix}/{self.metric}", self.score(*features), sync_dist=False)
