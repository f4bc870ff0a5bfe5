"""A KL-regularised autoencoder (Kingma & Welling 2014; LDM's KL-f* recipe, Rombach et al. CVPR 2022, Sec. 3
and App. G) and, with the VF loss term, VA-VAE (Yao, Yang & Wang, CVPR 2025): ``method=vae``, ``method=vavae``.

The loss (``vavae/ldm/modules/losses/contperceptual.py``, summed over pixels and latent dims per image,
averaged over the batch):

``L = sum(|x - x̂| + p * P(x, x̂)) / e^s + s * numel(x)  +  kl_weight * KL(q(z|x) || N(0, I))  +  sum_k c_k L_k``

with ``s`` the log-variance (learned with ``learn_logvar``, else 0), ``P`` an optional perceptual
distance (the mean squared difference of a frozen encoder's tokens, weight ``perceptual_weight``;
LPIPS needs weights this offline zoo does not have) and ``L_k`` the latent terms
(``zoo.terms.latent``: VA-VAE's VF loss with its adaptive coefficient). The decoder sees a posterior
draw in training and the posterior mean in evaluation, so ``val/rec_mse`` is the error of
``decode(encode(x))``.

The PatchGAN term of LDM and VA-VAE (from step 5001 in VA-VAE) is left out: its discriminator doubles
the cost of a step and needs thousands of steps to help, which the CPU budget of the zoo's studies
does not have; on 8-16 px digits the L1 reconstruction is already sharp.

This is an autoencoder in the sense of ``zoo.autoencoder``: ``encode`` (posterior mean), ``decode``,
``latent_shape``; ``embed`` pools the latent over positions so every probe runs on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from zoo.encoders import FrozenEncoder
from zoo.methods.base import Method
from zoo.terms.latent import LatentTerm, LatentTermInputs


class VAE(Method):
    """``net`` an ``AutoencoderKL`` (``zoo.nets.vae.autoencoder_kl``) trained on images of ``shape``."""

    def __init__(
        self,
        net: nn.Module,
        shape: Sequence[int],
        kl_weight: float = 1e-6,
        learn_logvar: bool = False,
        logvar_init: float = 0.0,
        perceptual_weight: float = 0.0,
        perceptual_encoder: FrozenEncoder | None = None,
        terms: dict[str, LatentTerm] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.shape = tuple(shape)
        if len(self.shape) != 3:
            raise ValueError(f"method=vae encodes images C, H, W, but the data have shape {list(self.shape)}; use image data")
        if kl_weight < 0 or perceptual_weight < 0:
            raise ValueError(
                f"method.kl_weight={kl_weight}, method.perceptual_weight={perceptual_weight}: weights must be >= 0"
            )
        if perceptual_weight > 0 and perceptual_encoder is None:
            raise ValueError(
                f"method.perceptual_weight={perceptual_weight} needs method.perceptual_encoder "
                "(e.g. method.perceptual_encoder=${encoder} with encoder=zoo encoder.ckpt=...), or set it to 0"
            )
        self.net = net
        self.kl_weight = float(kl_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual_encoder = perceptual_encoder
        logvar = torch.tensor(float(logvar_init))
        if learn_logvar:
            self.logvar = nn.Parameter(logvar)
        else:
            self.register_buffer("logvar", logvar)
        with torch.no_grad():
            self.latent_shape = tuple(self.encode(torch.zeros(1, *self.shape)).shape[1:])
        self.terms = nn.ModuleDict(dict((terms or {}).items()))
        for name, term in self.terms.items():
            if name in ("loss", "nll", "kl", "rec_l1", "rec_mse", "logvar", "perceptual"):
                raise ValueError(f"method.terms.{name}: the name is taken by a part of the loss; rename the term")
            if not isinstance(term, LatentTerm):
                raise ValueError(
                    f"method.terms.{name} is a {type(term).__name__}, not a zoo.terms.latent.LatentTerm "
                    "(forward(inputs: LatentTermInputs) -> scalar)"
                )
            term.check(self.latent_shape, self.shape)

    @property
    def last_layer(self) -> Tensor:
        """The weight of the encoder's last layer (``conv_out``): where adaptive weights compare gradients."""
        return self.net.encoder.conv_out.weight

    def posterior(self, x: Tensor):
        return self.net.encode(x).latent_dist

    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean of ``x`` (pixels in [-1, 1]): the deterministic latent."""
        return self.posterior(x).mean

    def decode(self, z: Tensor) -> Tensor:
        return self.net.decode(z).sample

    @torch.no_grad()
    def embed(self, x: Tensor, **kw) -> Tensor:
        """The latent (posterior mean) averaged over positions: ``B, C``."""
        return self.encode(x).mean(dim=(2, 3))

    def perceptual(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Per image: the mean squared difference of the frozen encoder's tokens of ``x`` and ``x̂``."""
        with torch.no_grad():
            target, _ = self.perceptual_encoder(x)
        tokens, _ = self.perceptual_encoder(x_hat)
        return (tokens - target).pow(2).mean(dim=(1, 2))

    def losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        x = batch["x"]
        n = x.shape[0]
        posterior = self.posterior(x)
        z = posterior.mean
        if self.training:
            z = z + posterior.std * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        x_hat = self.decode(z)
        error = (x - x_hat).abs()
        parts: dict[str, Tensor] = {}
        if self.perceptual_weight > 0:
            distance = self.perceptual(x, x_hat)
            parts["perceptual"] = distance.mean()
            error = error + self.perceptual_weight * distance.view(-1, 1, 1, 1)
        nll = (error / self.logvar.exp() + self.logvar).sum() / n
        kl = posterior.kl().sum() / n
        loss = nll + self.kl_weight * kl
        parts.update(
            nll=nll, kl=kl, rec_l1=(x - x_hat).abs().mean(), rec_mse=(x - x_hat).pow(2).mean(), logvar=self.logvar
        )
        if self.terms:
            inputs = LatentTermInputs(batch, x, z, x_hat, nll, self.last_layer)
            for name, term in self.terms.items():
                value = term(inputs)
                coefficient = term.coefficient(inputs, value)
                parts[name], parts[f"{name}_weight"] = value, coefficient
                loss = loss + coefficient * value
        return {"loss": loss, **{name: value.detach() for name, value in parts.items()}}
