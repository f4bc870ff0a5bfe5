"""Diffusion and flow models with any schedule, prediction target and loss space.

The math lives in ``zoo.diffusion`` (schedules, conversions, losses, time samplers, samplers,
guidance); this module only wires it to a net: ``denoise(z, t) -> x̂`` is the one function every
sampler, probe and metric uses. JiT (Li & He, arXiv 2511.13720) is this class with a pixel ViT,
x-prediction, v-loss and logit-normal time: a config, not a subclass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zoo.diffusion import (
    PredictAndPerturb,
    Schedule,
    classifier_free,
    convert,
    denoising_loss,
    sample,
    validate,
)
from zoo.methods.base import Method

SAMPLER_DEFAULTS = {
    "name": "heun",
    "steps": 32,
    "eta": 0.0,
    "shift": 1.0,
    "guidance": 1.0,
    "interval": (0.0, 1.0),
    "refine_k": 0,
    "refine_tau": 0.2,
    "refine_fraction": 0.25,
}


class Diffusion(Method):
    """A denoiser ``net(c_in z, c_noise t, y)`` trained with ``denoising_loss`` on ``z = a x + b ε``.

    ``prediction`` is what the net outputs (x, eps or v), ``loss_space`` where the loss is
    measured; ``min_b`` and ``min_a`` clamp b(t) and a(t) from below in the conversions (JiT's
    1 - t >= 0.05 is ``min_b=0.05`` on the linear flow).
    ``label_dropout`` replaces labels by the null class for classifier-free guidance when the net is
    class-conditional (``net.num_classes > 0``). ``sampler`` holds the defaults of ``sample``;
    ``embed_t``/``embed_layer`` those of ``embed``.
    """

    def __init__(
        self,
        net: nn.Module,
        shape: Sequence[int],
        schedule: Schedule,
        time_sampler: Callable[..., Tensor],
        prediction: str = "v",
        loss_space: str = "v",
        min_b: float = 0.0,
        min_a: float = 0.0,
        label_dropout: float = 0.1,
        sampler: dict[str, Any] | None = None,
        embed_t: float = 0.9,
        embed_layer: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.shape = tuple(shape)
        self.schedule = schedule
        self.time_sampler = time_sampler
        self.prediction, self.loss_space = prediction, loss_space
        self.min_b, self.min_a = min_b, min_a
        self.num_classes = int(getattr(net, "num_classes", 0))
        self.label_dropout = label_dropout
        self.sampler = {**SAMPLER_DEFAULTS, **(sampler or {})}
        self.embed_t, self.embed_layer = embed_t, embed_layer
        validate(prediction, loss_space, schedule, *time_sampler.support, min_b, min_a)
        self._check_guidance(self.sampler["guidance"])

    def _check_guidance(self, scale: float) -> None:
        if scale != 1.0 and self.num_classes == 0:
            raise ValueError(
                f"method.sampler.guidance={scale} needs a class-conditional net, but the net is unconditional; "
                "set net.num_classes=${num_classes} (or guidance 1.0)"
            )

    def labels(self, y: Tensor | None, n: int, drop: float = 0.0) -> Tensor | None:
        """Labels for the net: the null class (index ``num_classes``) where unlabeled or dropped."""
        if self.num_classes == 0:
            return None
        null = torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)
        if y is None:
            return null
        keep = (y >= 0) & (torch.rand(n, device=y.device) >= drop)
        return torch.where(keep, y, null)

    def net_output(self, z: Tensor, t: Tensor, y: Tensor | None, return_hidden: bool = False) -> Any:
        scale = self.schedule.c_in(t).view(-1, *[1] * (z.dim() - 1))
        return self.net(scale * z, self.schedule.c_noise(t), y, return_hidden=return_hidden)

    def denoise(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The clean estimate x̂(z, t): the one function samplers, probes and metrics use."""
        out = self.net_output(z, t, y)
        return convert(out, self.prediction, "x", z, t, self.schedule, self.min_b, self.min_a)

    def losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        x = batch["x"]
        n = x.shape[0]
        t = self.time_sampler(n, generator=generator, device=x.device).to(x.dtype)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = self.schedule.noise(x, t, eps)
        y = self.labels(batch.get("y"), n, self.label_dropout if self.training else 0.0)
        out = self.net_output(z, t, y)
        loss = denoising_loss(
            out, self.prediction, self.loss_space, x, eps, t, self.schedule, self.min_b, self.min_a
        )
        return {"loss": loss.mean()}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val", generator=self._seeded(batch_idx))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test", generator=self._seeded(batch_idx))

    def _seeded(self, index: int) -> torch.Generator:
        """Same noise and times for every evaluation, so val/loss is comparable across epochs."""
        return torch.Generator(device=self.device).manual_seed(index)

    @torch.no_grad()
    def sample(
        self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **overrides: Any
    ) -> Tensor:
        """``n`` samples in [-1, 1]-scale data space; ``overrides`` change the sampler defaults.

        With a conditional net, ``y`` defaults to classes ``0..n-1 mod num_classes``; guidance > 1
        applies classifier-free guidance inside ``interval`` (t in (lo, hi)).
        """
        options = {**self.sampler, **overrides}
        self._check_guidance(options["guidance"])
        if self.num_classes and y is None:
            y = torch.arange(n, device=self.device) % self.num_classes
        cond = self.labels(y, n)

        def denoise_cond(z: Tensor, t: Tensor) -> Tensor:
            return self.denoise(z, t, cond)

        denoise = denoise_cond
        if options["guidance"] != 1.0:

            def denoise_uncond(z: Tensor, t: Tensor) -> Tensor:
                return self.denoise(z, t, self.labels(None, n))

            denoise = classifier_free(denoise_cond, denoise_uncond, options["guidance"], tuple(options["interval"]))
        refine = None
        if options["refine_k"] > 0:
            refine = PredictAndPerturb(
                schedule=self.schedule,
                k=options["refine_k"],
                tau=options["refine_tau"],
                fraction=options["refine_fraction"],
                generator=generator,
            )
        return sample(
            denoise,
            (n, *self.shape),
            self.schedule,
            steps=options["steps"],
            sampler=options["name"],
            eta=options["eta"],
            shift=options["shift"],
            generator=generator,
            refine=refine,
            device=self.device,
        )

    @torch.no_grad()
    def embed(self, x: Tensor, t: float | Tensor | None = None, layer: int | None = None, **kw: Any) -> Tensor:
        """Pooled hidden features of the denoiser at noise level ``t`` (1 = data, 0 = noise).

        ``layer`` indexes the net's hidden blocks (default: the middle one); feature maps and
        token grids are averaged over space/tokens (DDAE, Xiang et al. ICCV 2023). The input is
        noised with fresh noise on every call.
        """
        t = self.embed_t if t is None else t
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        z = self.schedule.noise(x, t, torch.randn_like(x))
        _, hiddens = self.net_output(z, t, self.labels(None, x.shape[0]), return_hidden=True)
        index = len(hiddens) // 2 if layer is None else layer
        if not -len(hiddens) <= index < len(hiddens):
            raise ValueError(f"embed layer={layer}: the net has {len(hiddens)} hidden blocks (0..{len(hiddens) - 1})")
        hidden = hiddens[index]
        return hidden.mean(dim=1) if hidden.dim() == 3 else hidden.flatten(2).mean(-1) if hidden.dim() == 4 else hidden

