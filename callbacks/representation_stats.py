"""Label-free statistics of a representation: collapse, spikiness, effective rank, alignment, uniformity.

Every statistic is a pure function of a feature matrix ``N, F`` (computed in float64); the callback
logs them for the probe features at validation epoch end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor
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


def representation_stats(features: Tensor) -> dict[str, float]:
    """Every single-view statistic of this module, by name."""
    return {
        "normalized_std": normalized_feature_std(features),
        "sample_std": sample_std(features),
        "feature_std": feature_std(features),
        "l2_norm": mean_l2_norm(features),
        "l4_l2": l4_l2_ratio(features),
        "effective_rank": effective_rank(features),
        "uniformity": uniformity(features),
    }


class RepresentationStats(ValidationEndProbe):
    """Logs ``{prefix}/<statistic>`` of the probe features at validation epoch end (no labels needed).

    Statistics (see the functions above): ``normalized_std``, ``sample_std``, ``feature_std``,
    ``l2_norm``, ``l4_l2``, ``effective_rank``, ``uniformity``, and ``collapsed`` (1 when
    ``normalized_std * sqrt(F) < collapse_threshold``, that is the normalised std below that fraction
    of the healthy ``1 / sqrt(F)``; a rank-zero warning says so). Features come from the probe
    ``split`` ("train" or "val") through ``embed``/``embed_fn``, gathered across ranks; values are
    identical on every rank and logged with ``sync_dist=False``.

    ``alignment`` needs positive pairs, which clean probe loaders do not have: it is logged only when
    ``views_loader`` is given, or when the datamodule's training items carry ``views``; then over the
    first ``alignment_samples`` samples of that dataset (first two views). Otherwise it is skipped
    (said once at rank zero). Augmented views repeat across runs and world sizes only when that
    loader has ``num_workers=0`` (the batches are loaded under ``seed``).
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
        self.every_n_epochs = check_every_n_epochs(every_n_epochs, "RepresentationStats")
        self.split = split
        self.collapse_threshold = collapse_threshold
        self.embed_kwargs = dict(embed_kwargs or {})
        self.embed_fn = embed_fn
        self.loaders = loaders
        self.views_loader = views_loader
        self.alignment_samples = alignment_samples
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
        stats = representation_stats(features)
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
