"""Checkpoint writes that a kill cannot corrupt: temp file in the same folder, fsync, rename.

Lightning's ``TorchCheckpointIO`` stages a local checkpoint in the system temp folder and then moves
it; when that folder is on another filesystem (``/tmp`` on a tmpfs, the run on NFS or Lustre) the move
is a copy over the old file, and nothing is fsynced. A job killed or preempted during that copy leaves a
truncated ``last.ckpt`` and ``resume=auto`` cannot continue. ``AtomicCheckpointIO`` writes next to the
target, fsyncs the file, ``os.replace``s it over the target (atomic within one filesystem) and fsyncs
the folder, so the target is always either the old or the new checkpoint, whole.
"""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from pathlib import Path
from typing import Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` such that ``path`` never holds a partial file, even after ``kill -9``.

    Temp files left by writers that were killed (``.<name>.<random>.tmp`` beside the target) are
    removed after the next successful write of the same target.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    _fsync_folder(path.parent)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes go through ``atomic_torch_save``.

    Remote targets (``s3://``, ``gs://``, ...) keep Lightning's write: object stores replace an object
    whole. Set it in the trainer config: ``plugins: [{_target_: zoo.checkpoint_io.AtomicCheckpointIO}]``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        filesystem, local_path = fsspec.core.url_to_fs(str(path))
        if storage_options is not None or not isinstance(filesystem, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, local_path)
