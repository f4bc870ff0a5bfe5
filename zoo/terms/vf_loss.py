"""VA-VAE's vision-foundation alignment loss (Yao, Yang & Wang, CVPR 2025, Sec. 3.2; specs: alignment.md §2).

The latent ``z`` (``B, c, h, w``) is projected by ``W``, a 1x1 convolution without bias, to the frozen
encoder's feature dim: ``z' = W z``; ``f`` are the encoder's features of the same images on the same
``h x w`` grid. With ``i, j`` the positions of one image:

- marginal cosine similarity: ``L_mcos = mean_i ReLU(1 - m1 - cos(z'_i, f_i))``;
- marginal distance matrix: ``L_mdms = mean_{i,j} ReLU(|cos(z'_i, z'_j) - cos(f_i, f_j)| - m2)``
  (the projected latent on both sides, as ``vavae/ldm/modules/losses/contperceptual.py``);
- adaptive weight ``w = ||grad L_rec|| / (||grad L_vf|| + 1e-4)``, both gradients taken on the
  encoder's last layer, clamped to ``[0, max_adaptive_weight]`` and detached; the loss adds
  ``weight * w * (L_mcos + L_mdms)``. Without a graph (evaluation) ``w`` is 1.

Grids: the encoder's feature map (of a chosen ``stage``) must be a square ``g x g`` grid. ``g = h`` is
used as is; ``g`` a multiple of ``h`` is average-pooled to ``h``; ``h`` a multiple of ``g`` pools the
latent to ``g`` instead. ``input_size`` resizes the images before the encoder (VA-VAE resizes to
DINOv2's 224 px so its 16 x 16 tokens meet the f16 latent): any other grid is refused at
construction, naming the fix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.encoders import FrozenEncoder
from zoo.terms.latent import LatentTerm, LatentTermInputs


def marginal_cosine(z: Tensor, f: Tensor, m1: float) -> Tensor:
    """``mean ReLU(1 - m1 - cos(z_i, f_i))`` over images and positions of ``z, f`` (``B, D, h, w``)."""
    return F.relu(1 - m1 - F.cosine_similarity(z, f, dim=1)).mean()


def cosine_matrix(x: Tensor) -> Tensor:
    """``cos(x_i, x_j)`` over the positions of each image: ``B, D, h, w`` -> ``B, hw, hw``."""
    unit = F.normalize(x.flatten(2), dim=1)
    return unit.transpose(1, 2) @ unit


def marginal_distance_matrix(z: Tensor, f: Tensor, m2: float) -> Tensor:
    """``mean_{i,j} ReLU(|cos(z_i, z_j) - cos(f_i, f_j)| - m2)`` over images and position pairs."""
    return F.relu((cosine_matrix(z) - cosine_matrix(f)).abs() - m2).mean()


def adaptive_weight(reconstruction: Tensor, alignment: Tensor, last_layer: Tensor, maximum: float) -> Tensor:
    """``clamp(||d rec / d W|| / (||d vf / d W|| + 1e-4), 0, maximum)``, detached (VA-VAE's ``vf_weight``)."""
    (rec_grad,) = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)
    (vf_grad,) = torch.autograd.grad(alignment, last_layer, retain_graph=True, allow_unused=True)
    vf_norm = torch.zeros((), device=rec_grad.device) if vf_grad is None else vf_grad.norm()
    return (rec_grad.norm() / (vf_norm + 1e-4)).clamp(0.0, maximum).detach()


class VFLoss(LatentTerm):
    """``L_mcos + L_mdms`` between ``W z`` and a frozen encoder's grid features; see the module docstring.

    ``stage`` picks the encoder's feature map (``FrozenEncoder.feature_map``: a ResNet's 1-4, a ViT's
    block; None = the last), ``input_size`` the side the images are resized to before it. ``W`` is built
    by ``check``, which the autoencoder calls at construction with its latent and pixel shapes.
    """

    def __init__(
        self,
        encoder: FrozenEncoder,
        weight: float = 0.1,
        m1: float = 0.5,
        m2: float = 0.25,
        adaptive: bool = True,
        max_adaptive_weight: float = 1e8,
        stage: int | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__(weight)
        if not isinstance(encoder, FrozenEncoder):
            raise ValueError(
                f"method.terms.vf.encoder is a {type(encoder).__name__}; the VF loss aligns to a frozen encoder: "
                "pass encoder=zoo encoder.ckpt=<moco last.ckpt> (or encoder=timm)"
            )
        self.encoder = encoder
        self.m1, self.m2 = float(m1), float(m2)
        self.adaptive = adaptive
        self.max_adaptive_weight = float(max_adaptive_weight)
        self.stage = stage
        self.input_size = input_size
        self.proj: nn.Conv2d | None = None

    def features(self, x: Tensor) -> Tensor:
        """The encoder's feature map of ``x``: ``B, D, g, g``."""
        size = None if self.input_size is None else (self.input_size, self.input_size)
        with torch.no_grad():
            return self.encoder.feature_map(x, stage=self.stage, input_size=size)

    def check(self, latent_shape: Sequence[int], data_shape: Sequence[int]) -> None:
        """Build ``W`` for latents of ``latent_shape``; refuse an encoder grid that cannot meet the latent grid."""
        channels, height, width = latent_shape
        features = self.features(torch.zeros(1, *data_shape))
        side = features.shape[-1]
        if height != width or features.shape[-2] != side or not (side % height == 0 or height % side == 0):
            size = self.input_size or data_shape[-1]
            raise ValueError(
                f"method.terms.vf: the encoder's {features.shape[-2]}x{side} feature grid (stage {self.stage}, images "
                f"at {size} px) cannot be matched to the {height}x{width} latent grid (one side must be a multiple "
                f"of the other); set method.terms.vf.stage to an earlier stage (a finer grid), or "
                f"method.terms.vf.input_size to a size whose grid is a multiple of {height} (the grid scales with "
                "the input), or change the latent's downsampling (method.net.block_out_channels)"
            )
        self.proj = nn.Conv2d(channels, features.shape[1], kernel_size=1, bias=False)

    def forward(self, inputs: LatentTermInputs) -> Tensor:
        if self.proj is None:
            raise RuntimeError("VFLoss.check(latent_shape, data_shape) builds the projection; call it first")
        f = self.features(inputs.x)
        z = self.proj(inputs.z)
        if f.shape[-1] > z.shape[-1]:
            f = F.adaptive_avg_pool2d(f, z.shape[-2:])
        elif z.shape[-1] > f.shape[-1]:
            z = F.adaptive_avg_pool2d(z, f.shape[-2:])
        return marginal_cosine(z, f, self.m1) + marginal_distance_matrix(z, f, self.m2)

    def coefficient(self, inputs: LatentTermInputs, value: Tensor) -> Tensor:
        """``weight * w``: the adaptive ``w`` where both losses have a graph to the encoder's last layer, else 1."""
        scale = super().coefficient(inputs, value)
        if self.adaptive and value.requires_grad and inputs.nll.requires_grad:
            scale = scale * adaptive_weight(inputs.nll, value, inputs.last_layer, self.max_adaptive_weight)
        return scale
