"""What the benchmarks share: the real configs, training steps timed through the real Trainer, model
FLOPs of a training step, a measured matmul peak, and the ``name=value`` report.

Run the scripts from the repository root as modules (``python -m bench.throughput``); each takes
``--device cpu|cuda`` and ``--precision 32-true|bf16-mixed``.

Two clocks time every step: wall time (``time.perf_counter``) and the CPU time of the process, all
its threads (``time.process_time``). On a shared machine other processes stretch wall time by any
factor, while the process's CPU time moves little; the ratios report both, take the CPU-time one as
the headline where the work is on the CPU, and print their spread over interleaved rounds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from zoo.app.configs import compose_as_run_py

CONF = Path(__file__).resolve().parents[1] / "conf"
METHODS = ("dae", "diffusion", "jit", "moco")
"""The methods the benchmarks run, where ``conf/method/<name>.yaml`` exists."""


def arguments(description: str, steps: int, warmup: int) -> argparse.ArgumentParser:
    """The options every benchmark takes: device, precision, timed steps and warm-up steps."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    parser.add_argument("--steps", type=int, default=steps, help="timed steps")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps before the timed ones")
    return parser


def available_methods(names: Sequence[str] = METHODS) -> list[str]:
    """``names`` that have a config in ``conf/method``."""
    return [name for name in names if (CONF / "method" / f"{name}.yaml").is_file()]


def compose_run(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """The run config for ``overrides`` as ``run.py`` composes it, writing into ``output_dir``."""
    return compose_as_run_py(overrides, output_dir)


def synchronize(device: str) -> None:
    """Wait for queued device work, so wall-clock times measure it."""
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device: str, precision: str) -> AbstractContextManager:
    """The autocast Lightning's ``bf16-mixed`` applies; nothing for ``32-true``."""
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return nullcontext()


def clock_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--threads``: torch's CPU threads (default 1: a process of one thread neither spins waiting
    for busy cores nor lends its CPU time to them, so its CPU time per step holds under load)."""
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser


def clocks() -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process)`` now."""
    return time.perf_counter(), time.process_time()


class StepTimer(L.Callback):
    """Records the wall-clock time, the process's CPU time and the batch size at the end of every training step."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.sizes: list[int] = []

    def record(self, size: int) -> None:
        synchronize(self.device)
        wall, cpu = clocks()
        self.times.append(wall)
        self.cpu_times.append(cpu)
        self.sizes.append(size)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.record(int(args[1]["x"].shape[0]))

    def rate(self, warmup: int) -> Rate:
        return rate(self.times, self.sizes, warmup, self.cpu_times)


@dataclass
class Rate:
    """Timed steps: mean seconds per step, samples per second, and the median step (robust to a busy
    machine's stalls, but blind to work done once per epoch), by wall time; and the mean and median
    step by the process's CPU time (``nan`` where not recorded)."""

    seconds_per_step: float
    samples_per_s: float
    median_step: float
    cpu_per_step: float = float("nan")
    cpu_median_step: float = float("nan")

    @property
    def cpu_samples_per_s(self) -> float:
        """Samples per CPU-second of the process."""
        return self.samples_per_s * self.seconds_per_step / self.cpu_per_step


def rate(times: Sequence[float], sizes: Sequence[int], warmup: int, cpu_times: Sequence[float] = ()) -> Rate:
    """From step-end times: the steps after the first ``warmup`` ones (the clock starts at step ``warmup``)."""
    if len(times) <= warmup + 1:
        raise ValueError(f"{len(times)} steps recorded; need more than warmup + 1 = {warmup + 1}")
    elapsed = times[-1] - times[warmup]
    steps = len(times) - 1 - warmup
    durations = [b - a for a, b in zip(times[warmup:], times[warmup + 1 :])]
    measured = Rate(elapsed / steps, sum(sizes[warmup + 1 :]) / elapsed, statistics.median(durations))
    if cpu_times:
        cpu = [b - a for a, b in zip(cpu_times[warmup:], cpu_times[warmup + 1 :])]
        measured.cpu_per_step = (cpu_times[-1] - cpu_times[warmup]) / steps
        measured.cpu_median_step = statistics.median(cpu)
    return measured


@dataclass
class Ratio:
    """A ratio measured in interleaved rounds by both clocks: the CPU-time (headline) and wall-time
    values and each clock's per-round ratios. The rounds alternate which side goes first, so each
    pair of rounds ``(2k, 2k + 1)`` gives the geometric mean of its two per-round ratios, in which a
    multiplicative advantage of going first (or second) cancels; the value is the median over pairs
    (an odd last round counts alone)."""

    cpu: float
    wall: float
    cpu_rounds: list[float]
    wall_rounds: list[float]

    def spread(self) -> str:
        """One line: the per-round ratios' min / median / max for each clock."""
        def span(values: list[float]) -> str:
            return f"{min(values):.4g} / {statistics.median(values):.4g} / {max(values):.4g}"

        return f"per-round ratio min / median / max: cpu {span(self.cpu_rounds)}; wall {span(self.wall_rounds)}"


def ratio(numerators: Sequence[tuple[float, float]], denominators: Sequence[tuple[float, float]]) -> Ratio:
    """The ratio of ``(cpu, wall)`` figures measured in the same rounds (order alternating by round)."""
    cpu_rounds = [n[0] / d[0] for n, d in zip(numerators, denominators, strict=True)]
    wall_rounds = [n[1] / d[1] for n, d in zip(numerators, denominators, strict=True)]
    return Ratio(_paired(cpu_rounds), _paired(wall_rounds), cpu_rounds, wall_rounds)


def _paired(per_round: Sequence[float]) -> float:
    pairs = [math.sqrt(a * b) for a, b in zip(per_round[::2], per_round[1::2])]
    return statistics.median(pairs + list(per_round[len(pairs) * 2 :]))


def bench_overrides(device: str, precision: str, steps: int) -> list[str]:
    """Overrides for timing training: ``steps`` steps on ``device``, no validation, checkpoints or bar."""
    return [
        f"trainer.accelerator={device}",
        f"trainer.precision={precision}",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=-1",
        "++trainer.limit_val_batches=0",
        "++trainer.num_sanity_val_steps=0",
        "trainer.enable_model_summary=false",
        "++callbacks.checkpoint=null",
        "++callbacks.progress=null",
        "++trainer.enable_progress_bar=false",
    ]


def fit_timed(method_overrides: Sequence[str], device: str, precision: str, steps: int, warmup: int) -> tuple[Rate, Any]:
    """Train ``warmup + steps`` steps of a method's default run through the real Trainer; returns the
    rate of the timed steps and the built run (``zoo.app.train.Built``)."""
    from zoo.app.train import build

    with tempfile.TemporaryDirectory() as folder:
        cfg = compose_run([*method_overrides, *bench_overrides(device, precision, warmup + steps)], Path(folder))
        built = build(cfg)
        timer = StepTimer(device)
        built.trainer.callbacks.append(timer)
        built.trainer.fit(built.method, datamodule=built.datamodule)
    return timer.rate(warmup), built


def to_device(batch: Any, device: torch.device | str) -> Any:
    """A batch dict (tensors, lists of tensors) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def cycle(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def training_step_flops(method: L.LightningModule, batch: dict, device: str, precision: str) -> int:
    """Model FLOPs of one training step (forward and backward of ``method.losses``), by PyTorch's
    ``FlopCounterMode`` (matmuls, convolutions, attention; element-wise work is not counted)."""
    method.train()
    with FlopCounterMode(display=False) as counter:
        with autocast(device, precision):
            loss = method.losses(batch)["loss"]
        loss.backward()
    method.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def matmul_peak(device: str, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """FLOP/s of the fastest of ``repeats`` ``size x size`` matmuls in ``dtype`` (TF32 off for float32)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def report(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], values: dict[str, float]) -> None:
    """Print a table, then one ``name=value`` line per value (ratios are named ``..._ratio``)."""
    cells = [[str(h) for h in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(title)
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    for name, value in values.items():
        print(f"{name}={value:.6g}")


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def environment(device: str) -> str:
    """One line naming the device and the CPU threads torch uses."""
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return f"device={name} torch_threads={torch.get_num_threads()} torch={torch.__version__}"
