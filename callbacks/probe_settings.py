"""What every frozen-feature probe is told: when it runs, how it embeds, on which data, under which seed, where
it logs.

``KNNProbe``, ``LinearProbe``, ``NoiseLevelProbe`` and ``ProbeMap`` take these six settings as keyword
arguments (what their configs set, what another project passes) and hold them as one ``ProbeSettings``,
which checks them once and does what every probe does with them: the checks at setup, whether a
validation epoch is due, the probe loaders, and the features of the probe splits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from torch import Tensor
from torch.utils.data import DataLoader

from callbacks.features import (
    EmbedFn,
    accepts_keyword,
    check_every_n_epochs,
    probe_due,
    probe_loaders,
    probe_split_features,
    require_embed,
)


@dataclass(frozen=True)
class ProbeSettings:
    """The settings of probe ``owner``; ``sets`` are the ``embed`` keywords the probe sets itself (``t``,
    ``layer``), which ``embed_kwargs`` may not hold and ``embed`` must accept."""

    owner: str
    every_n_epochs: int | None = 1
    embed_kwargs: Mapping[str, Any] = field(default_factory=dict)
    embed_fn: EmbedFn | None = None
    loaders: tuple[DataLoader, DataLoader] | None = None
    prefix: str = "probe"
    seed: int | None = 0
    sets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "every_n_epochs", check_every_n_epochs(self.every_n_epochs, self.owner))
        object.__setattr__(self, "embed_kwargs", dict(self.embed_kwargs or {}))
        if set(self.sets) & set(self.embed_kwargs):
            them = "them" if len(self.sets) > 1 else f"`{self.sets[0]}`"
            raise ValueError(f"{self.owner} sets {' and '.join(self.sets)} itself: remove {them} from embed_kwargs")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The module embeds (with the keywords the probe sets), and the probe loaders exist."""
        require_embed(pl_module, self.embed_fn, self.owner)
        if self.embed_fn is None:
            for keyword in self.sets:
                if not accepts_keyword(pl_module, keyword):
                    wanted = ", ".join(f"{k}=..." for k in self.sets)
                    raise ValueError(
                        f"{self.owner} needs embed(x, {wanted}): {type(pl_module).__name__}.embed does not accept "
                        f"`{keyword}`; probe a noise-conditioned model (or pass embed_fn=(module, x, **kw) -> features)"
                    )
        probe_loaders(trainer, self.loaders, self.owner)

    def due(self, trainer: L.Trainer) -> bool:
        return probe_due(trainer, self.every_n_epochs)

    def splits(self, trainer: L.Trainer) -> tuple[DataLoader, DataLoader]:
        """The probe train and val loaders: ``loaders``, or the datamodule's ``probe_dataloaders()``."""
        return probe_loaders(trainer, self.loaders, self.owner)

    def features(
        self, pl_module: L.LightningModule, loaders: tuple[DataLoader, DataLoader], **embed: Any
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(train_feats, train_y, val_feats, val_y)`` through ``embed(x, **embed_kwargs, **embed)``."""
        return probe_split_features(
            pl_module, loaders, self.owner, self.embed_fn, {**self.embed_kwargs, **embed}, self.seed
        )

    def name(self, metric: str) -> str:
        return f"{self.prefix}/{metric}"
