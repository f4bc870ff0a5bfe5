"""Shared fixtures: compose the real Hydra configs the way run.py does."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from zoo.app.configs import compose_as_run_py

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# No test may reach a model hub: fail at once instead of retrying downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Tiny nets on 2 cores: one thread is faster than two and keeps runs repeatable.
torch.set_num_threads(1)


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The composed run config for ``overrides``, with Hydra's runtime set as under ``run.py``."""
    return compose_as_run_py(overrides, output_dir)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_config("method=dae", "trainer=debug")`` -> a composed config writing into tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_config(list(overrides), output_dir or tmp_path / "run")

    return make


class ReleaseProcessGroup(L.Callback):
    """Destroy the gloo process group at the end of a ``ddp_spawn`` fit, on every rank, after a barrier.

    Lightning destroys only NCCL groups at exit; a gloo group left to interpreter shutdown aborts a worker now
    and then ("terminate called without an active exception", SIGABRT) once its peer has gone. The teardown hook
    is the trainer's last step, after its last collective."""

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def flip_stored_float(path: Path, entry: str, fraction: float) -> None:
    """Flip the lowest mantissa bit of the float32 at ``fraction`` of the tensor record ``entry`` (``data/0``)
    inside the torch archive ``path``: damage that ``torch.load`` reads without a word."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(entry))
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    element = min(int(fraction * info.file_size / 4), info.file_size // 4 - 1)
    data[start + 4 * element] ^= 0x01
    path.write_bytes(bytes(data))


def unbroken_and_resumed(make_config: Callable[..., DictConfig], folder: Path, *overrides: str) -> tuple[dict, dict]:
    """The last checkpoints of a two-epoch run of ``overrides`` and of the same run stopped after one epoch and
    continued with ``resume=auto``."""
    from zoo.app.train import fit

    fit(make_config(*overrides, "trainer.max_epochs=2", output_dir=folder / "unbroken"))
    fit(make_config(*overrides, "trainer.max_epochs=1", output_dir=folder / "resumed"))
    fit(make_config(*overrides, "trainer.max_epochs=2", "resume=auto", output_dir=folder / "resumed"))
    return tuple(
        torch.load(folder / run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for run in ("unbroken", "resumed")
    )


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def fashion_mnist() -> Path:
    """Debian's dataset-fashion-mnist folder; a test using it skips where the package is missing, and fails under
    CI, which installs it through .ci/run."""
    if not DEBIAN_FASHION.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{DEBIAN_FASHION} is missing under CI: .ci/run installs dataset-fashion-mnist")
        pytest.skip("apt-get install dataset-fashion-mnist puts Fashion-MNIST in /usr/share/datasets/fashion-mnist")
    return DEBIAN_FASHION
