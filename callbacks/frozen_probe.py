"""The shared skeleton of probes fitted on frozen features of the probe train/val splits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from torch import Tensor
from torch.utils.data import DataLoader

from callbacks.features import EmbedFn, ValidationEndProbe
from callbacks.probe_settings import ProbeSettings
from callbacks.progress import progress_shown


class FrozenFeatureProbe(ValidationEndProbe):
    """Logs ``{prefix}/{metric}`` = ``score(train_feats, train_y, val_feats, val_y)`` at validation epoch end
    (at train epoch end, said once, when the fit runs no validation loop).

    Every ``every_n_epochs`` epochs (and at the last epoch) features of the probe train and val splits
    (the datamodule's ``probe_dataloaders()`` or ``loaders``) are extracted through ``embed(x,
    **embed_kwargs)`` or ``embed_fn``, gathered across ranks, and scored identically on every rank;
    the value is logged with ``sync_dist=False`` from every rank. ``seed`` fixes torch's RNG per batch
    during extraction (for modules whose ``embed`` draws noise). The six settings are one
    ``ProbeSettings`` (``settings``). Subclasses set ``metric`` and implement ``score``. The extraction has a
    progress bar where the trainer shows its own (``callbacks.progress``).
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
        self.settings = ProbeSettings(type(self).__name__, every_n_epochs, embed_kwargs, embed_fn, loaders, prefix, seed)

    def score(self, train_feats: Tensor, train_y: Tensor, val_feats: Tensor, val_y: Tensor) -> float:
        raise NotImplementedError

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.settings.setup(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.settings.due(trainer):
            return
        with progress_shown(self.settings.owner, trainer):
            features = self.settings.features(pl_module, self.settings.splits(trainer))
        pl_module.log(self.settings.name(self.metric), self.score(*features), sync_dist=False)
