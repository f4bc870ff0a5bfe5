"""The batch contract every datamodule of the zoo follows.

A batch is a dict: ``x`` (float in [-1, 1]; images ``B,C,H,W``, vectors ``B,D``), ``y`` (long,
``-1`` where unlabeled) and, when the datamodule was asked for views, ``views`` (a list of
augmented tensors of ``x``'s shape). A datamodule tells ``shape`` and ``num_classes`` before any
data is read, and gives ``probe_dataloaders()``: clean, labeled, unaugmented train and val loaders.

Two data paths serve the same batches in the same order. Splits held in memory (``TensorSamples``:
digits, manifold, MNIST, Fashion-MNIST, CIFAR-10) are served a batch at a time: the loader's batch
of indices goes to ``TensorBatchDataset.__getitems__``, which indexes the split's tensors once and
augments the whole batch with the batched recipes (``datamodules.batched_views``). When the trainer
runs on an accelerator the split's tensors are moved there when the loaders are built, so each batch
is one device-side index and its views are drawn on the device; Lightning's transfer of the batch is
then a no-op. Other splits (image folders) go item by item through ``BatchDictDataset`` with the
per-image torchvision transforms, in a DataLoader with workers; ``batched=False`` sends in-memory
splits down that path too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
    default_collate,
)

from datamodules.batched_views import BatchedView
from datamodules.views import Transform, batched_single_view, batched_two_views, single_view, two_views


class BatchDictDataset(Dataset):
    """Wraps samples ``(x01, y)`` with ``x01`` in [0, 1] into the zoo's dict items.

    ``transform`` is applied to ``x`` (augmentation of the single view), ``views`` is a list of
    transforms, one per SSL view. Every output is mapped to [-1, 1].
    """

    def __init__(
        self,
        samples: Dataset | Sequence,
        transform: Transform | None = None,
        views: Sequence[Transform] | None = None,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.views = list(views) if views else []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        x01, y = self.samples[index]
        item = {
            "x": _to_pm1(self.transform(x01) if self.transform else x01),
            "y": torch.as_tensor(y, dtype=torch.long),
        }
        if self.views:
            item["views"] = [_to_pm1(view(x01)) for view in self.views]
        return item


def _to_pm1(x01: Tensor) -> Tensor:
    return x01.float() * 2 - 1


class TensorSamples(Dataset):
    """In-memory samples: ``x01`` float in [0, 1] with ``y`` long labels (``-1`` = unlabeled).

    ``rows(index)`` gives many samples at once (``index`` a long tensor), ``to(device)`` and
    ``subset(keep)`` copies on another device or of some rows. Subclasses may store ``x`` in another
    form and override ``unit`` (how stored rows become floats in [0, 1]).
    """

    def __init__(self, x01: Tensor, y: Tensor) -> None:
        if len(x01) != len(y):
            raise ValueError(f"{len(x01)} samples but {len(y)} labels")
        self.x, self.y = x01, torch.as_tensor(y, dtype=torch.long)

    def unit(self, x: Tensor) -> Tensor:
        """Stored rows as floats in [0, 1]."""
        return x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.unit(self.x[index]), self.y[index]

    def rows(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Samples ``index`` (long, on this split's device) as ``(x01, y)`` batches: one gather."""
        return self.unit(self.x[index]), self.y[index]

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> TensorSamples:
        """This split with its tensors on ``device``."""
        return self._with(self.x.to(device), self.y.to(device))

    def subset(self, keep: Tensor) -> TensorSamples:
        """Rows ``keep``, in that order (item ``i`` is this split's item ``keep[i]``)."""
        return self._with(self.x[keep], self.y[keep])

    def _with(self, x: Tensor, y: Tensor) -> TensorSamples:
        clone = copy.copy(self)
        clone.x, clone.y = x, y
        return clone


class TensorBatchDataset(Dataset):
    """A ``TensorSamples`` split served as whole batch dicts: ``__getitems__(indices)`` (what the
    DataLoader calls with each batch of its sampler's indices) gathers the rows in one index on the
    split's device and applies the batched ``transform`` to ``x`` and each of ``views`` to the clean
    batch; every output is mapped to [-1, 1]. Item ``i`` alone is the batch ``[i]`` unbatched.
    Use it with ``collate_fn=collate_batch``.
    """

    def __init__(
        self,
        samples: TensorSamples,
        transform: BatchedView | None = None,
        views: Sequence[BatchedView] | None = None,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.views = list(views) if views else []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitems__(self, indices: Sequence[int] | Tensor) -> dict:
        index = indices if isinstance(indices, Tensor) else torch.as_tensor(indices, dtype=torch.long)
        if index.device != self.samples.device:
            index = index.to(self.samples.device, non_blocking=True)
        x01, y = self.samples.rows(index)
        batch = {"x": _to_pm1(self.transform(x01) if self.transform else x01), "y": y}
        if self.views:
            batch["views"] = [_to_pm1(view(x01)) for view in self.views]
        return batch

    def __getitem__(self, index: int) -> dict:
        batch = self.__getitems__([index])
        item = {"x": batch["x"][0], "y": batch["y"][0]}
        if self.views:
            item["views"] = [view[0] for view in batch["views"]]
        return item


def collate_batch(data: dict | list) -> dict:
    """A batch dict from ``__getitems__`` as it is; a list of item dicts collated by ``default_collate``."""
    return data if isinstance(data, Mapping) else default_collate(data)


class TensorBatchLoader(DataLoader):
    """The DataLoader of a (repeated) ``TensorBatchDataset``. Without workers it skips the per-batch
    machinery of ``DataLoader.__iter__``: the epoch's order (``EpochShuffle``/``PassShuffle``, or
    sequential) is one tensor, moved once to the data's device and cut into the batches the batch
    sampler would give, each passed to ``__getitems__``; any other sampler (the
    ``DistributedSampler`` Lightning puts in under DDP, rebuilding this class) gives its index lists.
    With workers it is a plain DataLoader.
    """

    def __iter__(self) -> Iterator[dict]:
        if self.num_workers > 0:
            return super().__iter__()
        return self._batches()

    def _batches(self) -> Iterator[dict]:
        batches = self.batch_sampler
        order = _order(batches.sampler) if type(batches) is BatchSampler else None
        if order is not None:
            batches = order.to(_device_of(self.dataset)).split(batches.batch_size)
            if self.drop_last and len(batches[-1]) < self.batch_sampler.batch_size:
                batches = batches[:-1]
        for index in batches:
            yield self.dataset.__getitems__(index)


def _order(sampler: Sampler) -> Tensor | None:
    """A whole epoch's order as a tensor, for the samplers that have one."""
    if isinstance(sampler, EpochShuffle):
        return sampler.permutation()
    if type(sampler) is SequentialSampler:
        return torch.arange(len(sampler.data_source))
    return None


class EpochShuffle(RandomSampler):
    """A random order of the dataset that is a function of ``(seed, epoch)`` alone.

    Lightning calls ``set_epoch`` at the start of every training epoch, so a run resumed from a
    checkpoint sees the same batches as one that never stopped (a plain ``RandomSampler`` draws its
    order from the global RNG). Under DDP Lightning swaps it, being a ``RandomSampler``, for a
    ``DistributedSampler`` with the same property. The permutation's generator is seeded with
    ``seed * 1000003 + epoch``, so neighbouring seeds do not share orders shifted by one epoch.
    """

    def __init__(self, data_source: Dataset, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order ``__iter__`` yields next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        yield from self.permutation().tolist()

    def permutation(self) -> Tensor:
        """This epoch's order as one long tensor."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.data_source), generator=generator)


class RepeatedDataset(Dataset):
    """``dataset`` ``repeats`` times over: index ``i`` is item ``i % len(dataset)``."""

    def __init__(self, dataset: Dataset, repeats: int) -> None:
        if repeats < 1:
            raise ValueError(f"repeats={repeats} must be >= 1")
        self.dataset = dataset
        self.repeats = repeats

    def __len__(self) -> int:
        return self.repeats * len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[index % len(self.dataset)]

    def __getitems__(self, indices: Sequence[int] | Tensor) -> dict | list:
        """The underlying batch of ``indices`` modulo its length: one batch dict where it serves
        batches, else the list of its items."""
        size = len(self.dataset)
        if callable(getattr(self.dataset, "__getitems__", None)):
            return self.dataset.__getitems__(torch.as_tensor(indices) % size)
        return [self.dataset[index % size] for index in indices]


class PassShuffle(EpochShuffle):
    """``EpochShuffle`` of a ``RepeatedDataset`` that reshuffles each pass over the underlying data.

    Every pass is its own random permutation (a function of ``(seed, epoch)`` alone), so a batch that
    lies inside one pass (every batch when the batch size divides the data) never holds an item twice.
    Under DDP Lightning swaps it for a ``DistributedSampler`` over the repeated dataset, which keeps
    the number of samples per epoch but not the pass boundaries.
    """

    def permutation(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        size = len(self.data_source.dataset)
        passes = range(0, len(self.data_source), size)
        return torch.cat([torch.randperm(size, generator=generator) + start for start in passes])


class ZooDataModule(L.LightningDataModule):
    """Base of every datamodule: loaders that yield the batch dict, plus probe loaders.

    Subclasses implement ``_splits()`` returning ``(train, val, test)`` datasets of ``(x01, y)``
    pairs with ``x01`` in [0, 1], and set ``shape`` and ``num_classes`` in ``__init__``.
    ``views`` names a two-view SSL recipe from ``datamodules.views`` (``mocov2`` or ``mocov3``), ``crop_min``
    replaces its smallest crop scale;
    ``augment`` a single-view training transform recipe (``flip`` or none).
    ``train_repeats`` makes one training epoch ``k`` passes over the training split, each in a fresh
    random order, with batches of at most one pass: thousands of steps on a few images (the
    memorization studies) then cost thousands of batches, not thousands of Lightning epochs.
    ``batched`` (default) serves in-memory splits a batch at a time, on the trainer's device, with
    batched augmentation; ``batched=False`` serves them item by item like an image folder.
    ``probe_size`` caps what ``probe_dataloaders`` serve to a seeded random subset of that many images of
    each split: the probe callbacks on a large set (a layer x noise-level map of 60,000 images is hours).
    """

    shape: tuple[int, ...]
    num_classes: int

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        views: str | None = None,
        augment: str | None = None,
        seed: int = 0,
        n_train: int | None = None,
        eval_batch_size: int | None = None,
        train_repeats: int = 1,
        batched: bool = True,
        probe_size: int | None = None,
        crop_min: float | None = None,
    ) -> None:
        super().__init__()
        if train_repeats < 1:
            raise ValueError(f"data.train_repeats={train_repeats}: the passes per training epoch must be >= 1")
        if probe_size is not None and probe_size < 1:
            raise ValueError(f"data.probe_size={probe_size}: give the images per probe split (>= 1) or null for all")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.num_workers = num_workers
        self.views = views
        self.augment = augment
        self.seed = seed
        self.n_train = n_train
        self.train_repeats = train_repeats
        self.batched = batched
        self.probe_size = probe_size
        self.crop_min = crop_min
        self._data: tuple[Dataset, Dataset, Dataset] | None = None
        self._moved: tuple[torch.device, tuple[Dataset, ...]] | None = None

    def _splits(self) -> tuple[Dataset, Dataset, Dataset]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._data is None:
            self._transforms()
            train, val, test = self._splits()
            self._data = (self._subset(train), val, test)

    def _subset(self, train: Dataset) -> Dataset:
        if self.n_train is None:
            return train
        if not 1 <= self.n_train <= len(train):
            raise ValueError(
                f"n_train={self.n_train} but {type(self).__name__} has {len(train)} training samples; "
                f"set data.n_train to a value in [1, {len(train)}] or null for all of them"
            )
        generator = torch.Generator().manual_seed(self.seed)
        keep = torch.randperm(len(train), generator=generator)[: self.n_train]
        return train.subset(keep) if isinstance(train, TensorSamples) else Subset(train, keep.tolist())

    @property
    def splits(self) -> tuple[Dataset, Dataset, Dataset]:
        """The raw ``(train, val, test)`` datasets of ``(x01, y)`` pairs, after ``n_train``."""
        self.setup()
        assert self._data is not None
        return self._data

    def _transforms(self) -> tuple[Transform | None, list[Transform] | None]:
        """The training transforms; unknown recipe names fail here, before any data is read."""
        views = two_views(self.views, self.shape, self.crop_min) if self.views else None
        return single_view(self.augment, self.shape), views

    def _serves_batches(self, split: Dataset) -> bool:
        return self.batched and isinstance(split, TensorSamples)

    def _data_device(self) -> torch.device:
        """Where the batches are built: the trainer's device once a trainer holds this datamodule."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _served_split(self, index: int) -> Dataset:
        """Split ``index`` of ``splits``, moved (once) to the trainer's accelerator if it serves batches."""
        split, device = self.splits[index], self._data_device()
        if not self._serves_batches(split) or device.type == "cpu":
            return split
        if self._moved is None or self._moved[0] != device:
            self._moved = (device, tuple(part.to(device) for part in self.splits))
        return self._moved[1][index]

    def _dataset(self, split: Dataset, augmented: bool) -> Dataset:
        """``split`` as batch dicts: whole batches of an in-memory split, else item by item."""
        if self._serves_batches(split):
            views = batched_two_views(self.views, self.shape, self.crop_min) if augmented and self.views else None
            single = batched_single_view(self.augment, self.shape) if augmented else None
            return TensorBatchDataset(split, single, views)
        single, views = self._transforms() if augmented else (None, None)
        return BatchDictDataset(split, single, views)

    def _train_dataset(self) -> Dataset:
        return self._dataset(self._served_split(0), augmented=True)

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        # A sampler, not shuffle=True: Lightning reads a `shuffle` argument before the sampler's type.
        shuffler = PassShuffle if isinstance(dataset, RepeatedDataset) else EpochShuffle
        order = {"sampler": shuffler(dataset, self.seed)} if shuffle else {"shuffle": False}
        on_accelerator = _device_of(dataset).type != "cpu"
        loader = TensorBatchLoader if _serves_tensor_batches(dataset) else DataLoader
        return loader(
            dataset,
            batch_size=min(batch_size, len(dataset)),
            # Workers cannot build batches from tensors on an accelerator; there one index is the batch.
            num_workers=0 if on_accelerator else self.num_workers,
            persistent_workers=self.num_workers > 0 and not on_accelerator,
            drop_last=False,
            collate_fn=collate_batch,
            # The loader's own generator for its workers' base seed: starting an epoch's iterator then
            # draws nothing from the global RNG, which a resumed run restores at the epoch's start.
            generator=torch.Generator().manual_seed(self.seed),
            **order,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._train_dataset()
        if self.train_repeats == 1:
            return self._loader(dataset, shuffle=True, batch_size=self.batch_size)
        return self._loader(
            RepeatedDataset(dataset, self.train_repeats), shuffle=True, batch_size=min(self.batch_size, len(dataset))
        )

    def val_dataloader(self) -> DataLoader:
        dataset = self._dataset(self._served_split(1), augmented=False)
        return self._loader(dataset, shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        dataset = self._dataset(self._served_split(2), augmented=False)
        return self._loader(dataset, shuffle=False, batch_size=self.eval_batch_size)

    def clean_train_dataloader(self, size: int | None = None) -> DataLoader:
        """The training split, unaugmented and in order, on the host (a latent space's statistics): all of it, or a
        seeded subset of ``size`` images."""
        split = self._seeded_subset(self.splits[0], size)
        return self._loader(self._dataset(split, augmented=False), shuffle=False, batch_size=self.eval_batch_size)

    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        """Clean, labeled, unaugmented, unshuffled ``(train, val)`` loaders for probes, on the host (at most
        ``probe_size`` images of each)."""
        train, val = (self._seeded_subset(split, self.probe_size) for split in self.splits[:2])
        return (
            self._loader(self._dataset(train, augmented=False), shuffle=False, batch_size=self.eval_batch_size),
            self._loader(self._dataset(val, augmented=False), shuffle=False, batch_size=self.eval_batch_size),
        )

    def _seeded_subset(self, split: Dataset, size: int | None) -> Dataset:
        """``split``, or a seeded random subset of ``size`` of its items in their order."""
        if size is None or size >= len(split):
            return split
        generator = torch.Generator().manual_seed(self.seed)
        keep = torch.randperm(len(split), generator=generator)[:size].sort().values
        return split.subset(keep) if isinstance(split, TensorSamples) else Subset(split, keep.tolist())

    def train_tensor(self) -> tuple[Tensor, Tensor]:
        """The whole (subset) training split as ``(x, y)`` tensors in [-1, 1], unaugmented, on the host."""
        train = self.splits[0]
        if isinstance(train, TensorSamples):
            x01, y = train.rows(torch.arange(len(train)))
            return _to_pm1(x01), y
        xs, ys = zip(*(train[i] for i in range(len(train))))
        return _to_pm1(torch.stack(xs)), torch.as_tensor(torch.stack([torch.as_tensor(y) for y in ys]))


def _serves_tensor_batches(dataset: Dataset) -> bool:
    inner = dataset.dataset if isinstance(dataset, RepeatedDataset) else dataset
    return isinstance(inner, TensorBatchDataset)


def _device_of(dataset: Dataset) -> torch.device:
    """The device of the tensors behind a (repeated) ``TensorBatchDataset``; the CPU for any other."""
    inner = dataset.dataset if isinstance(dataset, RepeatedDataset) else dataset
    return inner.samples.device if isinstance(inner, TensorBatchDataset) else torch.device("cpu")
