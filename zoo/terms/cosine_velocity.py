"""LightningDiT's cosine-velocity term as a loss term of the diffusion method."""

from __future__ import annotations

from torch import Tensor

from zoo.diffusion.losses import cosine_velocity_loss
from zoo.terms.base import LossTerm, TermInputs


class CosineVelocity(LossTerm):
    """``mean(1 - cos(v_hat, v))`` over the batch (Yao et al. 2025, LightningDiT, Sec. 4.1): the
    direction of the predicted path velocity against the true one, whatever the net predicts."""

    def forward(self, inputs: TermInputs) -> Tensor:
        return cosine_velocity_loss(inputs.predicted("v"), inputs.target("v")).mean()
