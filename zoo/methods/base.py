"""The small base class every method extends (solo-learn style).

A method implements ``losses(batch) -> {"loss": ..., **parts}``; the base logs every part under
``train/``, ``val/`` and ``test/``, builds the ``_partial_`` optimizer and scheduler from the
config over ``learnable_params`` (a list subclasses extend), and stores the run's resolved config
in every checkpoint so ``zoo.encoders`` can rebuild the module from the checkpoint alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor


class Method(L.LightningModule):
    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.run_config: dict | None = None

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer; subclasses extend this list."""
        return [{"name": "all", "params": [p for p in self.parameters() if p.requires_grad]}]

    def losses(self, batch: dict) -> dict[str, Tensor]:
        """``{"loss": total, **parts}`` for one batch dict."""
        raise NotImplementedError

    def _step(self, batch: dict, stage: str, **kw: Any) -> Tensor:
        parts = self.losses(batch, **kw)
        for name, value in parts.items():
            self.log(
                f"{stage}/{name}",
                value.detach(),
                prog_bar=name == "loss",
                on_step=stage == "train",
                on_epoch=True,
                sync_dist=stage != "train",
                batch_size=batch["x"].shape[0],
            )
        return parts["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at global step {self.global_step}; "
                "lower the learning rate, enable gradient clipping (trainer.gradient_clip_val) or check the data"
            )
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.learnable_params)
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer=optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint["zoo_config"] = self.run_config
