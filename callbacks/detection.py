"""Spikiness as a memorization detector: the AUC of per-sample representation statistics.

Zhang et al. (ICLR 2026, arXiv 2512.20963, Sec. 5, ``2-Application/rep_extraction_utils.py``): a
memorizing denoiser gives its training images spiky codes (a high std across units, a high
``||z||_4 / ||z||_2``) and unseen images balanced ones, so the per-sample std detects training
members. ``detection_auc`` is the area under the ROC curve of a score for telling the training images
(positives) from held-out ones (torchmetrics' binary AUROC, Mann-Whitney's U / (n_pos n_neg)); 0.5 is
chance, below 0.5 means the held-out images score higher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from callbacks.features import (
    EmbedFn,
    check_every_n_epochs,
    extract_features,
    probe_due,
    probe_loaders,
    require_embed,
)
from callbacks.metrics.detection import (
    detection_aucs,
)


class MemorizationDetector(L.Callback):
    """Logs ``{prefix}/auc_std`` and ``{prefix}/auc_l4_l2`` (with ``_lo``/``_hi``, 90% bootstrap) at validation end.

    Members are the probe train split (the images the module trained on when the datamodule's probe
    train split is its training split), held-out images the probe val split; features come from
    ``embed(x, **embed_kwargs)`` (or ``embed_fn``), gathered across ranks, seeded per batch. Every
    ``every_n_epochs`` epochs and the last (None: the last only).
    """

    def __init__(
        self,
        every_n_epochs: int | None = None,
        n_bootstrap: int = 1000,
        seed: int = 0,
        embed_kwargs: Mapping[str, Any] | None = None,
        embed_fn: EmbedFn | None = None,
        loaders: tuple[DataLoader, DataLoader] | None = None,
        prefix: str = "detect",
    ) -> None:
        super().__init__()
        if n_bootstrap < 0:
            raise ValueError(f"MemorizationDetector: n_bootstrap={n_bootstrap} must be >= 0 (0: no interval)")
        self.every_n_epochs = check_every_n_epochs(every_n_epochs, "MemorizationDetector")
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.embed_kwargs = dict(embed_kwargs or {})
        self.embed_fn = embed_fn
        self.loaders = loaders
        self.prefix = prefix

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_embed(pl_module, self.embed_fn, "MemorizationDetector")
        probe_loaders(trainer, self.loaders, "MemorizationDetector")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not probe_due(trainer, self.every_n_epochs):
            return
        train_loader, val_loader = probe_loaders(trainer, self.loaders, "MemorizationDetector")
        members, _ = extract_features(pl_module, train_loader, self.embed_fn, self.embed_kwargs, self.seed)
        held_out, _ = extract_features(pl_module, val_loader, self.embed_fn, self.embed_kwargs, self.seed)
        for name, value in detection_aucs(members, held_out, self.n_bootstrap, self.seed).items():
            pl_module.log(f"{self.prefix}/{name}", value, sync_dist=False)
