"""Linear-probe accuracy of a diffusion model's features across noise levels, and the curve's shape.

Li et al. (NeurIPS 2025, arXiv 2502.05743): the probe accuracy of ``embed(x, t)`` over noise levels
is unimodal (best at an intermediate noise) when the model generalises and becomes monotone (best
on clean data, falling toward noise) as it memorises. DDAE (Xiang et al., ICCV 2023) finds the peak
at a small nonzero noise. Levels follow the zoo's convention: ``t = 1`` is data, ``t = 0`` is noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import DataLoader

from callbacks.features import (
    EmbedFn,
    ValidationEndProbe,
    batch_xy,
    embed_batch,
    evaluating,
    global_batches,
    module_device,
    seeded,
)
from callbacks.figures import show
from callbacks.metrics.curve_shape import curve_shape
from callbacks.metrics.linear import linear_probe_accuracy
from callbacks.probe_settings import ProbeSettings
from callbacks.progress import progress_shown, track

DEFAULT_LEVELS = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)


def curve_figure(levels: Sequence[float], accuracies: Sequence[float], shape: str) -> Figure:
    """Probe accuracy against noise level ``t`` (1 = data), the best (and cleanest among ties) marked."""
    figure = Figure(figsize=(4.5, 3.2), tight_layout=True)
    axes = figure.add_subplot()
    pairs = sorted(zip(levels, accuracies))
    axes.plot([t for t, _ in pairs], [a for _, a in pairs], marker="o")
    best_t, best = max(pairs, key=lambda pair: (pair[1], pair[0]))
    axes.scatter([best_t], [best], color="tab:red", zorder=3, label=f"best t={best_t:g}")
    axes.set_xlabel("noise level t (0 = noise, 1 = data)")
    axes.set_ylabel("linear probe top-1")
    axes.set_title(f"probe accuracy over noise: {shape}")
    axes.legend()
    return figure


class NoiseLevelProbe(ValidationEndProbe):
    """Linear probe of ``embed(x, t=level)`` at each of ``levels``, at validation epoch end.

    Logs ``{prefix}/top1_t{level:g}`` per level, ``{prefix}/best_t`` (ties go to the cleaner level),
    ``{prefix}/best_top1``,
    ``{prefix}/unimodal`` and ``{prefix}/monotone`` (0/1, see ``curve_shape``), and the curve as a
    figure ``{prefix}/curve`` to every TensorBoard logger, or a PNG under the run folder's ``figures/`` (rank zero). Runs every ``every_n_epochs``
    epochs and at the last epoch. For each level, the probe train/val features are extracted with
    torch's RNG seeded per batch (``seed + batch index``), so the noise the module draws inside
    ``embed`` is the same at every level, on every run and at every world size. Where the trainer shows its
    progress bar, the levels and each extraction have bars (``callbacks.progress``).

    Raises a ValueError at fit/validate start when ``embed`` does not take ``t`` or its output on one
    batch does not change between the lowest and highest level.
    """

    def __init__(
        self,
        levels: Sequence[float] = DEFAULT_LEVELS,
        every_n_epochs: int = 5,
        seed: int = 0,
        tolerance: float = 0.02,
        embed_kwargs: Mapping[str, Any] | None = None,
        embed_fn: EmbedFn | None = None,
        loaders: tuple[DataLoader, DataLoader] | None = None,
        weight_decay: float = 1e-4,
        max_iter: int = 100,
        prefix: str = "noise_probe",
    ) -> None:
        super().__init__()
        levels = [float(t) for t in levels]
        if len(set(levels)) < 3 or len(set(levels)) != len(levels):
            raise ValueError(f"NoiseLevelProbe: levels={levels} must be at least 3 distinct noise levels")
        if not all(0.0 <= t <= 1.0 for t in levels):
            raise ValueError(f"NoiseLevelProbe: levels={levels} must lie in [0, 1] (0 = noise, 1 = data)")
        self.levels = sorted(levels)
        self.settings = ProbeSettings(
            "NoiseLevelProbe", every_n_epochs, embed_kwargs, embed_fn, loaders, prefix, seed, sets=("t",)
        )
        self.tolerance = tolerance
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self._checked = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.settings.setup(trainer, pl_module)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self._check_t_changes_features(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_t_changes_features(trainer, pl_module)

    def _check_t_changes_features(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._checked:
            return
        train_loader, _ = self.settings.splits(trainer)
        first = global_batches(train_loader)[0]
        x, _ = batch_xy(train_loader.collate_fn([train_loader.dataset[i] for i in first]))
        device = module_device(pl_module)
        features = []
        for t in (self.levels[0], self.levels[-1]):
            with evaluating(pl_module), seeded(self.settings.seed, device):
                features.append(self._embed(pl_module, x.to(device), t))
        if torch.allclose(features[0], features[1]):
            raise ValueError(
                f"NoiseLevelProbe: {type(pl_module).__name__}.embed gives the same features at t={self.levels[0]:g} "
                f"and t={self.levels[-1]:g}; its embed ignores `t`, so there is no noise-level curve to probe"
            )
        self._checked = True

    def _embed(self, pl_module: L.LightningModule, x: Tensor, t: float) -> Tensor:
        kwargs = {**self.settings.embed_kwargs, "t": t}
        try:
            return embed_batch(pl_module, x, self.settings.embed_fn, kwargs)
        except TypeError as error:
            raise ValueError(f"NoiseLevelProbe: embed(x, t={t:g}) failed ({error}); embed must accept t=") from error

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.settings.due(trainer):
            return
        loaders = self.settings.splits(trainer)
        accuracies = []
        with progress_shown(self.settings.owner, trainer):
            for t in track(self.levels, len(self.levels), "noise levels"):
                train_feats, train_y, val_feats, val_y = self.settings.features(pl_module, loaders, t=t)
                accuracy = linear_probe_accuracy(
                    train_feats, train_y, val_feats, val_y, weight_decay=self.weight_decay, max_iter=self.max_iter
                )
                accuracies.append(accuracy)
                pl_module.log(self.settings.name(f"top1_t{t:g}"), accuracy, sync_dist=False)
        best = max(range(len(accuracies)), key=lambda i: (accuracies[i], self.levels[i]))
        shape = curve_shape(self.levels, accuracies, self.tolerance)
        pl_module.log(self.settings.name("best_t"), self.levels[best], sync_dist=False)
        pl_module.log(self.settings.name("best_top1"), accuracies[best], sync_dist=False)
        pl_module.log(self.settings.name("unimodal"), float(shape == "unimodal"), sync_dist=False)
        pl_module.log(self.settings.name("monotone"), float(shape == "monotone"), sync_dist=False)
        rank_zero_info(f"NoiseLevelProbe epoch {trainer.current_epoch}: {shape}, best t={self.levels[best]:g}")
        if trainer.is_global_zero:
            show(trainer, self.settings.name("curve"), curve_figure(self.levels, accuracies, shape), "NoiseLevelProbe")
