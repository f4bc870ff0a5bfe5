"""Data throughput of the offline datamodules against a plain in-memory tensor, with and without views.

    python -m bench.data                                  # digits and CIFAR-10 (written as pickles), CPU
    python -m bench.data --device cuda --seconds 1

Each case pulls ``--batches`` training batches from the datamodule's ``train_dataloader()`` (epoch
after epoch, ``set_epoch`` as Lightning calls it), and the same number from a plain loop over the
same stored tensor: a fresh ``randperm`` per epoch, ``x[perm[i:i + B]]`` mapped to the batch's
[-1, 1] floats, and, with views, the same batched view recipes (``datamodules.views``) applied to it. Each round times as many
batches as the plain loop takes ``--seconds`` of CPU time for (so a cheap batch is timed many times).
So the ratio is the datamodule's own cost on top of the work any loop over the data must do. The
two alternate in ``--chunks`` chunks within each of ``--rounds`` rounds (so a change of the machine's
load hits both), and the per-item path (``batched=False``, each image alone through torchvision)
runs once a round, all timed by the process's CPU time and by wall time.
``<case>_loader_vs_tensor_ratio`` = loader samples/s / tensor samples/s by CPU time (headline; goal
>= 0.95), ``..._wall_ratio`` by wall time; ``loader_vs_tensor_ratio`` is the lowest case.
CIFAR-10 is five ``data_batch_*`` pickles and a ``test_batch`` of random uint8 images in the
official format (``--cifar-per-file`` images each) in a temporary folder.
"""

from __future__ import annotations

import math
import pickle
import tempfile
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import lightning as L
import numpy as np
import torch

from bench.common import arguments, clock_options, clocks, environment, ratio, report, synchronize
from datamodules import CIFAR10, Digits, ZooDataModule
from datamodules.views import batched_two_views


def write_cifar_pickles(root: Path, per_file: int) -> None:
    """CIFAR-10's python files (``data`` uint8 rows of 3072, ``labels``) with random images."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "batch_label": name,
            "data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, per_file).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(entry))


def loader_batches(data: ZooDataModule) -> Iterator[dict]:
    """The datamodule's training batches, epoch after epoch."""
    loader, epoch = data.train_dataloader(), 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def tensor_batches(data: ZooDataModule, device: str) -> Iterator[dict]:
    """The plain loop: the stored training tensor indexed by a fresh permutation each epoch."""
    train = data.splits[0].to(device)
    views = batched_two_views(data.views, data.shape) if data.views else []
    size = min(data.batch_size, len(train))
    while True:
        order = torch.randperm(len(train), device=device)
        for start in range(0, len(train), size):
            index = order[start : start + size]
            x01 = train.unit(train.x[index])
            batch = {"x": x01 * 2 - 1, "y": train.y[index]}
            if views:
                batch["views"] = [view(x01) * 2 - 1 for view in views]
            yield batch


def timed(batches: Iterator[dict], count: int, device: str) -> tuple[float, float]:
    """``(CPU seconds, wall seconds)`` per sample of the next ``count`` batches."""
    wall, cpu = clocks()
    samples = sum(len(batch["x"]) for batch in islice(batches, count))
    synchronize(device)
    wall_end, cpu_end = clocks()
    return (cpu_end - cpu) / samples, (wall_end - wall) / samples


def attach(data: ZooDataModule, device: str) -> ZooDataModule:
    """``data`` held by a Trainer on ``device``, as during ``fit`` (its splits then live there)."""
    data.trainer = L.Trainer(accelerator=device, devices=1, logger=False, enable_progress_bar=False)
    return data


def main() -> None:
    parser = clock_options(arguments(__doc__.splitlines()[0], steps=0, warmup=2))
    parser.add_argument("--rounds", type=int, default=6, help="interleaved loader/tensor rounds")
    parser.add_argument("--seconds", type=float, default=0.3, help="CPU seconds of the plain loop per round")
    parser.add_argument("--chunks", type=int, default=10, help="alternating loader/tensor chunks per round")
    parser.add_argument("--per-item-batches", type=int, default=4, help="batches of the per-item path per round")
    parser.add_argument("--cifar-per-file", type=int, default=1000, help="images per CIFAR-10 pickle")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(environment(args.device))

    with tempfile.TemporaryDirectory() as folder:
        write_cifar_pickles(Path(folder), args.cifar_per_file)
        cases: dict[str, Callable[..., ZooDataModule]] = {
            "digits": lambda **k: Digits(**k),
            "digits_views": lambda **k: Digits(views="mocov2_noflip", **k),
            "cifar10": lambda **k: CIFAR10(root=folder, **k),
            "cifar10_views": lambda **k: CIFAR10(root=folder, views="mocov2", **k),
        }
        rows, values, headline = [], {}, []
        for name, make in cases.items():
            plain = tensor_batches(attach(make(), args.device), args.device)
            per_batch = timed(plain, args.warmup, args.device)[0] * min(make().batch_size, 128)
            count = max(args.warmup, math.ceil(args.seconds / per_batch))
            paths = {
                "loader": (loader_batches(attach(make(), args.device)), count),
                "tensor": (plain, count),
                "per_item": (loader_batches(make(batched=False)), args.per_item_batches),
            }
            for batches, _ in paths.values():
                timed(batches, args.warmup, args.device)
            measured: dict[str, list[tuple[float, float]]] = {path: [] for path in paths}
            chunk = max(1, count // args.chunks)
            for round_index in range(args.rounds):
                totals = {"loader": [0.0, 0.0], "tensor": [0.0, 0.0]}
                for chunk_index in range(args.chunks):
                    order = list(totals) if (round_index + chunk_index) % 2 == 0 else list(reversed(totals))
                    for path in order:
                        cpu, wall = timed(paths[path][0], chunk, args.device)
                        totals[path][0] += cpu / args.chunks
                        totals[path][1] += wall / args.chunks
                for path, (cpu, wall) in totals.items():
                    measured[path].append((cpu, wall))
                measured["per_item"].append(timed(*paths["per_item"], args.device))
            loader = ratio(measured["tensor"], measured["loader"])
            per_item = ratio(measured["tensor"], measured["per_item"])
            rate = {path: 1 / np.median([cpu for cpu, _ in times]) for path, times in measured.items()}
            rows.append([name, rate["tensor"], rate["loader"], rate["per_item"], loader.cpu, loader.wall, per_item.cpu])
            values[f"{name}_loader_samples_per_cpu_s"] = rate["loader"]
            values[f"{name}_tensor_samples_per_cpu_s"] = rate["tensor"]
            values[f"{name}_loader_vs_tensor_ratio"] = loader.cpu
            values[f"{name}_loader_vs_tensor_wall_ratio"] = loader.wall
            values[f"{name}_per_item_vs_tensor_ratio"] = per_item.cpu
            values[f"{name}_per_item_vs_tensor_wall_ratio"] = per_item.wall
            headline.append(loader.cpu)
            print(f"{name} loader vs tensor {loader.spread()}")
    values["loader_vs_tensor_ratio"] = min(headline)
    report(
        f"training batches per CPU-second: datamodule loader vs plain tensor (goal ratio >= 0.95; {args.rounds} rounds)",
        ["case", "tensor", "loader", "per-item loader", "loader/tensor cpu", "loader/tensor wall", "per-item/tensor cpu"],
        rows,
        values,
    )


if __name__ == "__main__":
    main()
