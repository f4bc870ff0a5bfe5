"""The small base class every method extends (solo-learn style).

A method implements ``losses(batch) -> {"loss": ..., **parts}``; the base logs every part under
``train/``, ``val/`` and ``test/``, builds the ``_partial_`` optimizer and scheduler from the
config over ``learnable_params`` (a list subclasses extend), moves the target network of every
pair in ``momentum_pairs`` (another list subclasses extend: MoCo's key encoder, a consistency
model's target) toward its online network once per optimizer step, and stores the run's resolved
config and ``CHECKPOINT_FORMAT`` in every checkpoint so ``zoo.loading.load_method`` can rebuild the
module from the checkpoint alone.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from zoo.loading import CHECKPOINT_FORMAT
from zoo.methods.momentum import MOMENTUM_SCHEDULES, check_pairs, ema_update, scheduled_momentum


class Method(L.LightningModule):
    """The base of every method; ``momentum`` and ``momentum_schedule`` matter only with ``momentum_pairs``.

    ``momentum`` is ``m`` (constant) or ``m0`` (cosine) of ``zoo.methods.momentum``; a subclass with
    momentum pairs passes them to this constructor, one without ignores them. The update after the
    ``k``-th optimizer step uses ``m(k)``, ``k = 1 .. K``, with ``K = total_steps`` set at train start
    (the run's optimizer steps), so the cosine schedule's last update has ``m = 1``.
    """

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        momentum: float | None = None,
        momentum_schedule: str = "constant",
    ) -> None:
        super().__init__()
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"method.momentum={momentum}: the target networks' momentum must lie in [0, 1]")
        if momentum_schedule not in MOMENTUM_SCHEDULES:
            raise ValueError(
                f"method.momentum_schedule={momentum_schedule!r}: choose one of {', '.join(MOMENTUM_SCHEDULES)}"
            )
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.momentum = momentum
        self.momentum_schedule = momentum_schedule
        self.total_steps = 1
        self._momentum_step = 0
        self.run_config: dict | None = None
        self._nonfinite: Tensor | None = None

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer; subclasses extend this list."""
        return [{"name": "all", "params": [p for p in self.parameters() if p.requires_grad]}]

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(online, target)`` pairs whose target follows its online module by EMA; subclasses extend this list."""
        return []

    def current_momentum(self) -> float:
        """The momentum after ``global_step`` of ``total_steps`` optimizer steps, on ``momentum_schedule``."""
        return scheduled_momentum(self.momentum_schedule, self.momentum, self.global_step, self.total_steps)

    def momentum_update(self, m: float) -> None:
        """``target <- m target + (1 - m) online`` over the parameters of every momentum pair."""
        ema_update(self.momentum_pairs, m)

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
                batch_size=len(batch["y"]),
            )
        return parts["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        self._stop_if_nonfinite(loss)
        return loss

    def _stop_if_nonfinite(self, loss: Tensor) -> None:
        """Stop the run at a non-finite loss. On the CPU each step's loss is read. On an accelerator reading it would
        make the host wait for the device every step, so a flag on the device gathers the steps' and is read every
        ``trainer.log_every_n_steps`` steps, where Lightning reads the logged values anyway."""
        nonfinite = ~torch.isfinite(loss.detach())
        if reads_loss_every_step(loss.device):
            if nonfinite:
                raise FloatingPointError(nonfinite_message(f"{loss.item()} at global step {self.global_step}"))
            return
        self._nonfinite = nonfinite if self._nonfinite is None else self._nonfinite | nonfinite
        every = self.trainer.log_every_n_steps
        if (self.global_step + 1) % every == 0:
            flag, self._nonfinite = self._nonfinite, None
            if flag:
                first = max(0, self.global_step + 1 - every)
                raise FloatingPointError(nonfinite_message(f"at a global step from {first} to {self.global_step}"))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val", **self._evaluation_noise(batch_idx))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test", **self._evaluation_noise(batch_idx))

    def _evaluation_noise(self, index: int) -> dict[str, torch.Generator]:
        """A method whose ``losses`` draws noise (takes ``generator=``) gets the same noise for batch
        ``index`` at every evaluation, so val/loss is comparable across epochs."""
        if "generator" not in inspect.signature(self.losses).parameters:
            return {}
        return {"generator": torch.Generator(device=self.device).manual_seed(index)}

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.learnable_params)
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer=optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        """Check the momentum pairs and count the optimizer steps of the run for the cosine schedule."""
        pairs = self.momentum_pairs
        self._momentum_step = self.global_step
        if not pairs:
            return
        if self.momentum is None:
            raise ValueError(
                f"{type(self).__name__} has momentum pairs but no momentum: set method.momentum (0 to 1)"
            )
        check_pairs(pairs)
        total = self.trainer.estimated_stepping_batches
        if self.momentum_schedule == "cosine" and not math.isfinite(total):
            raise ValueError(
                f"{type(self).__name__}'s cosine momentum schedule needs a finite run: set trainer.max_epochs "
                "or trainer.max_steps"
            )
        self.total_steps = max(1, int(total)) if math.isfinite(total) else 1

    def on_train_batch_end(self, outputs: object, batch: dict, batch_idx: int) -> None:
        """Move the momentum targets once per optimizer step: only after a batch that stepped the optimizer.

        ``global_step`` counts optimizer steps, so a batch that only accumulated gradients leaves it, and
        the targets, unchanged; subclasses that override this hook call ``super()``.
        """
        if self.global_step > self._momentum_step and self.momentum_pairs:
            self.momentum_update(self.current_momentum())
        self._momentum_step = self.global_step

    def datamodule(self) -> Any | None:
        """The trainer's datamodule, or None outside a trainer (a method loaded from its checkpoint)."""
        return getattr(getattr(self, "_trainer", None), "datamodule", None)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["zoo_version"] = CHECKPOINT_FORMAT
        if self.run_config is not None:
            checkpoint["zoo_config"] = self.run_config


def reads_loss_every_step(device: torch.device) -> bool:
    """Whether a step's loss is read on the host at once: on the CPU it is there already."""
    return device.type == "cpu"


def nonfinite_message(where: str) -> str:
    return (
        f"non-finite training loss {where}; lower the learning rate, enable gradient clipping "
        "(trainer.gradient_clip_val) or check the data"
    )
