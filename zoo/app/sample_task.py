"""``task=sample``: ``n`` samples of a checkpoint on every device and process the trainer config gives.

``python run.py task=sample ckpt=<path> n=50000`` (``trainer=ddp trainer.devices=8`` for 8 GPUs,
``trainer.precision=bf16-mixed`` for bf16) rebuilds the method from the checkpoint alone (``load_method``)
and draws the samples in batches of ``sample_batch_size`` through Lightning's predict loop: each rank
draws its share of the batches, batch ``i`` from its own generator seeded by ``(seed, i)``, so the files do not
depend on the number of processes. Each rank writes its batches to a shard in the run folder; rank zero joins
them in batch order into ``samples.npz``: ``arr_0`` the samples (images as uint8 ``N,H,W,3``, the ADM
evaluator's layout, grey images repeated to three channels; vectors as float32 ``N,D``) and ``arr_1`` their
labels (-1 when unconditional, else class ``i mod num_classes`` for sample ``i``), and ``samples.png`` (a grid of
the first 64 at 256 px or more; a scatter for vectors). Every ``method.sampler.*`` given on the command line
(steps, name, eta, CFG scale and interval, predict-and-perturb) and ``guidance=...`` apply.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.utils import make_grid, save_image

from callbacks.progress import progress_shown, track
from callbacks.training.files import atomic_torch_save
from zoo.app.tasks import checkpoint_path, progress_bar_on, sampler_overrides, write_metrics
from zoo.loading import Has, load_method

GRID_IMAGES = 64
GRID_MIN_PIXELS = 256


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index``'s generator: ``(seed, index)`` mixed by NumPy's ``SeedSequence``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class BatchIndices(Dataset):
    """The indices of the ``ceil(n / batch_size)`` sample batches, which the predict loop shares among ranks."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.count = math.ceil(n / batch_size)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> int:
        return index


class DrawSamples(L.LightningModule):
    """Batch ``i`` of ``n`` samples of ``method`` per predict step, from a generator seeded by ``(seed, i)``.

    The batches drawn on this rank stay here (``drawn``: batch index -> images as uint8 or vectors as float32, the
    labels, how many rows are finite) until the task writes them to this rank's shard.
    """

    def __init__(self, method: L.LightningModule, n: int, batch_size: int, seed: int, overrides: dict[str, Any]) -> None:
        super().__init__()
        self.method = method
        self.n, self.batch_size, self.seed, self.overrides = n, batch_size, seed, overrides
        self.num_classes = int(getattr(method, "num_classes", 0))
        self.drawn: dict[int, tuple[Tensor, Tensor, int]] = {}
        self._bar: Iterator[int] = iter(())

    def on_predict_start(self) -> None:
        """The zoo's bar (``callbacks.progress.track``) over this rank's batches, where bars are shown."""
        batches = int(self.trainer.num_predict_batches[0])
        self._bar = track(range(batches), batches, f"sampling {self.n:,}")

    def on_predict_end(self) -> None:
        for _ in self._bar:
            pass

    def predict_step(self, batch: Tensor, batch_idx: int) -> None:
        next(self._bar, None)
        index = int(batch[0])
        start = index * self.batch_size
        size = min(self.batch_size, self.n - start)
        labels = torch.arange(start, start + size) % self.num_classes if self.num_classes else torch.full((size,), -1)
        generator = torch.Generator(device=self.device).manual_seed(batch_seed(self.seed, index))
        with torch.no_grad():
            x = self.method.sample(
                size, y=labels.to(self.device) if self.num_classes else None, generator=generator, **self.overrides
            ).float()
        finite = int(torch.isfinite(x).flatten(1).all(1).sum())
        stored = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) if x.dim() == 4 else x
        self.drawn[index] = (stored.cpu(), labels, finite)


def shard_path(folder: Path, rank: int) -> Path:
    return folder / f".samples.rank{rank}.pt"


def sample_task(cfg: DictConfig) -> dict[str, float]:
    """Draw ``cfg.n`` samples of ``cfg.ckpt`` on the configured devices; rank zero writes npz and png."""
    path = checkpoint_path(cfg)
    n, batch_size = int(cfg.n), int(cfg.sample_batch_size)
    method = load_method(
        path, expect=Has("sample"), expected="the checkpoint of a method that samples (method=diffusion, method=jit, ...)"
    )
    L.seed_everything(cfg.seed, verbose=False)
    if cfg.get("guidance") is not None:
        datamodule = instantiate(cfg.data)
        with open_dict(cfg):
            cfg.shape, cfg.num_classes = list(datamodule.shape), datamodule.num_classes
        method.guidance = instantiate(cfg.guidance)
        datamodule.setup("fit")
        method.guidance.fit_to(datamodule)
    drawer = DrawSamples(method, n, batch_size, int(cfg.seed), sampler_overrides(cfg))
    trainer = instantiate(
        cfg.trainer, callbacks=[], logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, inference_mode=False,
    )
    # Reward guidance differentiates through the net inside the sampler: no inference mode, no_grad per step.
    with progress_shown("task=sample", progress_bar_on(cfg)):
        trainer.predict(drawer, DataLoader(BatchIndices(n, batch_size), batch_size=1), return_predictions=False)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(drawer.drawn, shard_path(out, trainer.global_rank))
    trainer.strategy.barrier("samples written")
    summary = {"n": float(n)}
    if trainer.global_rank == 0:
        summary["finite_fraction"] = join_shards(out, trainer.world_size, len(BatchIndices(n, batch_size))) / n
        write_metrics(summary, out)
    trainer.strategy.barrier("samples joined")
    return summary


def join_shards(folder: Path, world_size: int, batches: int) -> int:
    """Join the ranks' shards in batch order into ``samples.npz`` and ``samples.png``, remove them; the number of
    finite samples."""
    drawn: dict[int, tuple[Tensor, Tensor, int]] = {}
    for rank in range(world_size):
        shard = shard_path(folder, rank)
        drawn |= torch.load(shard, map_location="cpu", weights_only=True)
    if sorted(drawn) != list(range(batches)):
        raise RuntimeError(f"the shards in {folder} hold batches {sorted(drawn)}, not 0..{batches - 1}")
    x = torch.cat([drawn[i][0] for i in range(batches)])
    y = torch.cat([drawn[i][1] for i in range(batches)])
    write_samples(x, y, folder)
    for rank in range(world_size):
        shard_path(folder, rank).unlink()
    return sum(drawn[i][2] for i in range(batches))


def write_samples(x: Tensor, y: Tensor, folder: Path) -> None:
    """``samples.npz`` (uint8 ``N,H,W,3`` images or float32 vectors, and labels) and ``samples.png``."""
    if x.dim() == 4:
        np.savez(folder / "samples.npz", x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy(), y.numpy())
        grid = make_grid(x[:GRID_IMAGES].float() / 255, nrow=math.ceil(math.sqrt(min(len(x), GRID_IMAGES))))
        scale = math.ceil(GRID_MIN_PIXELS / min(grid.shape[1:]))
        save_image(grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2), folder / "samples.png")
        return
    np.savez(folder / "samples.npz", x.numpy().astype(np.float32), y.numpy())
    import matplotlib  # here, not at the top: only vector samples need it, and it costs start-up time

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4, 4))
    axes.scatter(x[:, 0], x[:, 1], s=3)
    axes.set_aspect("equal")
    figure.savefig(folder / "samples.png", dpi=100)
    plt.close(figure)
