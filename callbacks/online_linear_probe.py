"""Online linear probe: a linear head trained on detached features alongside the model (solo-learn).

The head sees each training batch's features (``embed`` in eval mode, no gradient into the model)
and takes one step of its own Adam optimizer on the cross-entropy of the labeled samples; it is
scored on the validation batches. Head and optimizer state live in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from callbacks.features import EmbedFn, batch_xy, embed_batch, evaluating, require_embed, world


class OnlineLinearProbe(L.Callback):
    """Trains ``nn.Linear(F, num_classes)`` on detached ``embed`` features of every training batch.

    Logs ``{prefix}/train_top1`` (at train epoch end, over the epoch's labeled training samples, the
    head's predictions before each step) and ``{prefix}/val_top1`` (at validation epoch end, over the
    validation batches). The head is sized lazily from the first features, starts at zero and is
    kept identical across ranks: gradients of the global-batch mean loss are summed over ranks before
    each step; the counts behind both accuracies are summed over ranks, so the logged values are the
    same on every rank (``sync_dist=False``). Its trajectory, like the model's, depends on how the
    training batches are split across ranks. ``num_classes`` defaults to the datamodule's.
    Batches with no labeled sample (``y = -1``) are skipped; an epoch without any raises.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        embed_kwargs: Mapping[str, Any] | None = None,
        embed_fn: EmbedFn | None = None,
        prefix: str = "online_probe",
    ) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"OnlineLinearProbe: num_classes={num_classes} must be >= 2")
        if lr <= 0:
            raise ValueError(f"OnlineLinearProbe: lr={lr} must be positive")
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.embed_kwargs = dict(embed_kwargs or {})
        self.embed_fn = embed_fn
        self.prefix = prefix
        self.head: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._restored: dict[str, Any] | None = None
        self._counts = {"train": [0, 0], "val": [0, 0]}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_embed(pl_module, self.embed_fn, "OnlineLinearProbe")
        if self.num_classes is None:
            num_classes = getattr(trainer.datamodule, "num_classes", None)
            if num_classes is None:
                raise ValueError(
                    "OnlineLinearProbe needs the number of classes: pass num_classes=... or use a datamodule "
                    "with a num_classes attribute"
                )
            self.num_classes = int(num_classes)

    def _build(self, in_features: int, device: torch.device) -> nn.Linear:
        """A zero head and its optimizer (the restored state, if any), as trainable tensors even when
        first needed inside ``torch.inference_mode`` (a validation right after a resume)."""
        with torch.inference_mode(False):
            head = nn.Linear(in_features, self.num_classes).to(device)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            self.head = head
            self.optimizer = torch.optim.Adam(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            if self._restored is not None:
                head.load_state_dict(self._restored["head"])
                self.optimizer.load_state_dict(self._restored["optimizer"])
                self._restored = None
        return head

    def _features(self, pl_module: L.LightningModule, x: Tensor) -> Tensor:
        with evaluating(pl_module):
            features = embed_batch(pl_module, x, self.embed_fn, self.embed_kwargs)
        return features.detach().float()

    def _head(self, features: Tensor) -> nn.Linear:
        if self.head is None:
            in_features = self._restored["in_features"] if self._restored else features.shape[1]
            self._build(in_features, features.device)
        if self.head.in_features != features.shape[1]:
            raise ValueError(
                f"OnlineLinearProbe: the head was built for {self.head.in_features} features but embed now "
                f"returns {features.shape[1]}; the checkpoint does not match this module"
            )
        return self.head

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        x, y = batch_xy(batch)
        features = self._features(pl_module, x)
        head = self._head(features)
        y = y.to(features.device)
        keep = y >= 0
        with torch.enable_grad():
            logits = head(features[keep])
            loss_sum = F.cross_entropy(logits, y[keep], reduction="sum")
            self.optimizer.zero_grad()
            loss_sum.backward()
        counts = torch.stack([logits.argmax(1).eq(y[keep]).sum(), keep.sum()]).double()
        _, world_size = world()
        if world_size > 1:
            dist.all_reduce(counts)
            for p in head.parameters():
                dist.all_reduce(p.grad)
        self._add("train", counts)
        if counts[1] > 0:
            for p in head.parameters():
                p.grad /= counts[1].to(p.grad)
            self.optimizer.step()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        correct, total = self._counts["train"]
        self._counts["train"] = [0, 0]
        if total == 0:
            raise ValueError(
                "OnlineLinearProbe needs labels: no training sample of this epoch had a label (all y = -1); "
                "train on labeled data or drop the online probe"
            )
        pl_module.log(f"{self.prefix}/train_top1", correct / total, sync_dist=False)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.head is None and self._restored is None:
            return
        x, y = batch_xy(batch)
        features = self._features(pl_module, x)
        head = self._head(features)
        y = y.to(features.device)
        keep = y >= 0
        with torch.no_grad():
            correct = head(features[keep]).argmax(1).eq(y[keep]).sum()
        self._add("val", torch.stack([correct, keep.sum()]))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        counts = torch.tensor(self._counts["val"], dtype=torch.float64, device=pl_module.device)
        self._counts["val"] = [0, 0]
        _, world_size = world()
        if world_size > 1:
            dist.all_reduce(counts)
        if trainer.sanity_checking or counts[1] == 0:
            return
        pl_module.log(f"{self.prefix}/val_top1", (counts[0] / counts[1]).item(), sync_dist=False)

    def _add(self, split: str, counts: Tensor) -> None:
        """Counters are plain ints: tensors made in ``__init__`` would be shared by ddp_spawn's processes."""
        correct, total = counts.tolist()
        self._counts[split] = [self._counts[split][0] + int(correct), self._counts[split][1] + int(total)]

    def state_dict(self) -> dict[str, Any]:
        if self.head is None:
            return dict(self._restored or {})
        return {
            "in_features": self.head.in_features,
            "num_classes": self.head.out_features,
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self.head, self.optimizer = None, None
        self.num_classes = state_dict["num_classes"]
        self._restored = dict(state_dict)
