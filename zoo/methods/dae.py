"""The tied ReLU denoising autoencoder of the memorization study.

Zhang, Li, Li, Shi, Wu, Tao, Qu, "Generalization of diffusion models arises from representation"
(ICLR 2026, arXiv 2512.20963), Sec. 3: ``f(x) = W2 [W1^T x]_+`` with a tied decoder ``W2 = W1``,
trained with the MSE denoising loss ``E ||f(x + sigma eps) - x||^2`` at one noise level ``sigma``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.methods.base import Method


class DAE(Method):
    """One-hidden-layer bias-free ReLU DAE on flattened inputs; ``embed`` is the hidden code.

    ``center=True`` subtracts the per-pixel mean of the training split (computed at fit start)
    before encoding and adds it back after decoding, so the weights see the digits' strokes rather
    than their shared background.
    """

    def __init__(
        self,
        shape: Sequence[int],
        hidden: int = 100,
        sigma: float = 0.2,
        tied: bool = True,
        center: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if sigma <= 0:
            raise ValueError(f"method.sigma={sigma}: the denoising noise level must be positive")
        dim = math.prod(shape)
        self.shape = tuple(shape)
        self.sigma = sigma
        self.center = center
        self.encoder = nn.Linear(dim, hidden, bias=False)
        nn.init.normal_(self.encoder.weight, std=1 / math.sqrt(dim))
        self.decoder = None if tied else nn.Linear(hidden, dim, bias=False)
        self.register_buffer("mean", torch.zeros(dim))

    def on_fit_start(self) -> None:
        if self.center and self.trainer.datamodule is not None:
            x, _ = self.trainer.datamodule.train_tensor()
            self.mean.copy_(x.flatten(1).mean(0).to(self.mean))

    @property
    def weight(self) -> Tensor:
        """Encoder rows ``W1^T`` (hidden x input dim), the quantity the memorization study inspects."""
        return self.encoder.weight

    def embed(self, x: Tensor, **kw) -> Tensor:
        return F.relu(self.encoder(x.flatten(1) - self.mean))

    def forward(self, x: Tensor) -> Tensor:
        code = self.embed(x)
        flat = F.linear(code, self.encoder.weight.t()) if self.decoder is None else self.decoder(code)
        return (flat + self.mean).view(-1, *self.shape)

    def losses(self, batch: dict) -> dict[str, Tensor]:
        x = batch["x"]
        noisy = x + self.sigma * torch.randn_like(x)
        return {"loss": F.mse_loss(self(noisy), x)}
