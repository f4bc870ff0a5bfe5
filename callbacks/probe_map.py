"""A layer x noise-level probe map of a diffusion model's features (DDAE's grid search).

DDAE (Xiang et al., ICCV 2023, Sec. 4.1 and Fig. 3) probes the pooled activation of every block at
every noise level and reports the best cell, with features averaged over several noise draws (Li et
al., NeurIPS 2025, arXiv 2502.05743, Sec. 5: averaging over draws helps). For every block in
``layers`` and every level in ``levels`` (1 = data, 0 = noise) this fits the zoo's linear probe and
kNN probe on ``mean_d embed(x, t=level, layer=block)`` over ``draws`` noise draws, on the probe train
split, and scores them on the probe val split. It works on any module whose ``embed`` takes ``t=`` and
``layer=``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor, nn
from torch.utils.data import DataLoader

from callbacks.features import (
    EmbedFn,
    labeled,
    noise_averaged_features,
)
from callbacks.metrics.knn import knn_accuracy
from callbacks.metrics.linear import linear_probe_accuracy
from callbacks.noise_level_probe import DEFAULT_LEVELS
from callbacks.probe_settings import ProbeSettings
from callbacks.progress import progress_shown, track


@dataclass(frozen=True)
class ProbeMapResult:
    """Top-1 accuracies ``[len(layers), len(levels)]`` of both probes, and the best cell by ``select``."""

    layers: list[int]
    levels: list[float]
    linear: Tensor
    knn: Tensor
    select: str

    @property
    def best(self) -> tuple[int, float]:
        """``(layer, t)`` of the highest ``select`` accuracy; ties go to the cleaner level, then the earlier block."""
        grid = self.linear if self.select == "linear" else self.knn
        cells = [
            (float(grid[i, j]), self.levels[j], -i)
            for i in range(len(self.layers))
            for j in range(len(self.levels))
        ]
        _, t, minus_i = max(cells)
        return self.layers[-minus_i], t

    def at(self, layer: int, t: float) -> dict[str, float]:
        """``{"linear": ..., "knn": ...}`` at one cell."""
        i, j = self.layers.index(layer), self.levels.index(t)
        return {"linear": float(self.linear[i, j]), "knn": float(self.knn[i, j])}


def probe_map(
    module: nn.Module,
    loaders: tuple[DataLoader, DataLoader],
    layers: Sequence[int],
    levels: Sequence[float],
    draws: int = 4,
    seed: int = 0,
    k: int = 20,
    temperature: float = 0.07,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
    select: str = "linear",
    embed_kwargs: Mapping[str, Any] | None = None,
    embed_fn: EmbedFn | None = None,
) -> ProbeMapResult:
    """Linear-probe and kNN top-1 (val split) of noise-averaged features at every ``(layer, level)`` cell
    (inside ``callbacks.progress.progress_shown``, a bar counts the cells)."""
    if select not in ("linear", "knn"):
        raise ValueError(f"select={select!r}: the best cell is chosen by 'linear' or 'knn' accuracy")
    linear = torch.zeros(len(layers), len(levels), dtype=torch.float64)
    knn = torch.zeros_like(linear)
    cells = list(itertools.product(range(len(layers)), range(len(levels))))
    for i, j in track(cells, len(cells), "cells (block x noise level)"):
        kwargs = {**(embed_kwargs or {}), "t": levels[j], "layer": layers[i]}
        cell = probe_cell(module, loaders, draws, kwargs, seed, k, temperature, weight_decay, max_iter, embed_fn)
        linear[i, j], knn[i, j] = cell["linear"], cell["knn"]
    return ProbeMapResult(list(layers), [float(t) for t in levels], linear, knn, select)


def probe_cell(
    module: nn.Module,
    loaders: tuple[DataLoader, DataLoader],
    draws: int,
    embed_kwargs: Mapping[str, Any],
    seed: int = 0,
    k: int = 20,
    temperature: float = 0.07,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
    embed_fn: EmbedFn | None = None,
) -> dict[str, float]:
    """``{"linear": ..., "knn": ...}`` top-1 on the second loader of ``embed(x, **embed_kwargs)`` averaged over
    ``draws`` seeded noise draws, the probes fitted on the first: one cell of the map."""
    train_feats, train_y = noise_averaged_features(module, loaders[0], draws, embed_kwargs, embed_fn, seed)
    labeled(train_feats, train_y, "train", "ProbeMap")
    val_feats, val_y = noise_averaged_features(module, loaders[1], draws, embed_kwargs, embed_fn, seed)
    return {
        "linear": float(linear_probe_accuracy(
            train_feats, train_y, val_feats, val_y, weight_decay=weight_decay, max_iter=max_iter
        )),
        "knn": float(knn_accuracy(train_feats, train_y, val_feats, val_y, k=k, temperature=temperature)),
    }


def map_figure(result: ProbeMapResult) -> Figure:
    """Two heatmaps (linear probe, kNN) of top-1 over block (rows) and noise level (columns), best cell boxed."""
    figure = Figure(
        figsize=(2.2 + 0.55 * len(result.levels) * 2, 1.4 + 0.45 * len(result.layers)), tight_layout=True
    )
    best_layer, best_t = result.best
    for index, (name, grid) in enumerate((("linear probe", result.linear), ("kNN", result.knn))):
        axes = figure.add_subplot(1, 2, index + 1)
        image = axes.imshow(grid.numpy(), origin="lower", aspect="auto", cmap="viridis")
        for i in range(len(result.layers)):
            for j in range(len(result.levels)):
                axes.text(
                    j, i, f"{float(grid[i, j]):.2f}", ha="center", va="center", fontsize=6, color="white"
                )
        i, j = result.layers.index(best_layer), result.levels.index(best_t)
        axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        axes.set_xticks(range(len(result.levels)), [f"{t:g}" for t in result.levels], fontsize=7)
        axes.set_yticks(range(len(result.layers)), [str(layer) for layer in result.layers], fontsize=7)
        axes.set_xlabel("noise level t (0 = noise, 1 = data)")
        axes.set_ylabel("block")
        axes.set_title(f"{name} top-1; best (block {best_layer}, t={best_t:g})", fontsize=8)
        figure.colorbar(image, ax=axes)
    return figure


class ProbeMap(L.Callback):
    """``probe_map`` at validation epoch end: every ``every_n_epochs`` epochs and the last (None: the last only).

    ``layers`` None probes every hidden block the module exposes (``range(module.num_blocks)``).
    Logs ``{prefix}/linear_b{layer}_t{t:g}`` and ``{prefix}/knn_b{layer}_t{t:g}`` per cell,
    ``{prefix}/best_layer``, ``{prefix}/best_t``, ``{prefix}/best_linear_top1`` and
    ``{prefix}/best_knn_top1`` (the best cell by ``select``), the heatmaps as ``{prefix}/map`` to every
    TensorBoard logger and, with ``figure_dir``, as ``{figure_dir}/{prefix}.png`` (rank zero). The
    latest map is kept as ``self.result``. Where the trainer shows its progress bar, the cells and each
    extraction have bars (``callbacks.progress``). Raises a ValueError at setup when ``embed`` does not take
    ``t`` and ``layer``, or when ``layers`` is None and the module has no ``num_blocks``.
    """

    def __init__(
        self,
        levels: Sequence[float] = DEFAULT_LEVELS,
        layers: Sequence[int] | None = None,
        draws: int = 4,
        every_n_epochs: int | None = None,
        seed: int = 0,
        k: int = 20,
        temperature: float = 0.07,
        weight_decay: float = 1e-4,
        max_iter: int = 100,
        select: str = "linear",
        embed_kwargs: Mapping[str, Any] | None = None,
        embed_fn: EmbedFn | None = None,
        loaders: tuple[DataLoader, DataLoader] | None = None,
        figure_dir: str | None = None,
        prefix: str = "probe_map",
    ) -> None:
        super().__init__()
        levels = [float(t) for t in levels]
        if not levels or len(set(levels)) != len(levels) or not all(0.0 <= t <= 1.0 for t in levels):
            raise ValueError(
                f"ProbeMap: levels={levels} must be distinct noise levels in [0, 1] (0 = noise, 1 = data)"
            )
        if layers is not None and (not layers or len(set(layers)) != len(layers)):
            raise ValueError(
                f"ProbeMap: layers={list(layers)} must be distinct block indices (or null for every block)"
            )
        if draws < 1:
            raise ValueError(f"ProbeMap: draws={draws} must be >= 1 noise draws per feature")
        if select not in ("linear", "knn"):
            raise ValueError(f"ProbeMap: select={select!r} must be 'linear' or 'knn'")
        self.levels = sorted(levels)
        self.layers = None if layers is None else [int(layer) for layer in layers]
        self.draws = draws
        self.settings = ProbeSettings(
            "ProbeMap", every_n_epochs, embed_kwargs, embed_fn, loaders, prefix, seed, sets=("t", "layer")
        )
        self.probe = {"k": k, "temperature": temperature, "weight_decay": weight_decay, "max_iter": max_iter}
        self.select = select
        self.figure_dir = figure_dir
        self.result: ProbeMapResult | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.settings.setup(trainer, pl_module)
        self._layers(pl_module)

    def _layers(self, pl_module: L.LightningModule) -> list[int]:
        if self.layers is not None:
            return self.layers
        blocks = getattr(pl_module, "num_blocks", None)
        if not isinstance(blocks, int) or blocks < 1:
            raise ValueError(
                f"ProbeMap: layers=null probes every block, but {type(pl_module).__name__} has no num_blocks; "
                "pass layers=[...] (the block indices its embed takes)"
            )
        return list(range(blocks))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.settings.due(trainer):
            return
        with progress_shown(self.settings.owner, trainer):
            result = probe_map(
                pl_module,
                self.settings.splits(trainer),
                self._layers(pl_module),
                self.levels,
                self.draws,
                self.settings.seed,
                select=self.select,
                embed_kwargs=self.settings.embed_kwargs,
                embed_fn=self.settings.embed_fn,
                **self.probe,
            )
        self.result = result
        for i, layer in enumerate(result.layers):
            for j, t in enumerate(result.levels):
                pl_module.log(
                    f"{self.settings.prefix}/linear_b{layer}_t{t:g}", float(result.linear[i, j]), sync_dist=False
                )
                pl_module.log(f"{self.settings.prefix}/knn_b{layer}_t{t:g}", float(result.knn[i, j]), sync_dist=False)
        layer, t = result.best
        best = result.at(layer, t)
        pl_module.log(f"{self.settings.prefix}/best_layer", float(layer), sync_dist=False)
        pl_module.log(f"{self.settings.prefix}/best_t", t, sync_dist=False)
        pl_module.log(f"{self.settings.prefix}/best_linear_top1", best["linear"], sync_dist=False)
        pl_module.log(f"{self.settings.prefix}/best_knn_top1", best["knn"], sync_dist=False)
        rank_zero_info(f"ProbeMap epoch {trainer.current_epoch}: best block {layer}, t={t:g}, {best}")
        if trainer.is_global_zero:
            figure = map_figure(result)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(
                        f"{self.settings.prefix}/map", figure, trainer.global_step, close=False
                    )
            if self.figure_dir is not None:
                Path(self.figure_dir).mkdir(parents=True, exist_ok=True)
                figure.savefig(Path(self.figure_dir) / f"{self.settings.prefix}.png", dpi=120)
