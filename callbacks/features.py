"""Features of a whole dataset, computed once across all ranks, plus the checks every probe shares.

The dataset is cut into the same global batches whatever the world size (consecutive chunks of the
loader's ``batch_size``, in dataset order); rank ``r`` computes batches ``r, r + world, ...``, and
the results are gathered and put back in dataset order. Each batch can be computed under its own
seed (``seed + batch index``), so a module that draws noise inside ``embed`` (a diffusion model at
noise level ``t``) gives the same features on 1 or 8 processes. With world size 1 it is a plain loop.
Under DDP every rank must call these functions together (they end in a collective gather).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from callbacks.progress import track
from callbacks.protocols import Embeds, ProbeData

EmbedFn = Callable[..., Tensor]
"""A user's feature function, called as ``embed_fn(module, x, **embed_kwargs) -> Tensor[B, F]``."""


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` outside distributed runs."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def global_batches(loader: DataLoader) -> list[list[int]]:
    """The dataset's indices cut into consecutive batches of the loader's ``batch_size``.

    The loader's sampler is not used: probes read the dataset in order, so every rank and every world
    size sees the same batches.
    """
    if isinstance(loader.dataset, IterableDataset):
        raise ValueError(
            f"feature extraction needs a map-style dataset (with __len__ and __getitem__), got the iterable "
            f"{type(loader.dataset).__name__}; pass probe loaders over a map-style dataset"
        )
    if loader.batch_size is None:
        raise ValueError(
            "feature extraction needs a loader built with batch_size=...; this one uses a custom batch_sampler"
        )
    n, size = len(loader.dataset), loader.batch_size
    if n == 0:
        raise ValueError("feature extraction got an empty dataset; the probe loaders must hold samples")
    return [list(range(start, min(start + size, n))) for start in range(0, n, size)]


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Torch's CPU RNG (and ``device``'s, if CUDA) seeded with ``seed`` inside, restored after; no-op for None."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def shard_batches(
    loader: DataLoader, seed: int | None = None, device: torch.device | str = "cpu"
) -> Iterator[tuple[list[int], Any]]:
    """This rank's share of the global batches (``r, r + world, ...``) as ``(dataset indices, batch)``.

    With ``seed``, each batch is loaded, and the loop body run, under torch's RNG seeded with
    ``seed + batch index`` (random augmentations repeat too when the loader has ``num_workers=0``).
    """
    rank, world_size = world()
    batches = global_batches(loader)
    mine = list(range(rank, len(batches), world_size))
    shard = DataLoader(
        loader.dataset,
        batch_sampler=[batches[b] for b in mine],
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
    )
    iterator = iter(shard)
    for b in mine:
        with seeded(None if seed is None else seed + b, torch.device(device)):
            yield batches[b], next(iterator)


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``all_gather_object``: any picklable, any size); ``[obj]`` alone."""
    _, world_size = world()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def map_dataset(
    loader: DataLoader,
    batch_fn: Callable[[dict], Mapping[str, Tensor]],
    seed: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Apply ``batch_fn`` (batch dict -> named per-sample tensors ``B, ...``) to the whole dataset.

    Batches are sharded over ranks (``shard_batches``, seeded per batch when ``seed`` is given), the
    results gathered (``gather_objects`` handles uneven and empty shards) and returned on the CPU in
    dataset order, identical on every rank. Inside ``callbacks.progress.progress_shown`` a bar counts
    this rank's batches.
    """
    indices: list[int] = []
    local: dict[str, list[Tensor]] = {}
    rank, world_size = world()
    total = len(range(rank, len(global_batches(loader)), world_size))
    for batch_indices, batch in track(shard_batches(loader, seed, device), total, "features"):
        for key, value in batch_fn(batch).items():
            local.setdefault(key, []).append(value.detach().cpu())
        indices.extend(batch_indices)
    parts = gather_objects((torch.tensor(indices, dtype=torch.long), {k: torch.cat(v) for k, v in local.items()}))
    order = torch.cat([part_indices for part_indices, _ in parts]).argsort()
    keys = next((part.keys() for _, part in parts if part), ())
    return {key: torch.cat([part[key] for _, part in parts if part])[order] for key in keys}


def module_device(module: nn.Module) -> torch.device:
    """Where a module's parameters (or buffers) live; the CPU for a module without any."""
    if isinstance(module, L.LightningModule):
        return module.device
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the duration, the module's previous train/eval mode after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def embed_batch(
    module: nn.Module, x: Tensor, embed_fn: EmbedFn | None = None, embed_kwargs: Mapping[str, Any] | None = None
) -> Tensor:
    """Features ``B, F`` of ``x`` through ``embed_fn(module, x, **kw)`` or ``module.embed(x, **kw)``."""
    kwargs = dict(embed_kwargs or {})
    features = embed_fn(module, x, **kwargs) if embed_fn is not None else module.embed(x, **kwargs)
    if features.ndim != 2 or features.shape[0] != x.shape[0]:
        raise ValueError(
            f"embed returned shape {tuple(features.shape)} for a batch of {x.shape[0]}; probes need pooled "
            "features B,F: pool or flatten inside embed (or embed_fn)"
        )
    return features


def extract_features(
    module: nn.Module,
    loader: DataLoader,
    embed_fn: EmbedFn | None = None,
    embed_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``(features N,F float, labels N long)`` of a loader's whole dataset of batch dicts ``x``, ``y``.

    The module runs in eval mode under ``torch.no_grad`` (its mode is restored after); the work is
    sharded over ranks and gathered (see ``map_dataset``), so every rank gets the same result.
    """
    require_embed(module, embed_fn, "extract_features")
    device = module_device(module)

    def batch_fn(batch: dict) -> dict[str, Tensor]:
        x, y = batch_xy(batch)
        return {"features": embed_batch(module, x.to(device), embed_fn, embed_kwargs), "y": y}

    with evaluating(module):
        out = map_dataset(loader, batch_fn, seed=seed, device=device)
    return out["features"], out["y"]


def extract_view_pairs(
    module: nn.Module,
    loader: DataLoader,
    embed_fn: EmbedFn | None = None,
    embed_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Features ``(N,F, N,F)`` of the first two entries of each batch's ``views`` (positive pairs)."""
    require_embed(module, embed_fn, "extract_view_pairs")
    device = module_device(module)

    def batch_fn(batch: dict) -> dict[str, Tensor]:
        views = batch.get("views") if isinstance(batch, Mapping) else None
        if views is None or len(views) < 2:
            raise ValueError("alignment needs batches with at least two `views`; pass a loader of two-view batches")
        return {view: embed_batch(module, views[i].to(device), embed_fn, embed_kwargs) for i, view in enumerate("ab")}

    with evaluating(module):
        out = map_dataset(loader, batch_fn, seed=seed, device=device)
    return out["a"], out["b"]


def batch_xy(batch: Any) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of a batch dict with ``x`` and ``y`` or of an ``(x, y, ...)`` tuple or list, or a ValueError
    naming both forms."""
    if isinstance(batch, Mapping) and "x" in batch and "y" in batch:
        return batch["x"], batch["y"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and all(isinstance(b, Tensor) for b in batch[:2]):
        return batch[0], batch[1]
    raise ValueError(
        "probes read labeled batches: dicts with `x` and `y` or (x, y) tuples (y = -1 where unlabeled), "
        f"got {type(batch).__name__}"
    )


def validates(trainer: L.Trainer, module: nn.Module) -> bool:
    """Whether fitting runs a validation loop: the module has ``validation_step`` and batches are not
    limited to 0."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    return is_overridden("validation_step", module, L.LightningModule) and trainer.limit_val_batches != 0


class ValidationEndProbe(L.Callback):
    """A callback whose work (``on_validation_epoch_end``) moves to train epoch end, said once on rank
    zero, when the fit runs no validation loop; otherwise a module without validation would never be probed."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._at_train_end = not validates(trainer, pl_module)
        if self._at_train_end and trainer.is_global_zero:
            print(
                f"{type(self).__name__}: this fit runs no validation (no validation_step, or limit_val_batches=0), "
                "so it runs at train epoch end instead",
                file=sys.stderr,
                flush=True,
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(self, "_at_train_end", False):
            self.on_validation_epoch_end(trainer, pl_module)


def require_embed(module: nn.Module, embed_fn: EmbedFn | None, owner: str) -> None:
    """Raise unless features can be had: an ``embed_fn`` or a module following the ``Embeds`` protocol."""
    if embed_fn is None and not isinstance(module, Embeds):
        raise ValueError(
            f"{owner} needs features: {type(module).__name__} has no `embed(x, **kw) -> Tensor[B, F]` method "
            "(the Embeds protocol of callbacks/protocols.py); add one, or pass embed_fn=(module, x, **kw) -> features"
        )


def accepts_keyword(module: nn.Module, name: str) -> bool:
    """Whether ``module.embed`` accepts the keyword ``name`` (explicitly or through ``**kw``)."""
    parameters = inspect.signature(module.embed).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def probe_loaders(
    trainer: L.Trainer, loaders: tuple[DataLoader, DataLoader] | None, owner: str
) -> tuple[DataLoader, DataLoader]:
    """The probe ``(train, val)`` loaders: those passed to the callback, else the datamodule's."""
    if loaders is not None:
        if len(loaders) != 2:
            raise ValueError(f"{owner}: loaders must be a (train, val) pair, got {len(loaders)} loaders")
        return loaders[0], loaders[1]
    datamodule = trainer.datamodule
    if not isinstance(datamodule, ProbeData):
        raise ValueError(
            f"{owner} needs probe data: the datamodule ({type(datamodule).__name__}) has no probe_dataloaders() "
            "returning clean labeled (train, val) loaders (the ProbeData protocol of callbacks/protocols.py); "
            "add one, or pass loaders=(train_loader, val_loader) to the callback"
        )
    return datamodule.probe_dataloaders()


def labeled(features: Tensor, labels: Tensor, split: str, owner: str) -> tuple[Tensor, Tensor]:
    """The labeled rows (``y >= 0``); a ValueError when the split has none."""
    keep = labels >= 0
    if not bool(keep.any()):
        raise ValueError(
            f"{owner} needs labels: every label of the probe {split} split is -1 (unlabeled); "
            "give the probe loaders labeled data"
        )
    return features[keep], labels[keep]


def probe_due(trainer: L.Trainer, every_n_epochs: int | None) -> bool:
    """Whether a probe runs at this validation epoch end: every ``every_n_epochs``-th and the last epoch
    (``None``: the last epoch only, and ``trainer.validate``).

    Never during the sanity check. ``trainer.validate`` runs at the current epoch's count.
    """
    if trainer.sanity_checking:
        return False
    epoch = trainer.current_epoch + 1
    last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch == trainer.max_epochs
    if every_n_epochs is None:
        return last or trainer.state.fn == "validate"
    return epoch % every_n_epochs == 0 or last


def check_every_n_epochs(every_n_epochs: int | None, owner: str) -> int | None:
    """``every_n_epochs`` as a positive int (or None: the last epoch only), or a ValueError naming the setting."""
    if every_n_epochs is None:
        return None
    if int(every_n_epochs) < 1:
        raise ValueError(f"{owner}: every_n_epochs={every_n_epochs} must be >= 1")
    return int(every_n_epochs)


def probe_split_features(
    module: nn.Module,
    loaders: tuple[DataLoader, DataLoader],
    owner: str,
    embed_fn: EmbedFn | None = None,
    embed_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(train features, train labels, val features, val labels)`` of the probe loaders, all ranks.

    Raises before the val split is read when the train split has no labels.
    """
    train_feats, train_y = extract_features(module, loaders[0], embed_fn, embed_kwargs, seed)
    labeled(train_feats, train_y, "train", owner)
    val_feats, val_y = extract_features(module, loaders[1], embed_fn, embed_kwargs, seed)
    return train_feats, train_y, val_feats, val_y


def noise_averaged_features(
    module: nn.Module,
    loader: DataLoader,
    draws: int,
    embed_kwargs: Mapping[str, Any],
    embed_fn: EmbedFn | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """``(features N,F, labels N)``: ``embed(x, **embed_kwargs)`` averaged over ``draws`` seeded noise draws.

    Every draw is a full ``extract_features`` pass (sharded and gathered across ranks) under its own
    seeds, so the result does not depend on the world size.
    """
    if draws < 1:
        raise ValueError(f"draws={draws}: the noise draws averaged per feature must be >= 1")
    total, labels = None, None
    for draw in range(draws):
        features, labels = extract_features(module, loader, embed_fn, embed_kwargs, seed + draw * DRAW_STRIDE)
        total = features.double() if total is None else total + features.double()
    return total / draws, labels


DRAW_STRIDE = 100_003
"""Seed offset between noise draws: draw ``d`` of batch ``b`` is seeded ``seed + d * DRAW_STRIDE + b``."""
