"""No checkpoint of diverged weights: a run whose weights went NaN/inf stops instead of saving them.

A non-finite loss is caught in the training step, but one finite loss with an exploding gradient can
leave infinite weights behind, and the next epoch-end checkpoint would overwrite ``last.ckpt`` (the last
good state) with them. ``FiniteCheckpoint`` checks the module's parameters before every checkpoint is
written and raises instead, so the previous checkpoint stays on disk.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


def non_finite_parameters(module: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters of ``module`` holding a NaN or an infinity."""
    return [
        name
        for name, param in module.named_parameters()
        if param.is_floating_point() and not bool(torch.isfinite(param.detach()).all())
    ]


class FiniteCheckpoint(L.Callback):
    """Raises ``FloatingPointError`` (naming the global step and the first bad parameters) rather than
    let a checkpoint of non-finite weights be written. The decision is reduced over ranks, so every
    rank raises together (sharded parameters differ between ranks)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = non_finite_parameters(pl_module)
        if trainer.strategy.reduce_boolean_decision(not bad, all=True):
            return
        raise FloatingPointError(
            f"non-finite weights at global step {trainer.global_step} ({', '.join(bad[:3]) or 'on another rank'}): "
            "the checkpoint was not written and the last good one is kept; lower the learning rate or "
            "enable gradient clipping (trainer.gradient_clip_val)"
        )
