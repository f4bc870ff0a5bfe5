"""First-layer weights as images, and how closely the strongest rows copy training images.

Zhang et al. (ICLR 2026, arXiv 2512.20963, Fig. 4): in a ReLU DAE that memorises, the encoder rows
with the largest L2 norm are (up to scale) training images, so each such row's maximum cosine
similarity to the L2-normalised training images is close to 1; a generalising DAE's rows are not.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.utils import make_grid

from callbacks.features import (
    ValidationEndProbe,
    batch_xy,
    check_every_n_epochs,
    gather_objects,
    probe_due,
    probe_loaders,
    shard_batches,
)
from callbacks.figures import show
from callbacks.metrics.weights import max_cosine_to_data, top_norm_rows

WeightFn = Callable[[L.LightningModule], Tensor]
"""A user's accessor of the first-layer weight ``units x input dim``, called as ``weight_fn(module)``."""


def pixel_mean(loader: DataLoader, dim: int) -> Tensor:
    """Per-entry mean (float64, ``dim`` entries) of the loader's flattened ``x``, over every rank's batches."""
    total = torch.zeros(dim, dtype=torch.float64)
    count = 0
    for _, batch in shard_batches(loader):
        x, _ = batch_xy(batch)
        if x[0].numel() != dim:
            raise ValueError(
                f"WeightGrid: weight rows have {dim} entries but data samples {tuple(x.shape[1:])} "
                f"= {x[0].numel()}; pass the first layer acting on the flattened input"
            )
        total += x.double().flatten(1).sum(0)
        count += len(x)
    sums = gather_objects((total, count))
    return sum(part for part, _ in sums) / sum(n for _, n in sums)


def resolve_weight(module: L.LightningModule, weight: str | WeightFn) -> Tensor:
    """The weight ``units x input dim``: ``weight(module)`` or the (dotted) attribute ``weight`` of the module."""
    if callable(weight):
        tensor = weight(module)
    else:
        tensor = module
        for name in weight.split("."):
            if not hasattr(tensor, name):
                raise ValueError(
                    f"WeightGrid: {type(module).__name__} has no attribute `{weight}`; pass weight= the dotted name of "
                    "its first-layer weight (e.g. 'encoder.weight') or a function module -> weight"
                )
            tensor = getattr(tensor, name)
    if not isinstance(tensor, Tensor) or tensor.ndim != 2:
        raise ValueError(
            f"WeightGrid: weight {weight!r} must be a 2-d tensor (units x input dim), got "
            f"{getattr(tensor, 'shape', type(tensor).__name__)}"
        )
    return tensor.detach()


def image_shape(sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``C, H, W`` to draw one weight row as: images keep theirs, ``H, W`` gets one channel, vectors
    ``D`` become a ``1 x 1 x D`` strip."""
    if len(sample_shape) == 1:
        return (1, 1, sample_shape[0])
    if len(sample_shape) == 2:
        return (1, *sample_shape)
    if len(sample_shape) == 3:
        return sample_shape
    raise ValueError(f"WeightGrid draws rows of vector or image data, not samples of shape {sample_shape}")


class WeightGrid(ValidationEndProbe):
    """Shows the ``n_rows`` largest-norm first-layer weight rows as images and scores the top ``top_k``.

    At validation epoch end (every ``every_n_epochs`` epochs and the last), the weight (``weight``: a
    dotted attribute name such as ``"weight"`` or ``"encoder.weight"``, or a function ``module ->
    weight``) is read as ``units x D``; rows are ranked by L2 norm, the first ``n_rows`` are reshaped to
    the data's image shape (that of the probe train split's ``x``; vectors as 1-pixel strips) and logged as one image grid
    ``{prefix}/rows`` (each row scaled to its own range) to every TensorBoard logger (without one, a PNG
    under the run folder's ``figures/``). For the first
    ``top_k`` rows the maximum cosine similarity to the probe train images is logged as
    ``{prefix}/max_cos_<i>`` (``i = 0`` the largest norm) and their mean as ``{prefix}/max_cos_mean``.
    The similarity is maximised over each rank's share of the images and then over ranks, so it does
    not depend on the world size; values are logged with ``sync_dist=False``. Labels are not needed.

    ``center=True`` compares the rows with the centred images ``x - mean`` instead, ``mean`` the
    per-pixel mean of the probe train images: the view of a model that subtracts that mean before its
    first layer (the zoo's DAE with ``center: true``), whose rows live in the centred space. Without
    it a background shared by all images dominates every cosine.
    """

    def __init__(
        self,
        weight: str | WeightFn = "weight",
        n_rows: int = 64,
        top_k: int = 7,
        every_n_epochs: int = 1,
        grid_columns: int = 8,
        loaders: tuple[DataLoader, DataLoader] | None = None,
        prefix: str = "weights",
        center: bool = False,
    ) -> None:
        super().__init__()
        if n_rows < 1 or top_k < 1:
            raise ValueError(f"WeightGrid: n_rows={n_rows} and top_k={top_k} must be >= 1")
        self.weight = weight
        self.n_rows = n_rows
        self.top_k = top_k
        self.every_n_epochs = check_every_n_epochs(every_n_epochs, "WeightGrid")
        self.grid_columns = grid_columns
        self.loaders = loaders
        self.prefix = prefix
        self.center = center

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        weight = resolve_weight(pl_module, self.weight)
        if self.top_k > weight.shape[0]:
            raise ValueError(f"WeightGrid: top_k={self.top_k} but the weight has only {weight.shape[0]} rows")
        probe_loaders(trainer, self.loaders, "WeightGrid")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not probe_due(trainer, self.every_n_epochs):
            return
        train_loader, _ = probe_loaders(trainer, self.loaders, "WeightGrid")
        weight = resolve_weight(pl_module, self.weight).cpu()
        order = top_norm_rows(weight, min(max(self.n_rows, self.top_k), weight.shape[0]))
        mean = pixel_mean(train_loader, weight.shape[1]) if self.center else None
        similarity = self._max_cosine(weight[order[: self.top_k]], train_loader, mean)
        for i, value in enumerate(similarity.tolist()):
            pl_module.log(f"{self.prefix}/max_cos_{i}", value, sync_dist=False)
        pl_module.log(f"{self.prefix}/max_cos_mean", similarity.mean().item(), sync_dist=False)
        if trainer.is_global_zero:
            x, _ = batch_xy(train_loader.collate_fn([train_loader.dataset[0]]))
            shown = order[: self.n_rows]
            images = weight[shown].reshape(len(shown), *image_shape(tuple(x.shape[1:])))
            grid = make_grid(images.float(), nrow=self.grid_columns, normalize=True, scale_each=True, pad_value=1.0)
            show(trainer, f"{self.prefix}/rows", grid, "WeightGrid")

    @staticmethod
    def _max_cosine(rows: Tensor, loader: DataLoader, mean: Tensor | None = None) -> Tensor:
        """Each row's max cosine to the loader's images (less ``mean``, if given): over this rank's
        batches, then over ranks."""
        best = torch.full((len(rows),), -1.0, dtype=torch.float64)
        for _, batch in shard_batches(loader):
            x, _ = batch_xy(batch)
            if x[0].numel() != rows.shape[1]:
                raise ValueError(
                    f"WeightGrid: weight rows have {rows.shape[1]} entries but data samples {tuple(x.shape[1:])} "
                    f"= {x[0].numel()}; pass the first layer acting on the flattened input"
                )
            flat = x.double().flatten(1)
            best = torch.maximum(best, max_cosine_to_data(rows, flat if mean is None else flat - mean))
        return torch.stack(gather_objects(best)).max(dim=0).values
