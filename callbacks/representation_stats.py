"""Label-free statistics of a representation logged at validation epoch end: collapse, spikiness, effective
rank, alignment, uniformity (the functions are ``callbacks.metrics.representation``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader, IterableDataset, Subset

from callbacks.features import (
    EmbedFn,
    ValidationEndProbe,
    check_every_n_epochs,
    extract_features,
    extract_view_pairs,
    probe_due,
    probe_loaders,
    require_embed,
)
from callbacks.metrics.representation import (
    alignment,
    representation_stats,
)


class RepresentationStats(ValidationEndProbe):
    """Logs ``{prefix}/<statistic>`` of the probe features at validation epoch end (no labels needed).

    Statistics (``callbacks.metrics.representation``): ``normalized_std``, ``sample_std``, ``feature_std``,
    ``l2_norm``, ``l4_l2``, ``effective_rank``, ``uniformity``, and ``collapsed`` (1 when
    ``normalized_std * sqrt(F) < collapse_threshold``, that is the normalised std below that fraction
    of the healthy ``1 / sqrt(F)``; a rank-zero warning says so). Features come from the probe
    ``split`` ("train" or "val") through ``embed``/``embed_fn``, gathered across ranks; values are
    identical on every rank and logged with ``sync_dist=False``.

    ``alignment`` needs positive pairs, which clean probe loaders do not have: it is logged only when
    ``views_loader`` is given, or when the datamodule's training items carry ``views``; then over the
    first ``alignment_samples`` samples of that dataset (first two views). Otherwise it is skipped
    (said once at rank zero). Augmented views repeat across runs and world sizes only when that
    loader has ``num_workers=0`` (the batches are loaded under ``seed``). ``uniformity`` is estimated on a
    ``seed``-drawn subset of ``uniformity_samples`` features (null: all pairs, quadratic in the split's size).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        split: str = "val",
        collapse_threshold: float = 0.05,
        embed_kwargs: Mapping[str, Any] | None = None,
        embed_fn: EmbedFn | None = None,
        loaders: tuple[DataLoader, DataLoader] | None = None,
        views_loader: DataLoader | None = None,
        alignment_samples: int = 1024,
        uniformity_samples: int | None = 4096,
        prefix: str = "stats",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if split not in ("train", "val"):
            raise ValueError(f"RepresentationStats: split={split!r} must be 'train' or 'val'")
        if collapse_threshold <= 0:
            raise ValueError(f"RepresentationStats: collapse_threshold={collapse_threshold} must be positive")
        if alignment_samples < 1:
            raise ValueError(f"RepresentationStats: alignment_samples={alignment_samples} must be >= 1")
        if uniformity_samples is not None and uniformity_samples < 2:
            raise ValueError(
                f"RepresentationStats: uniformity_samples={uniformity_samples} must be >= 2 (pairs), or null for all"
            )
        self.every_n_epochs = check_every_n_epochs(every_n_epochs, "RepresentationStats")
        self.split = split
        self.collapse_threshold = collapse_threshold
        self.embed_kwargs = dict(embed_kwargs or {})
        self.embed_fn = embed_fn
        self.loaders = loaders
        self.views_loader = views_loader
        self.alignment_samples = alignment_samples
        self.uniformity_samples = uniformity_samples
        self.prefix = prefix
        self.seed = seed
        self._said_no_views = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_embed(pl_module, self.embed_fn, "RepresentationStats")
        probe_loaders(trainer, self.loaders, "RepresentationStats")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not probe_due(trainer, self.every_n_epochs):
            return
        loaders = probe_loaders(trainer, self.loaders, "RepresentationStats")
        loader = loaders[0] if self.split == "train" else loaders[1]
        extract = dict(embed_fn=self.embed_fn, embed_kwargs=self.embed_kwargs, seed=self.seed)
        features, _ = extract_features(pl_module, loader, **extract)
        stats = representation_stats(features, self.uniformity_samples, self.seed or 0)
        collapsed = stats["normalized_std"] * math.sqrt(features.shape[1]) < self.collapse_threshold
        stats["collapsed"] = float(collapsed)
        if collapsed:
            rank_zero_warn(
                f"RepresentationStats: the representation has collapsed at epoch {trainer.current_epoch}: "
                f"normalized feature std {stats['normalized_std']:.3g} is below {self.collapse_threshold} "
                f"x 1/sqrt({features.shape[1]})"
            )
        views = self._views_loader(trainer)
        if views is not None:
            stats["alignment"] = alignment(*extract_view_pairs(pl_module, views, **extract))
        for name, value in stats.items():
            pl_module.log(f"{self.prefix}/{name}", value, sync_dist=False)

    def _views_loader(self, trainer: L.Trainer) -> DataLoader | None:
        if self.views_loader is not None:
            return self._first_samples(self.views_loader)
        datamodule = trainer.datamodule
        if datamodule is not None and is_overridden("train_dataloader", datamodule):
            train = datamodule.train_dataloader()
            map_style = not isinstance(train.dataset, IterableDataset) and len(train.dataset) > 0
            item = train.dataset[0] if map_style else None
            if isinstance(item, Mapping) and len(item.get("views") or []) >= 2:
                return self._first_samples(train)
        if not self._said_no_views:
            rank_zero_info(
                "RepresentationStats: no two-view data (pass views_loader= or train with views), "
                "so alignment is not logged"
            )
            self._said_no_views = True
        return None

    def _first_samples(self, loader: DataLoader) -> DataLoader:
        keep = range(min(self.alignment_samples, len(loader.dataset)))
        return DataLoader(
            Subset(loader.dataset, keep),
            batch_size=loader.batch_size,
            collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
        )
