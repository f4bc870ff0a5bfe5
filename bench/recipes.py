"""The paper recipes' nets at their real size: training speed, memory and model FLOPs utilization on one device.

    python -m bench.recipes --device cuda --precision bf16-mixed --steps 200 --warmup 20     # bench/gpu_check.sh
    python -m bench.recipes --device cpu --tiny --steps 2 --warmup 1 --rounds 2             # the suite's check

Each row is a recipe of ``conf/experiment/`` (its method, net preset, optimizer, EMA and other training callbacks)
trained through the real Trainer (``zoo.app.train.build``) on random images of the recipe's shape
(``bench.synthetic``): the datasets and pretrained weights need not be on the machine. Latent recipes run on
latent-shaped inputs without their autoencoder (the autoencoder's encoding is not timed); DINOv2 is timm's
architecture with random weights. The batch is the recipe's batch on one of the paper's GPUs (its global batch
over 8, MoCo v3's on one). Per row: samples/s, step time, model FLOPs of a step (``FlopCounterMode``), MFU against
the bf16 (fp32) matmul peak measured in the same run, peak device memory, and the host synchronisations inside the
training step (CUDA's sync debug mode, between the batch's start and its end: forward, loss, logging, backward,
optimizer step). Then, for DiT-B/2 (SiT-B/2, REPA's denoiser): ``compile=true``; Lightning's step against a plain
loop on the same batches (``bench.throughput``'s blocks, ``--rounds`` interleaved rounds; the ratio of median
step wall times); and on CUDA one GPU under FSDP (``trainer=fsdp trainer.devices=1``).
``--tiny`` shrinks every net, shape and batch to a few seconds on a CPU (no compile, FSDP needs a GPU).
"""

from __future__ import annotations

import math
import tempfile
import warnings
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf, open_dict

from bench.common import (
    StepTimer,
    arguments,
    bench_overrides,
    compose_run,
    environment,
    matmul_peak,
    ratio,
    report,
    to_device,
    training_step_flops,
)
from bench.throughput import interleaved


@dataclass
class Row:
    """A recipe's overrides, the shape its net sees, its per-GPU batch, and the same small for ``--tiny``."""

    overrides: list[str]
    shape: tuple[int, ...]
    batch: int
    num_classes: int = 1000
    views: bool = False
    tiny: list[str] = field(default_factory=list)
    tiny_shape: tuple[int, ...] | None = None


DIT_TINY = ["net.depth=2", "net.width=32", "net.heads=2"]
UNET_TINY = ["net.block_out_channels=[16,16,16]", "net.layers_per_block=1", "net.attention_head_dim=8", "net.norm_groups=8"]
DINO_TINY = ["+encoder.depth=1", "+encoder.embed_dim=32", "+encoder.num_heads=2", "encoder.img_size=28", "encoder.input_size=28"]
ROWS = {
    "dit_b2": Row(["method=diffusion", "net=dit_b", "method/time_sampler=uniform", "net.num_classes=1000",
                   "callbacks.generative=null", "callbacks.ema.decay=0.9999", "method.optimizer.lr=1e-4"],
                  (4, 32, 32), 32, tiny=DIT_TINY, tiny_shape=(4, 8, 8)),
    "edm_ddpmpp": Row(["experiment=cifar10/edm"], (3, 32, 32), 64, 10, tiny=UNET_TINY),
    "ict_ddpmpp": Row(["experiment=cifar10/ict"], (3, 32, 32), 128, 10, tiny=UNET_TINY),
    "moco_v3_resnet18": Row(["experiment=cifar10/moco_v3"], (3, 32, 32), 256, 10, views=True,
                            tiny=["net.width=8", "net.layers=[1,1,1,1]", "method.dim=16", "method.hidden=32"]),
    "lightningdit_b1": Row(["experiment=imagenet256/lightningdit_b1", "autoencoder=null"], (32, 16, 16), 128,
                           tiny=DIT_TINY, tiny_shape=(8, 4, 4)),
    "dit_dh_s": Row(["experiment=imagenet256/rae_dit_dh_s", "autoencoder=null"], (768, 16, 16), 128,
                    tiny=[*DIT_TINY, "net.head_width=64", "net.head_depth=1"], tiny_shape=(32, 2, 2)),
    "jit_b16": Row(["experiment=imagenet256/jit_b16"], (3, 256, 256), 128,
                   tiny=["net.depth=2", "net.width=32", "net.heads=2", "net.bottleneck=8", "net.in_context_tokens=2",
                         "net.in_context_start=1"], tiny_shape=(3, 32, 32)),
    "vavae_f16d32": Row(["experiment=imagenet256/vavae_f16d32", "encoder.weights_path=null"], (3, 256, 256), 8,
                        tiny=[*DINO_TINY, "method.net.block_out_channels=[8,8,8,8,8]", "method.net.layers_per_block=1",
                              "method.net.norm_groups=8", "method.net.latent_channels=4"], tiny_shape=(3, 32, 32)),
    "rae_decoder_xl": Row(["experiment=imagenet256/rae_stage1", "encoder.weights_path=null"], (3, 256, 256), 64,
                          tiny=[*DINO_TINY, "method.decoder.width=32", "method.decoder.depth=1", "method.decoder.heads=2"],
                          tiny_shape=(3, 32, 32)),
}
"""Every trained recipe; ECT and iCT share one net and step (``ict_ddpmpp``), DDAE only probes ``edm_ddpmpp``'s."""


class HostSyncs(L.Callback):
    """Counts CUDA's synchronising calls from a training batch's start to its end (this callback goes first, so
    the window holds the step itself: forward, loss, logging, backward, optimizer step)."""

    def __init__(self, device: str) -> None:
        self.on = device == "cuda"
        self.count = 0
        self.steps = 0
        self.caught: Any = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.on:
            self.caught = warnings.catch_warnings(record=True)
            self.records = self.caught.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.on:
            torch.cuda.set_sync_debug_mode("default")
            self.caught.__exit__(None, None, None)
            self.count += sum("synchronizing" in str(record.message) for record in self.records)
            self.steps += 1

    @property
    def per_step(self) -> float:
        return self.count / self.steps if self.steps else math.nan


QUIET = ["++callbacks.lr_monitor=null", "++callbacks.samples=null", "++callbacks.generative=null"]
"""Callbacks that need a logger or sample at epoch ends: not part of a training step's cost."""


def build_row(row: Row, args: Namespace, steps: int, folder: str, extra: list[str] = ()) -> Any:
    """The recipe of ``row`` built by ``zoo.app.train.build`` on random images, for ``steps`` steps, writing in ``folder``."""
    from zoo.app.train import build

    shape = (row.tiny_shape or row.shape) if args.tiny else row.shape
    overrides = [*row.overrides, *(row.tiny if args.tiny else []), *extra, *QUIET]
    cfg = compose_run([*overrides, *bench_overrides(args.device, args.precision, steps)], Path(folder))
    with open_dict(cfg):
        cfg.data = OmegaConf.create({
            "_target_": "bench.synthetic.RandomImages", "shape": list(shape), "num_classes": row.num_classes,
            "batch_size": 4 if args.tiny else row.batch, "views": row.views,
        })
        cfg.logger = None
    return build(cfg)


def timed(row: Row, args: Namespace, extra: list[str] = ()) -> tuple[Any, Any, HostSyncs]:
    """Train ``warmup + steps`` steps of ``row``; the rate of the timed ones, the built run, the sync count."""
    with tempfile.TemporaryDirectory() as folder:
        built = build_row(row, args, args.warmup + args.steps, folder, list(extra))
        timer, syncs = StepTimer(args.device), HostSyncs(args.device)
        built.trainer.callbacks.insert(0, syncs)
        built.trainer.callbacks.append(timer)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        built.trainer.fit(built.method, datamodule=built.datamodule)
    return timer.rate(args.warmup), built, syncs


def peak_memory_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else math.nan


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], steps=200, warmup=20)
    parser.add_argument("--tiny", action="store_true", help="tiny nets, shapes and batches (the CPU check)")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--rounds", type=int, default=6, help="interleaved Lightning/plain rounds (even)")
    parser.add_argument("--compile", nargs="*", default=None, help="rows also timed with compile=true (cuda: dit_b2)")
    args = parser.parse_args()
    print(environment(args.device))
    compiled = args.compile if args.compile is not None else ([] if args.device == "cpu" else ["dit_b2"])

    dtype = torch.bfloat16 if args.precision == "bf16-mixed" else torch.float32
    peak = matmul_peak(args.device, dtype, 512 if args.tiny else 8192)
    rows, values = [], {"matmul_peak_tflops": peak / 1e12}
    for label in args.rows:
        measured, built, syncs = timed(ROWS[label], args)
        memory = peak_memory_gib(args.device)
        method = built.method.to(args.device)
        batch = to_device(next(iter(built.datamodule.train_dataloader())), args.device)
        flops = training_step_flops(method, batch, args.device, args.precision)
        mfu = flops / measured.seconds_per_step / peak
        rows.append([label, int(batch["x"].shape[0]), measured.seconds_per_step * 1e3, measured.samples_per_s,
                     flops / 1e9, mfu, memory, syncs.per_step])
        values.update({
            f"{label}_samples_per_s": measured.samples_per_s,
            f"{label}_step_ms": measured.seconds_per_step * 1e3,
            f"{label}_gflop_per_step": flops / 1e9,
            f"{label}_mfu_ratio": mfu,
        })
        if args.device == "cuda":
            values[f"{label}_peak_mem_gib"] = memory
            values[f"{label}_host_syncs_per_step"] = syncs.per_step
        if label in compiled:
            fast, _, _ = timed(ROWS[label], args, ["compile=true"])
            values[f"{label}_compiled_samples_per_s"] = fast.samples_per_s
            values[f"{label}_compile_speedup_ratio"] = fast.samples_per_s / measured.samples_per_s
    report(f"paper recipes, one device ({args.precision}; peak {peak / 1e12:.4g} TFLOP/s measured)",
           ["recipe", "batch", "ms/step", "samples/s", "GFLOP/step", "MFU", "peak GiB", "syncs/step"], rows, values)

    with tempfile.TemporaryDirectory() as folder:
        built = build_row(ROWS["dit_b2"], args, 1, folder)
    lightning, plain, _ = interleaved(built.method, built.datamodule, args)
    overhead = ratio([(r.cpu_median_step, r.median_step) for r in lightning], [(r.cpu_median_step, r.median_step) for r in plain])
    values = {
        "dit_b2_lightning_step_ms": median(r.median_step for r in lightning) * 1e3,
        "dit_b2_plain_step_ms": median(r.median_step for r in plain) * 1e3,
        "dit_b2_lightning_overhead_ratio": overhead.wall,
        "dit_b2_lightning_overhead_cpu_ratio": overhead.cpu,
    }
    if args.device == "cuda":
        fsdp, _, _ = timed(ROWS["dit_b2"], args, ["trainer=fsdp", "trainer.devices=1"])
        values["dit_b2_fsdp_samples_per_s"] = fsdp.samples_per_s
        values["dit_b2_fsdp_peak_mem_gib"] = peak_memory_gib(args.device)
    print("DiT-B/2: Lightning against a plain loop (goal <= 1.03, by wall time), FSDP on one GPU")
    print(f"lightning / plain median step: {overhead.spread()}")
    for name, value in values.items():
        print(f"{name}={value:.6g}")


if __name__ == "__main__":
    main()
