"""The batch contract every datamodule of the zoo follows.

A batch is a dict: ``x`` (float in [-1, 1]; images ``B,C,H,W``, vectors ``B,D``), ``y`` (long,
``-1`` where unlabeled) and, when the datamodule was asked for views, ``views`` (a list of
augmented tensors of ``x``'s shape). A datamodule tells ``shape`` and ``num_classes`` before any
data is read, and gives ``probe_dataloaders()``: clean, labeled, unaugmented train and val loaders.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from datamodules.views import Transform, single_view, two_views


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
    """In-memory samples: ``x01`` float in [0, 1] with ``y`` long labels (``-1`` = unlabeled)."""

    def __init__(self, x01: Tensor, y: Tensor) -> None:
        if len(x01) != len(y):
            raise ValueError(f"{len(x01)} samples but {len(y)} labels")
        self.x01, self.y = x01, y

    def __len__(self) -> int:
        return len(self.x01)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x01[index], self.y[index]


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
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


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


class PassShuffle(EpochShuffle):
    """``EpochShuffle`` of a ``RepeatedDataset`` that reshuffles each pass over the underlying data.

    Every pass is its own random permutation (a function of ``(seed, epoch)`` alone), so a batch that
    lies inside one pass (every batch when the batch size divides the data) never holds an item twice.
    Under DDP Lightning swaps it for a ``DistributedSampler`` over the repeated dataset, which keeps
    the number of samples per epoch but not the pass boundaries.
    """

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        size = len(self.data_source.dataset)
        for start in range(0, len(self.data_source), size):
            yield from (torch.randperm(size, generator=generator) + start).tolist()


class ZooDataModule(L.LightningDataModule):
    """Base of every datamodule: loaders that yield the batch dict, plus probe loaders.

    Subclasses implement ``_splits()`` returning ``(train, val, test)`` datasets of ``(x01, y)``
    pairs with ``x01`` in [0, 1], and set ``shape`` and ``num_classes`` in ``__init__``.
    ``views`` names a two-view SSL recipe from ``datamodules.views`` (``mocov2`` or ``mocov3``);
    ``augment`` a single-view training transform recipe (``flip`` or none).
    ``train_repeats`` makes one training epoch ``k`` passes over the training split, each in a fresh
    random order, with batches of at most one pass: thousands of steps on a few images (the
    memorization studies) then cost thousands of batches, not thousands of Lightning epochs.
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
    ) -> None:
        super().__init__()
        if train_repeats < 1:
            raise ValueError(f"data.train_repeats={train_repeats}: the passes per training epoch must be >= 1")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.num_workers = num_workers
        self.views = views
        self.augment = augment
        self.seed = seed
        self.n_train = n_train
        self.train_repeats = train_repeats
        self._data: tuple[Dataset, Dataset, Dataset] | None = None

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
        return torch.utils.data.Subset(train, keep.tolist())

    @property
    def splits(self) -> tuple[Dataset, Dataset, Dataset]:
        """The raw ``(train, val, test)`` datasets of ``(x01, y)`` pairs, after ``n_train``."""
        self.setup()
        assert self._data is not None
        return self._data

    def _transforms(self) -> tuple[Transform | None, list[Transform] | None]:
        """The training transforms; unknown recipe names fail here, before any data is read."""
        views = two_views(self.views, self.shape) if self.views else None
        return single_view(self.augment, self.shape), views

    def _train_dataset(self) -> BatchDictDataset:
        single, views = self._transforms()
        return BatchDictDataset(self.splits[0], single, views)

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        # A sampler, not shuffle=True: Lightning reads a `shuffle` argument before the sampler's type.
        shuffler = PassShuffle if isinstance(dataset, RepeatedDataset) else EpochShuffle
        order = {"sampler": shuffler(dataset, self.seed)} if shuffle else {"shuffle": False}
        return DataLoader(
            dataset,
            batch_size=min(batch_size, len(dataset)),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
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
        return self._loader(BatchDictDataset(self.splits[1]), shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(BatchDictDataset(self.splits[2]), shuffle=False, batch_size=self.eval_batch_size)

    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        """Clean, labeled, unaugmented, unshuffled ``(train, val)`` loaders for probes."""
        train, val, _ = self.splits
        return (
            self._loader(BatchDictDataset(train), shuffle=False, batch_size=self.eval_batch_size),
            self._loader(BatchDictDataset(val), shuffle=False, batch_size=self.eval_batch_size),
        )

    def train_tensor(self) -> tuple[Tensor, Tensor]:
        """The whole (subset) training split as ``(x, y)`` tensors in [-1, 1], unaugmented."""
        xs, ys = zip(*(self.splits[0][i] for i in range(len(self.splits[0]))))
        return _to_pm1(torch.stack(xs)), torch.as_tensor(torch.stack([torch.as_tensor(y) for y in ys]))
