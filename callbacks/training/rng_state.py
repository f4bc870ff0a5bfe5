"""Random number generator states in checkpoints, so that a resumed run draws what an unbroken one draws.

Lightning saves weights, optimizers, schedulers, loops and callback states, but not the RNGs: after a
resume, noise, dropout and augmentations would come from freshly seeded generators. ``RNGState`` puts
Python's, NumPy's and torch's (CPU and every CUDA device) generator states of every rank in the
checkpoint and sets them back at the start of the first training epoch (or batch) after the restore,
after Lightning's sanity check has drawn whatever it draws.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from callbacks.features import gather_objects, world


def collect_rng_states() -> dict[str, Any]:
    """This process's generator states: ``python``, ``numpy``, ``torch`` and ``cuda`` (one per device).

    Only tensors and plain Python values, so ``torch.load(weights_only=True)`` reads them back.
    """
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), position, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``collect_rng_states`` returned (CUDA states only where this process sees CUDA)."""
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGState(L.Callback):
    """Checkpoints the RNG states of every rank and restores them when training resumes.

    ``state_dict`` gathers the states of all ranks (Lightning builds the checkpoint on every rank, so
    the gather is collective); after ``load_state_dict`` each rank takes its own state back at the first
    ``on_train_epoch_start`` or ``on_train_batch_start``. A checkpoint from a different world size is
    restored without RNG states, with a warning.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"ranks": gather_objects(collect_rng_states())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict["ranks"]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._pending is None:
            return
        states, self._pending = self._pending, None
        rank, world_size = world()
        if len(states) != world_size:
            rank_zero_warn(
                f"RNGState: the checkpoint holds RNG states of {len(states)} ranks but this run has {world_size}; "
                "training continues with the generators as seeded now (resume with the same world size for an "
                "exact continuation)"
            )
            return
        set_rng_states(states[rank])
