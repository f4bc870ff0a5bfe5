"""Files that a kill or a flipped byte cannot make wrong: an atomic ``torch.save`` and the SHA-256 of tensors.

``atomic_torch_save`` writes beside the target, fsyncs, and renames over it, so the target is always a
whole old or a whole new file (checkpoints, the latent cache, the reference net's cache). A file can
still be damaged after it was written, and ``torch.load`` does not check the bytes of a tensor inside its
archive; so caches store ``tensor_digest`` of what they hold and compare it on every load.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import torch


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
    fsync_folder(path.parent)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def tensor_digest(tree: Any) -> str:
    """The SHA-256 of every tensor in ``tree`` (a tensor, or dicts and lists of them): names, dtypes, shapes
    and bytes, in a fixed order; any dtype (bf16 included)."""
    digest = hashlib.sha256()
    for name, tensor in tensors(tree):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tensors(tree: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` of every tensor in ``tree``, dict keys sorted."""
    if isinstance(tree, torch.Tensor):
        return [(prefix, tree)]
    if isinstance(tree, dict):
        return [item for key in sorted(tree, key=str) for item in tensors(tree[key], f"{prefix}/{key}")]
    if isinstance(tree, (list, tuple)):
        return [item for i, value in enumerate(tree) for item in tensors(value, f"{prefix}/{i}")]
    return []
