"""The joint for loss terms on an autoencoder's latent (VA-VAE's VF loss), mirroring ``zoo.terms.base``.

The diffusion terms see a denoising step (``TermInputs``); an autoencoder's terms see one encoding:
the pixels, the latent the decoder was given, the reconstruction and the reconstruction loss. A
method with latent terms (``method.terms.<name>``) adds ``term.coefficient(inputs, value) * value``
to its loss and logs ``<stage>/<name>`` (the unweighted value) and ``<stage>/<name>_weight``. The
coefficient is ``weight`` unless a term balances itself against the reconstruction (VA-VAE's
adaptive weight); ``check`` lets a term refuse the latent it is given before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class LatentTermInputs:
    """One training batch as the autoencoder's reconstruction loss saw it.

    ``x`` the pixels ``B, C, H, W``, ``z`` the latent the decoder was given ``B, c, h, w`` (a posterior
    draw in training, its mean in evaluation), ``x_hat`` the reconstruction, ``nll`` the scalar
    reconstruction loss and ``last_layer`` the weight of the encoder's last layer (what adaptive
    weights differentiate both losses by).
    """

    batch: dict
    x: Tensor
    z: Tensor
    x_hat: Tensor
    nll: Tensor
    last_layer: Tensor


class LatentTerm(nn.Module):
    """An extra loss on the latent: ``forward(inputs: LatentTermInputs) -> scalar``."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def check(self, latent_shape: Sequence[int], data_shape: Sequence[int]) -> None:
        """Raise a ``ValueError`` if the term cannot work on latents of ``latent_shape`` of images of ``data_shape``."""

    def coefficient(self, inputs: LatentTermInputs, value: Tensor) -> Tensor:
        """The factor of ``value`` in the loss: ``weight``."""
        return torch.tensor(self.weight, device=value.device, dtype=value.dtype)

    def forward(self, inputs: LatentTermInputs) -> Tensor:
        raise NotImplementedError
