"""Spikiness as a memorization detector: the AUC of per-sample representation statistics.

Zhang et al. (ICLR 2026, arXiv 2512.20963, Sec. 5, ``2-Application/rep_extraction_utils.py``): a
memorizing denoiser gives its training images spiky codes (a high std across units, a high
``||z||_4 / ||z||_2``) and unseen images balanced ones, so the per-sample std detects training
members. ``detection_auc`` is the area under the ROC curve of a score for telling the training images
(positives) from held-out ones (torchmetrics' binary AUROC, Mann-Whitney's U / (n_pos n_neg)); 0.5 is
chance, below 0.5 means the held-out images score higher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_auroc

from callbacks.features import (
    EmbedFn,
    check_every_n_epochs,
    extract_features,
    probe_due,
    probe_loaders,
    require_embed,
)


def per_sample_std(features: Tensor) -> Tensor:
    """Each sample's std across its features ``[N]`` (the per-sample form of ``sample_std``)."""
    return features.double().std(1, correction=0)


def per_sample_l4_l2(features: Tensor) -> Tensor:
    """Each sample's ``||z||_4 / ||z||_2`` ``[N]`` (the per-sample form of ``l4_l2_ratio``; zero rows give 0)."""
    features = features.double()
    return features.norm(p=4, dim=1) / features.norm(dim=1).clamp_min(1e-300)


SCORES: dict[str, Callable[[Tensor], Tensor]] = {"std": per_sample_std, "l4_l2": per_sample_l4_l2}


def detection_auc(members: Tensor, held_out: Tensor) -> float:
    """AUROC of a score for ``members`` (positives) against ``held_out`` (negatives); ties count half."""
    if len(members) == 0 or len(held_out) == 0:
        raise ValueError(
            f"detection_auc needs both kinds of samples, got {len(members)} members, {len(held_out)} held out"
        )
    scores = torch.cat([members, held_out]).double()
    target = torch.cat([torch.ones(len(members)), torch.zeros(len(held_out))]).long()
    return float(binary_auroc(scores, target))


def auc_interval(
    members: Tensor, held_out: Tensor, n_bootstrap: int = 1000, alpha: float = 0.1, seed: int = 0
) -> tuple[float, float]:
    """Percentile ``1 - alpha`` bootstrap interval of ``detection_auc``, each group resampled on its own."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor(
        [
            detection_auc(
                members[torch.randint(len(members), (len(members),), generator=generator)],
                held_out[torch.randint(len(held_out), (len(held_out),), generator=generator)],
            )
            for _ in range(n_bootstrap)
        ],
        dtype=torch.float64,
    )
    low, high = torch.quantile(values, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64))
    return float(low), float(high)


def detection_aucs(
    members: Tensor, held_out: Tensor, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, float]:
    """``{"auc_std", "auc_std_lo", "auc_std_hi", "auc_l4_l2", ...}`` from member and held-out features."""
    out: dict[str, float] = {}
    for name, score in SCORES.items():
        positive, negative = score(members), score(held_out)
        out[f"auc_{name}"] = detection_auc(positive, negative)
        if n_bootstrap > 0:
            out[f"auc_{name}_lo"], out[f"auc_{name}_hi"] = auc_interval(
                positive, negative, n_bootstrap, seed=seed
            )
    return out


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
