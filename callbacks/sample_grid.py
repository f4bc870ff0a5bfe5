"""Samples of a generative module shown in TensorBoard: an image grid, or a scatter of vectors.

The module is reached only through ``sample(n, **kw)`` (the ``Samples`` protocol). Every rank draws
the same seeded samples (a sharded model, FSDP, needs every rank in the forward pass) and rank zero
writes them: to TensorBoard, or without a TensorBoard logger as PNG files
under the run folder's ``figures/`` (``callbacks.figures.show``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

from callbacks.features import ValidationEndProbe, check_every_n_epochs, probe_due
from callbacks.figures import show
from callbacks.protocols import ProbeData, Samples

Projection = Tensor | Sequence[Sequence[float]] | str


class SampleGrid(ValidationEndProbe):
    """At validation epoch end, ``pl_module.sample(n, **sample_kwargs)`` shown (``callbacks.figures.show``).

    Images ``B,C,H,W`` in [-1, 1] become one ``make_grid`` image (tag ``{tag}/grid``); vectors ``B,D``
    a scatter (tag ``{tag}/scatter``) of their first two coordinates, or of ``x @ projection`` when a
    ``D x 2`` (or wider: the first two columns are used) ``projection`` is given, as a matrix or as the
    name of a datamodule attribute holding one (``"P"`` for the manifold datamodules, whose data are
    ``x = P z``). With ``show_data`` the first ``n`` points of the probe train split are drawn behind
    the samples. Samples are drawn under ``seed`` so that epochs show the same noise. A grid whose shorter
    side is under ``min_size`` pixels is enlarged by a whole factor (nearest neighbour: each pixel a
    square) until it is not, so that 8 px digits are seen, not an 82 px thumbnail.
    """

    def __init__(
        self,
        n: int = 64,
        every_n_epochs: int = 1,
        sample_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
        projection: Projection | None = None,
        show_data: bool = True,
        tag: str = "samples",
        min_size: int = 256,
    ) -> None:
        if int(n) < 1:
            raise ValueError(f"SampleGrid: n={n} samples must be >= 1")
        if int(min_size) < 1:
            raise ValueError(f"SampleGrid: min_size={min_size} pixels must be >= 1 (1 keeps the grid as drawn)")
        self.n = int(n)
        self.every_n_epochs = check_every_n_epochs(every_n_epochs, "SampleGrid")
        self.sample_kwargs = dict(sample_kwargs or {})
        self.seed = seed
        self.projection = projection
        self.show_data = show_data
        self.tag = tag
        self.min_size = int(min_size)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, Samples):
            raise TypeError(
                f"SampleGrid needs a generative module: {type(pl_module).__name__} has no "
                "`sample(n, **kw) -> Tensor` (the Samples protocol of callbacks/protocols.py); "
                "add one or drop the samples callback"
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not probe_due(trainer, self.every_n_epochs):
            return
        with isolate_rng(), torch.no_grad():
            torch.manual_seed(self.seed)
            samples = pl_module.sample(self.n, **self.sample_kwargs).detach().float().cpu()
        if not trainer.is_global_zero:
            return
        if samples.ndim == 4:
            grid = make_grid((samples.clamp(-1, 1) + 1) / 2, nrow=math.ceil(math.sqrt(len(samples))))
            show(trainer, f"{self.tag}/grid", enlarged(grid, self.min_size), "SampleGrid")
        elif samples.ndim == 2:
            figure = self.scatter(samples, self._data(trainer), self._projection_matrix(trainer))
            show(trainer, f"{self.tag}/scatter", figure, "SampleGrid")
        else:
            raise ValueError(
                "SampleGrid shows images B,C,H,W or vectors B,D; "
                f"sample() returned shape {tuple(samples.shape)}"
            )

    def scatter(self, samples: Tensor, data: Tensor | None, projection: Tensor | None) -> Figure:
        """A figure of samples (and data, in grey) in two coordinates of ``x`` or of ``x @ projection``."""
        figure = Figure(figsize=(4, 4))
        axes = figure.add_subplot()
        if data is not None:
            axes.scatter(*_plane(data, projection), s=4, c="0.7", label="data")
        axes.scatter(*_plane(samples, projection), s=4, c="C0", label="samples")
        axes.set_aspect("equal", adjustable="datalim")
        axes.legend(loc="upper right", fontsize="small")
        figure.tight_layout()
        return figure

    def _projection_matrix(self, trainer: L.Trainer) -> Tensor | None:
        projection = self.projection
        if isinstance(projection, str):
            if not hasattr(trainer.datamodule, projection):
                raise ValueError(
                    f"SampleGrid: projection={projection!r} names no attribute of the datamodule "
                    f"({type(trainer.datamodule).__name__}); "
                    "pass a D x 2 matrix or an existing attribute name"
                )
            projection = getattr(trainer.datamodule, projection)
        return None if projection is None else torch.as_tensor(projection, dtype=torch.float32).cpu()

    def _data(self, trainer: L.Trainer) -> Tensor | None:
        if not (self.show_data and isinstance(trainer.datamodule, ProbeData)):
            return None
        train, _ = trainer.datamodule.probe_dataloaders()
        return next(iter(train))["x"][: self.n].float().cpu()


def enlarged(grid: Tensor, min_size: int) -> Tensor:
    """``grid`` (``C,H,W``) repeated ``k`` times along both axes, the smallest ``k`` with ``k·min(H, W) >= min_size``."""
    factor = max(1, math.ceil(min_size / min(grid.shape[-2:])))
    return grid.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def _plane(x: Tensor, projection: Tensor | None) -> tuple[Tensor, Tensor]:
    if projection is not None:
        if projection.ndim != 2 or projection.shape[0] != x.shape[1] or projection.shape[1] < 2:
            raise ValueError(
                f"SampleGrid: projection of shape {tuple(projection.shape)} "
                f"cannot project vectors of dimension {x.shape[1]}; "
                f"pass a {x.shape[1]} x 2 matrix (its first two columns are used)"
            )
        x = x @ projection[:, :2]
    elif x.shape[1] < 2:
        raise ValueError(f"SampleGrid: vectors of dimension {x.shape[1]} have no two coordinates to scatter")
    return x[:, 0], x[:, 1]
