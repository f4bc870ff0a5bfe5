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
import re
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` such that ``path`` never holds a partial file, even after ``kill -9``
    (``atomic_write``)."""
    atomic_write(path, lambda file: torch.save(obj, file))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(file)`` into a temp file beside ``path``, fsynced and renamed: ``path`` never holds a partial file.

    The temp file is named after its writer (``.<name>.<host>.<pid>.<random>.tmp``). After a successful write, the
    temp files of the same target whose writer was a process of this host that no longer runs (killed mid-write)
    are removed; those of live writers (another process saving the same cache entry at the same moment) and of
    other hosts stay.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    fsync_folder(path.parent)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if writer_is_gone(stale.name):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


HOST = socket.gethostname().replace(".", "-") or "host"
"""This host's name as temp file names carry it (no dots, so the name splits back)."""

TEMP_WRITER = re.compile(r"\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[0-9a-f]{32}\.tmp$")


def writer_is_gone(temp_name: str) -> bool:
    """Whether the temp file ``temp_name`` was written by a process of this host that no longer runs."""
    match = TEMP_WRITER.search(temp_name)
    if match is None or match["host"] != HOST:
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
