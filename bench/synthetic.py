"""Random images of a recipe's shape: its training step timed where its dataset is not (a lent GPU machine).

``RandomImages`` holds ``batches`` fixed batches of ``shape`` on the host (pinned where a GPU is there, as a real
loader's) and serves them over and over; ``views=True`` adds the two views MoCo reads (the augmentation's cost
is not in the figure). It answers what the zoo asks of a datamodule: ``shape``, ``num_classes``,
``train_dataloader`` and ``probe_dataloaders``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class FixedBatches(Dataset):
    """``batches`` ready batches; item ``i`` is batch ``i``."""

    def __init__(self, shape: Sequence[int], num_classes: int, batch_size: int, batches: int, views: bool) -> None:
        generator = torch.Generator().manual_seed(0)
        pin = torch.cuda.is_available()
        self.items = []
        for _ in range(batches):
            x = torch.rand(batch_size, *shape, generator=generator) * 2 - 1
            batch = {"x": x, "y": torch.randint(0, num_classes, (batch_size,), generator=generator)}
            if views:
                batch["views"] = [x, x.flip(-1)]
            self.items.append({key: pinned(value, pin) for key, value in batch.items()})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def pinned(value: torch.Tensor | list, pin: bool) -> torch.Tensor | list:
    if isinstance(value, list):
        return [pinned(item, pin) for item in value]
    return value.pin_memory() if pin else value


class InOrder(Sampler[int]):
    """The batches in order, every epoch (``set_epoch`` as the zoo's own samplers have)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.length))

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reshuffle."""


class RandomImages(L.LightningDataModule):
    """``batches`` fixed random batches of ``batch_size`` images of ``shape`` in [-1, 1] with labels below ``num_classes``."""

    def __init__(
        self, shape: Sequence[int], num_classes: int, batch_size: int, views: bool = False, batches: int = 8
    ) -> None:
        super().__init__()
        self.shape, self.num_classes, self.batch_size = tuple(shape), int(num_classes), int(batch_size)
        self.dataset = FixedBatches(self.shape, self.num_classes, self.batch_size, batches, views)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=None, sampler=InOrder(len(self.dataset)))

    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        return self.train_dataloader(), self.train_dataloader()
