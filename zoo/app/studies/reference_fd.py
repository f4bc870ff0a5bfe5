"""The yardstick of the studies that compare generated images: the Fréchet distance in the features of the
dataset's reference classifier (``callbacks.metrics.reference_net``, trained once and cached), to the train split.

``ReferenceFD(cfg)`` builds the run's data, fits the reference net to it (or reads it from
``paths.cache_dir``) and holds the features of the clean train split; ``features(x)`` are the net's
features of any images, ``fd(x)`` the distance of images ``x`` to the train split with its bootstrap
interval (``callbacks.metrics.frechet_distance``). ``gen/fd_classifier`` of ``GenerativeMetrics`` is the same figure.
"""

from __future__ import annotations

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from callbacks.metrics.frechet_distance import frechet_distance, frechet_interval
from callbacks.metrics.reference_net import ReferenceNet


class ReferenceFD:
    """The reference net of ``cfg.data`` and its features of the train split (``real``)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.datamodule: L.LightningDataModule = instantiate(cfg.data)
        self.datamodule.setup("fit")
        self.net = ReferenceNet()
        self.net.fit_to(self.datamodule, cache_dir=cfg.paths.cache_dir)
        self.seed = int(cfg.seed)
        self.real = torch.cat([self.features(batch["x"]) for batch in self.datamodule.probe_dataloaders()[0]])

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 500) -> Tensor:
        """The reference net's features of images ``x``, in batches."""
        return torch.cat([self.net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    def fd(self, x: Tensor) -> tuple[float, float, float]:
        """``(FD, lo, hi)`` of images ``x`` to the train split: the distance and its 90% bootstrap interval."""
        features = self.features(x)
        lo, hi = frechet_interval(self.real, features, seed=self.seed)
        return float(frechet_distance(self.real, features)), float(lo), float(hi)
