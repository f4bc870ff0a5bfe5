"""Checkpoint writes that a kill cannot corrupt: temp file in the same folder, fsync, rename.

Lightning's ``TorchCheckpointIO`` stages a local checkpoint in the system temp folder and then moves
it; when that folder is on another filesystem (``/tmp`` on a tmpfs, the run on NFS or Lustre) the move
is a copy over the old file, and nothing is fsynced. A job killed or preempted during that copy leaves a
truncated ``last.ckpt`` and ``resume=auto`` cannot continue. ``AtomicCheckpointIO`` writes through
``callbacks.training.files.atomic_torch_save``: next to the target, fsynced, ``os.replace``d over it (atomic
within one filesystem), the folder fsynced, so the target is always the old or the new checkpoint, whole.
"""

from __future__ import annotations

from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from callbacks.training.files import atomic_torch_save


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
