"""The batch-at-once data path: the same batches in the same epoch-seeded order as the per-item path,
one gather per batch, the split on the trainer's device, and the per-item path kept for image folders."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.utilities.data import _update_dataloader
from test_datamodules import write_cifar, write_image_folder, write_mnist
from torch.utils.data import DistributedSampler

from datamodules import CIFAR10, MNIST, Digits, ImageFolder, Manifold
from datamodules.base import BatchDictDataset, TensorBatchDataset, TensorBatchLoader, TensorSamples


def epochs(loader: torch.utils.data.DataLoader, count: int) -> list[dict]:
    """Every batch of ``count`` epochs, the sampler told each epoch as Lightning tells it."""
    batches = []
    for epoch in range(count):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        batches += list(loader)
    return batches


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for first, second in zip(a, b, strict=True):
        assert first.keys() == second.keys() == {"x", "y"}
        assert torch.equal(first["x"], second["x"]) and torch.equal(first["y"], second["y"])


def datamodules(tmp_path: Path, **kwargs) -> dict[str, tuple]:
    """Each in-memory datamodule twice: batch at once and item by item."""
    write_mnist(tmp_path)
    write_cifar(tmp_path)
    makers = {
        "digits": lambda **k: Digits(**k),
        "manifold": lambda **k: Manifold(n_samples=300, **k),
        "mnist": lambda **k: MNIST(root=str(tmp_path), **k),
        "cifar10": lambda **k: CIFAR10(root=str(tmp_path), **k),
    }
    return {name: (make(**kwargs), make(batched=False, **kwargs)) for name, make in makers.items()}


@pytest.mark.parametrize("settings", [{"batch_size": 16}, {"batch_size": 7, "n_train": 20, "train_repeats": 3}])
def test_batches_equal_the_per_item_path_in_the_same_epoch_seeded_order(tmp_path: Path, settings: dict) -> None:
    for name, (batched, per_item) in datamodules(tmp_path, seed=3, **settings).items():
        assert type(batched.train_dataloader()) is TensorBatchLoader, name
        assert_same_batches(epochs(batched.train_dataloader(), 3), epochs(per_item.train_dataloader(), 3))
        for loaders in ("val_dataloader", "test_dataloader"):
            assert_same_batches(list(getattr(batched, loaders)()), list(getattr(per_item, loaders)()))
        assert_same_batches(list(batched.probe_dataloaders()[0]), list(per_item.probe_dataloaders()[0]))
        torch.testing.assert_close(batched.train_tensor()[0], per_item.train_tensor()[0], rtol=0, atol=0)


def test_each_batch_is_one_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    rows = TensorSamples.rows
    monkeypatch.setattr(TensorSamples, "rows", lambda self, index: calls.append(len(index)) or rows(self, index))
    data = Digits(batch_size=100, views="mocov2_noflip", augment=None)
    batches = list(data.train_dataloader())
    assert calls == [len(batch["x"]) for batch in batches] and sum(calls) == len(data.splits[0])
    assert all(len(batch["views"]) == 2 and batch["views"][0].shape == batch["x"].shape for batch in batches)


def test_views_are_drawn_from_the_global_generator_like_the_per_item_transforms() -> None:
    data = Digits(batch_size=64, views="mocov3_noflip", augment="flip")

    def first_views() -> list[torch.Tensor]:
        torch.manual_seed(5)
        batch = next(iter(data.train_dataloader()))
        return [batch["x"], *batch["views"]]

    for a, b in zip(first_views(), first_views(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(*first_views()[1:])


def test_splits_move_to_the_trainers_accelerator_and_batches_stay_there() -> None:
    data = Digits(batch_size=32, views="mocov2_noflip", num_workers=2)
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    loader = data.train_dataloader()
    assert loader.num_workers == 0 and not loader.persistent_workers
    batch = next(iter(loader))
    assert batch["x"].device.type == "meta" and batch["y"].device.type == "meta"
    assert batch["x"].shape == (32, 1, 8, 8) and all(view.device.type == "meta" for view in batch["views"])
    assert next(iter(data.val_dataloader()))["x"].device.type == "meta"
    assert next(iter(data.probe_dataloaders()[0]))["x"].device.type == "cpu"
    assert data.splits[0].device.type == "cpu" and data.train_tensor()[0].device.type == "cpu"
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    assert next(iter(data.train_dataloader()))["x"].device.type == "cpu"


def test_a_distributed_sampler_keeps_the_batch_at_once_path() -> None:
    data = Digits(batch_size=16)
    loader = data.train_dataloader()
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sharded = _update_dataloader(loader, sampler)
        batch = next(iter(sharded))
        assert type(sharded) is TensorBatchLoader and isinstance(sharded.dataset, TensorBatchDataset)
        assert batch["x"].shape == (16, 1, 8, 8)
        shards.append(batch["x"])
    assert not torch.equal(*shards)


def test_image_folders_keep_the_per_item_loader_with_workers(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images")
    data = ImageFolder(root=str(tmp_path / "images"), image_size=8, batch_size=4, num_workers=1, views="mocov2")
    loader = data.train_dataloader()
    assert isinstance(loader.dataset, BatchDictDataset) and loader.num_workers == 1
    batch = next(iter(loader))
    assert batch["x"].shape == (4, 3, 8, 8) and len(batch["views"]) == 2


def test_a_single_item_is_the_unbatched_batch_of_one() -> None:
    dataset = Digits(views="mocov2_noflip").train_dataloader().dataset
    item = dataset[3]
    assert item["x"].shape == (1, 8, 8) and item["y"].ndim == 0 and len(item["views"]) == 2
    assert torch.equal(item["x"], Digits(batched=False).train_dataloader().dataset[3]["x"])
