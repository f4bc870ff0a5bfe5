"""Representation Autoencoder, stage 1 (Zheng, Ma, Tong, Xie 2025, "Diffusion Transformers with
Representation Autoencoders", Sec. 3; ``bytetriper/RAE`` ``src/stage1``).

A frozen representation encoder (``zoo.encoders``: the zoo's MoCo ViT offline, or a timm ViT) gives
patch tokens; class and register tokens are dropped (``FrozenEncoder`` does it), the tokens pass a final
LayerNorm without affine, and the latent is that ``D x g x g`` token grid normalised per position and
channel with the mean and variance of the train split, buffers of the checkpoint:
``z = (LN(E(x)) - mu) / sqrt(var + eps)``. Only an MAE-style ViT decoder (``zoo.nets.vit_decoder``) is
trained, to reconstruct pixels with L1 plus an optional perceptual term in the frozen encoder's own
token space. Noise-augmented decoding: in training the decoder sees ``LN(E(x)) + sigma eps`` with
``sigma ~ U(0, tau)`` per sample (the noise is added before the latent normalisation, as in RAE's
``encode``), at inference the clean tokens.

The GAN term of the paper (0.75 x an adaptive-weight patch discriminator, switched on after some epochs)
is left out: it sharpens texture at 256 px that 8-32 px images barely have, it needs its own schedule of
warm-up and weight adaptation that short CPU runs cannot afford, and the three claims checked here
(noise augmentation, width, shift) are about the latent, not the texture of the decoder.

The autoencoder contract of the latent pipeline: ``encode(x) -> z`` (deterministic), ``decode(z) -> x``,
``latent_shape = (D, g, g)``; ``embed(x)`` is the latent averaged over positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.encoders import FrozenEncoder
from zoo.methods.base import Method
from zoo.nets.vit_decoder import ViTDecoder


def token_grid(encoder: FrozenEncoder, shape: Sequence[int]) -> tuple[int, int]:
    """``(grid side g, token dim D)`` of the patch tokens ``encoder`` gives for images of ``shape``.

    A ValueError before training if the encoder gives one vector per image (a pooled output, e.g. a
    ResNet whose last feature map is 1x1) or tokens that are no square grid.
    """
    with torch.no_grad():
        tokens, _ = encoder(torch.zeros(2, *shape))
    count, dim = tokens.shape[1], tokens.shape[2]
    grid = math.isqrt(count)
    if count < 2:
        raise ValueError(
            f"the encoder gives {count} token of dim {dim} per {list(shape)} image: its pooled output alone, no "
            "patch tokens; RAE decodes a grid of patch tokens: use a ViT (encoder=zoo encoder.ckpt=<a "
            "`method=moco net=vit` checkpoint>, or encoder=timm with a ViT name)"
        )
    if grid * grid != count:
        raise ValueError(
            f"the encoder gives {count} tokens per image, which is no square grid; RAE needs g x g patch "
            "tokens (a ViT on a square image, class and register tokens dropped)"
        )
    return grid, dim


class RAE(Method):
    """RAE stage 1: frozen ``encoder``, a ``decoder`` (``ViTDecoder`` partial) trained with L1 (+ perceptual).

    ``shape``: the pixel shape ``C, H, W``. ``decoder`` is called with the token grid, token dim, image
    side and channels. ``noise_tau``: the ``tau`` of noise-augmented decoding (0 = off).
    ``perceptual_weight``: weight of ``mean |LN(E(x_hat)) - LN(E(x))|`` (0 = L1 alone). ``eps``: added to
    the variance in the normalisation (RAE: 1e-5).
    """

    def __init__(
        self,
        encoder: FrozenEncoder | None,
        shape: Sequence[int],
        decoder: Callable[..., ViTDecoder],
        noise_tau: float = 0.8,
        perceptual_weight: float = 0.0,
        eps: float = 1e-5,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(encoder, FrozenEncoder):
            raise ValueError(
                "method=rae needs a frozen representation encoder: set encoder=zoo encoder.ckpt=<a `method=moco "
                "net=vit` checkpoint> (offline), or encoder=timm with a ViT and local weights"
            )
        if len(shape) != 3:
            raise ValueError(f"method=rae reconstructs images C, H, W; the data have shape {list(shape)}")
        if noise_tau < 0:
            raise ValueError(f"method.noise_tau={noise_tau}: the noise scale of decoder training must be >= 0 (RAE: 0.8)")
        if perceptual_weight < 0:
            raise ValueError(f"method.perceptual_weight={perceptual_weight} must be >= 0 (0: L1 alone)")
        self.shape = tuple(shape)
        self.encoder = encoder
        self.grid, self.token_dim = token_grid(encoder, self.shape)
        self.decoder = decoder(
            grid=self.grid, token_dim=self.token_dim, image_size=self.shape[1], out_channels=self.shape[0]
        )
        self.noise_tau, self.perceptual_weight, self.eps = noise_tau, perceptual_weight, eps
        self.register_buffer("latent_mean", torch.zeros(self.latent_shape))
        self.register_buffer("latent_var", torch.ones(self.latent_shape))
        self.register_buffer("stats_count", torch.zeros((), dtype=torch.long))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(D, g, g)``: token dim, then the token grid."""
        return (self.token_dim, self.grid, self.grid)

    @property
    def learnable_params(self) -> list[dict]:
        """The decoder alone; the encoder is frozen."""
        return [{"name": "decoder", "params": list(self.decoder.parameters())}]

    def tokens(self, x: Tensor) -> Tensor:
        """``LN(E(x))``: the encoder's patch tokens ``[B, N, D]`` through a LayerNorm without affine."""
        return F.layer_norm(self.encoder(x)[0], (self.token_dim,))

    def to_grid(self, tokens: Tensor) -> Tensor:
        """``[B, g*g, D]`` row-major tokens -> the latent layout ``[B, D, g, g]``."""
        return tokens.transpose(1, 2).reshape(len(tokens), *self.latent_shape)

    def to_tokens(self, z: Tensor) -> Tensor:
        """``[B, D, g, g]`` -> ``[B, g*g, D]``, the inverse of ``to_grid``."""
        return z.flatten(2).transpose(1, 2)

    def normalize(self, z: Tensor) -> Tensor:
        return (z - self.latent_mean) / torch.sqrt(self.latent_var + self.eps)

    def denormalize(self, z: Tensor) -> Tensor:
        return z * torch.sqrt(self.latent_var + self.eps) + self.latent_mean

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The normalised latent ``[B, D, g, g]`` of pixels ``x``; deterministic (no noise, in any mode)."""
        return self.normalize(self.to_grid(self.tokens(x)))

    def decode(self, z: Tensor) -> Tensor:
        """Pixels from a normalised latent ``[B, D, g, g]`` (as ``encode`` gives or a diffusion model samples)."""
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"latent of shape {tuple(z.shape)}: this RAE decodes B x {' x '.join(map(str, self.latent_shape))}"
            )
        return self.decoder(self.to_tokens(self.denormalize(z)))

    def augment(self, tokens: Tensor) -> Tensor:
        """Noise-augmented decoding (RAE Sec. 3.2): ``tokens + sigma eps``, ``sigma ~ U(0, tau)`` per sample,
        in training only; in eval mode (or with ``tau = 0``) the tokens are returned unchanged."""
        if not self.training or self.noise_tau == 0:
            return tokens
        sigma = self.noise_tau * torch.rand(len(tokens), 1, 1, device=tokens.device, dtype=tokens.dtype)
        return tokens + sigma * torch.randn_like(tokens)

    def losses(self, batch: dict) -> dict[str, Tensor]:
        x = batch["x"]
        with torch.no_grad():
            target = self.tokens(x)
        x_hat = self.decoder(self.augment(target))
        l1 = (x_hat - x).abs().mean()
        if self.perceptual_weight == 0:
            return {"loss": l1}
        perceptual = (self.tokens(x_hat) - target).abs().mean()
        return {"loss": l1 + self.perceptual_weight * perceptual, "l1": l1, "perceptual": perceptual}

    @torch.no_grad()
    def fit_stats(self, batches: Iterable[dict]) -> None:
        """Per-position, per-channel mean and (population) variance of ``LN(E(x))`` over ``batches``."""
        total = torch.zeros(self.latent_shape, dtype=torch.float64, device=self.device)
        squares, count = torch.zeros_like(total), 0
        for batch in batches:
            z = self.to_grid(self.tokens(batch["x"].to(self.device))).double()
            total += z.sum(0)
            squares += (z * z).sum(0)
            count += len(z)
        if count == 0:
            raise ValueError("the train split is empty: RAE's latent statistics need training images")
        mean = total / count
        self.latent_mean.copy_(mean)
        self.latent_var.copy_((squares / count - mean * mean).clamp_min(0))
        self.stats_count.fill_(count)

    def on_fit_start(self) -> None:
        """The latent statistics of the train split, once (a resumed run keeps those of its checkpoint)."""
        super().on_fit_start()
        if int(self.stats_count) == 0:
            self.fit_stats(self.trainer.datamodule.probe_dataloaders()[0])

    @torch.no_grad()
    def embed(self, x: Tensor, **kw) -> Tensor:
        """The normalised latent averaged over positions ``[B, D]``: the frozen encoder's pooled tokens."""
        return self.encode(x).mean(dim=(2, 3))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``, clean."""
        return self.decode(self.encode(x))
