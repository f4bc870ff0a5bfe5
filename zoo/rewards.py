"""Guidance with SSL information: a frozen encoder's reward steers sampling, by gradient or best-of-N.

``PrototypeReward`` is the image form of WMReward (Yuan et al. 2026): the cosine between a frozen
encoder's pooled feature of a sample and the mean feature (prototype) of one class of the training
split. ``RewardGuidance`` applies it: gradient guidance on x̂ (``zoo.diffusion.reward_guided``,
universal guidance, Bansal et al. 2023, Eq. 6) with ``scale``, and best-of-N selection
(``zoo.diffusion.best_of_n``) with ``best_of``. Chosen in config with ``guidance=prototype``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.diffusion import cosine_reward


def pooled(encoder: nn.Module, x: Tensor) -> Tensor:
    """The encoder's pooled feature ``[B, F]``: ``zoo.encoders`` return ``(tokens, pooled)``, other nets ``[B, F]``."""
    out = encoder(x)
    return (out[1] if isinstance(out, tuple) else out).flatten(1)


class PrototypeReward(nn.Module):
    """``r(x) = cos(encoder(x), mean of encoder(x_i) over train images of target_class)``, per sample [B].

    The prototype is computed by ``fit_to(datamodule)`` from the datamodule's clean training split
    (its ``probe_dataloaders``); it is a buffer, so a checkpoint keeps it.
    """

    def __init__(self, encoder: nn.Module | None, target_class: int) -> None:
        super().__init__()
        if encoder is None:
            raise ValueError(
                "guidance=prototype needs a frozen encoder for its reward: pass encoder=zoo "
                "encoder.ckpt=<a MoCo run's checkpoints/last.ckpt> (or encoder=timm with local weights)"
            )
        if target_class < 0:
            raise ValueError(f"guidance.reward.target_class={target_class}: give a class index >= 0")
        self.encoder = encoder.requires_grad_(False)
        self.target_class = target_class
        self.register_buffer("prototype", torch.empty(0))

    @torch.no_grad()
    def fit_to(self, datamodule) -> None:
        """The prototype: the mean pooled feature of ``target_class`` on the training split."""
        loader = datamodule.probe_dataloaders()[0]
        total, count = None, 0
        device = next(iter(self.buffers())).device
        for batch in loader:
            keep = batch["y"] == self.target_class
            if not bool(keep.any()):
                continue
            x = batch["x"][keep].to(device)
            try:
                features = pooled(self.encoder, x)
            except (RuntimeError, ValueError) as error:
                raise ValueError(
                    f"guidance.reward.encoder cannot encode the data's images of shape {list(x.shape[1:])}: {error}; "
                    "use an encoder built for this image size and channel count (e.g. encoder=zoo with a "
                    "checkpoint trained on the same data)"
                ) from None
            total = features.sum(0) if total is None else total + features.sum(0)
            count += len(x)
        if count == 0:
            raise ValueError(
                f"guidance.reward.target_class={self.target_class}: no training image has that label; "
                f"the data have classes 0..{datamodule.num_classes - 1}"
            )
        self.prototype = total / count

    def forward(self, x: Tensor) -> Tensor:
        if self.prototype.numel() == 0:
            raise RuntimeError("PrototypeReward has no prototype yet: call fit_to(datamodule) first")
        return cosine_reward(lambda images: pooled(self.encoder, images), self.prototype)(x)


class RewardGuidance(nn.Module):
    """Sampling-time guidance by ``reward``: gradient guidance with ``scale`` (0: off) and/or
    best-of-``best_of`` selection (1: off)."""

    def __init__(self, reward: nn.Module, scale: float = 0.0, best_of: int = 1) -> None:
        super().__init__()
        if scale < 0:
            raise ValueError(f"guidance.scale={scale}: the reward-gradient scale must be >= 0 (0 turns it off)")
        if best_of < 1:
            raise ValueError(f"guidance.best_of={best_of}: keep the best of at least 1 candidate (1 turns it off)")
        self.reward, self.scale, self.best_of = reward, float(scale), int(best_of)

    def fit_to(self, datamodule) -> None:
        if hasattr(self.reward, "fit_to"):
            self.reward.fit_to(datamodule)
