"""Diffusion and flow models with any schedule, prediction target and loss space.

The math lives in ``zoo.diffusion`` (schedules, conversions, losses, time samplers, samplers,
guidance) and the net's preconditioning in its ``Denoiser`` (``denoise(z, t) -> x̂``, the one function
every sampler, probe and metric uses); this module draws the noise, adds the config's extra loss
terms (``zoo.terms``) and wires sampling. JiT (Li & He, arXiv 2511.13720) is this class with a pixel ViT,
x-prediction, v-loss and logit-normal time: a config, not a subclass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.diffusion import (
    Denoiser,
    PredictAndPerturb,
    Schedule,
    best_of_n,
    classifier_free,
    denoising_loss,
    reward_guided,
    sample,
    validate,
)
from zoo.diffusion.sampler_options import sampler_options
from zoo.diffusion.time_samplers import Shifted, alpha_for_dim
from zoo.latent_space import LatentSpace
from zoo.methods.base import Method
from zoo.nets.embeddings import drop_labels
from zoo.rewards import RewardGuidance
from zoo.terms import LossTerm, TermInputs


class Diffusion(Method):
    """A ``Denoiser`` (net + schedule + prediction + clamps) trained with ``denoising_loss`` on ``z = a x + b ε``.

    ``prediction`` is what the net outputs (x, eps or v), ``loss_space`` where the loss is
    measured; ``min_b`` and ``min_a`` clamp b(t) and a(t) from below in the conversions (JiT's
    1 - t >= 0.05 is ``min_b=0.05`` on the linear flow).
    ``label_dropout`` replaces labels by the null class for classifier-free guidance when the net is
    class-conditional (``net.num_classes > 0``; ``zoo.nets.embeddings.drop_labels``). ``sampler`` holds the defaults of ``sample``;
    ``embed_t``/``embed_layer`` those of ``embed``. Bad settings fail at construction, before training:
    a loss undefined where the time sampler reaches (``validate``), a prediction the sampler cannot
    turn into x̂ at an end of its grid, and any bad sampler option.
    ``terms``: extra loss terms by name (``zoo.terms.LossTerm``), each added times its ``weight`` and
    logged as ``<stage>/<name>`` beside ``<stage>/denoise``; the hidden states they ask for come from
    the same forward pass as the denoising loss. ``guidance`` (``zoo.rewards.RewardGuidance``) steers
    every ``sample`` by a frozen encoder's reward: gradient guidance on x̂ and/or best-of-N.

    ``autoencoder`` (a checkpoint path checked against the pixel shape ``data_shape``, or a frozen
    autoencoder module) puts the model in its latent space (``space``, a ``zoo.latent_space.LatentSpace``;
    the identity without one): ``shape`` is then the latent shape (what the net and sampler see),
    ``data_shape`` the pixels'. ``losses`` and ``embed`` encode, ``sample`` decodes, so callbacks and
    ``task=sample`` stay in pixels; the latent statistics are fitted in ``setup``.
    ``dimension_shift`` (RAE's base ``n``, e.g. 4096) shifts training times and the sampler's grid by
    ``alpha = sqrt(m / n)``, ``m = C*H*W`` of what the net denoises (RAE, Zheng et al. 2025, Sec. 4.2),
    computed from the shape rather than typed (``sample(shift=...)`` still overrides it).
    ``cache_latents`` reads the train split's latents from an on-disk cache in ``cache_dir`` instead of
    encoding each batch. ``latent_statistics_images``: the latent statistics from a seeded subset of that many
    training images (null: all).
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
        terms: dict[str, LossTerm] | None = None,
        guidance: RewardGuidance | None = None,
        autoencoder: str | Path | nn.Module | None = None,
        data_shape: Sequence[int] | None = None,
        cache_latents: bool = False,
        cache_dir: str | None = None,
        latent_statistics_images: int | None = None,
        dimension_shift: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.shape = tuple(shape)
        self.space = LatentSpace.build(autoencoder, shape, data_shape, cache_latents, cache_dir, latent_statistics_images)
        self.data_shape = self.space.data_shape
        if not self.space.is_pixels and guidance is not None and guidance.scale > 0:
            raise ValueError(
                "guidance.scale > 0 steers x̂ in pixel space, but this model denoises latents; use best-of-N "
                "alone (guidance.scale=0) with autoencoder="
            )
        self.denoiser = Denoiser(net, schedule, prediction, min_b, min_a, shape=self.shape)
        if dimension_shift is not None:
            self.shift_alpha = alpha_for_dim(math.prod(self.shape), dimension_shift)
            time_sampler = Shifted(time_sampler, self.shift_alpha)
            typed = float((sampler or {}).get("shift", 1.0))
            if typed not in (1.0, self.shift_alpha):
                raise ValueError(
                    f"method.dimension_shift={dimension_shift} sets the sampler's shift to alpha={self.shift_alpha:.4g} "
                    f"(from the shape {list(self.shape)}), but method.sampler.shift={typed}; drop one of the two"
                )
            sampler = {**(sampler or {}), "shift": self.shift_alpha}
        self.time_sampler = time_sampler
        self.loss_space = loss_space
        self.num_classes = int(getattr(net, "num_classes", 0))
        self.label_dropout = label_dropout
        self.embed_t, self.embed_layer = embed_t, embed_layer
        validate(prediction, loss_space, schedule, *time_sampler.support, min_b, min_a)
        self.denoiser.check_grid_ends()
        self.sampler = sampler_options(sampler or {}, self.schedule, self.num_classes)
        self.terms = nn.ModuleDict(dict((terms or {}).items()))
        self._check_terms()
        self.guidance = guidance

    def setup(self, stage: str) -> None:
        """A reward that needs the data (a class prototype) is fitted to the trainer's datamodule; in a
        latent space, the latent statistics (and the cache) come from its train split."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.guidance is not None and datamodule is not None:
            self.guidance.fit_to(datamodule)
        if datamodule is not None and stage == "fit":
            readers = [f"method.terms.{name}" for name, term in self.terms.items() if term.reads_images]
            if readers and hasattr(datamodule, "latent_statistics"):
                raise ValueError(
                    f"{', '.join(readers)} read the batch's images, but data=latents holds extracted latents, no "
                    "images: train on the image data (with autoencoder= for a latent space)"
                )
            self.space.fit(datamodule, self.device)

    @property
    def net(self) -> nn.Module:
        return self.denoiser.net

    @property
    def schedule(self) -> Schedule:
        return self.denoiser.schedule

    @property
    def num_blocks(self) -> int:
        """The hidden blocks ``embed(layer=...)`` can read (what ``callbacks.ProbeMap`` maps)."""
        return self.denoiser.num_blocks

    @property
    def prediction(self) -> str:
        return self.denoiser.prediction

    def _check_terms(self) -> None:
        for name, term in self.terms.items():
            if name in ("loss", "denoise"):
                raise ValueError(f"method.terms.{name}: the name is taken by the main loss; rename the term")
            if not isinstance(term, LossTerm):
                raise ValueError(
                    f"method.terms.{name} is a {type(term).__name__}, not a zoo.terms.LossTerm "
                    "(forward(inputs: TermInputs) -> scalar, with weight and blocks)"
                )
            for index in term.blocks:
                try:
                    self.denoiser.block_index(index)
                except ValueError as error:
                    raise ValueError(f"method.terms.{name}.blocks: {error}") from None

    def condition(self, y: Tensor | None, drop: float = 0.0) -> Tensor | None:
        """The labels the net is given: none for an unconditional net; else ``y`` with label dropout ``drop``
        (the nets read None and -1 as the null class)."""
        return drop_labels(y, drop) if self.num_classes else None

    def denoise(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The clean estimate x̂(z, t) of the denoiser."""
        return self.denoiser(z, t, y)

    def losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The denoising loss at ``t`` from the time sampler and fresh ``eps``, plus every term."""
        x = self.space.encode_batch(batch, cached=self.training, datamodule=self.datamodule())
        t, eps = self.noise_draws(x, generator, None if self.training else batch.get("index"))
        z = self.schedule.noise(x, t, eps)
        y = self.condition(batch.get("y"), self.label_dropout if self.training else 0.0)
        blocks = sorted({index for term in self.terms.values() for index in term.blocks})
        result = self.denoiser.output(z, t, y, blocks)
        denoiser = self.denoiser
        loss = denoising_loss(
            result.out, self.prediction, self.loss_space, x, eps, t, self.schedule, denoiser.min_b, denoiser.min_a
        ).mean()
        if not self.terms:
            return {"loss": loss}
        inputs = TermInputs(batch, x, eps, t, z, y, result.out, result.hidden, denoiser)
        parts = {"denoise": loss}
        for name, term in self.terms.items():
            parts[name] = term(inputs)
            loss = loss + term.weight * parts[name]
        return {"loss": loss, **parts}

    def noise_draws(self, x: Tensor, generator: torch.Generator | None, rows: Tensor | None) -> tuple[Tensor, Tensor]:
        """The times and noise of a batch: from ``generator``, or, for an evaluation batch that names its ``rows``
        (``data=latents``), row ``i``'s from a generator seeded by ``i``, so that an evaluation's figures do not
        depend on how the rows are split into batches and ranks."""
        if rows is None:
            t = self.time_sampler(x.shape[0], generator=generator, device=x.device).to(x.dtype)
            return t, torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        draws = []
        for row in rows.tolist():
            row_generator = torch.Generator(device=x.device).manual_seed(int(row))
            t = self.time_sampler(1, generator=row_generator, device=x.device)
            draws.append((t, torch.randn(x.shape[1:], generator=row_generator, device=x.device)))
        return torch.cat([t for t, _ in draws]).to(x.dtype), torch.stack([e for _, e in draws]).to(x.dtype)

    @torch.no_grad()
    def sample(
        self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **overrides: Any
    ) -> Tensor:
        """``n`` samples in [-1, 1]-scale data space; ``overrides`` change the sampler defaults
        (the keys of ``zoo.diffusion.sampler_options.SAMPLER_DEFAULTS``; any other key is an error).

        With a conditional net, ``y`` defaults to classes ``0..n-1 mod num_classes``; guidance > 1
        applies classifier-free guidance inside ``interval`` (t in (lo, hi)). With ``self.guidance``, the
        reward's gradient tilts x̂ (``guidance.scale``) and the best of ``guidance.best_of`` draws is kept.
        """
        options = sampler_options({**self.sampler, **overrides}, self.schedule, self.num_classes)
        if self.num_classes and y is None:
            y = torch.arange(n, device=self.device) % self.num_classes
        cond = self.condition(y)

        def denoise_cond(z: Tensor, t: Tensor) -> Tensor:
            return self.denoise(z, t, cond)

        denoise = denoise_cond
        if options["guidance"] != 1.0:

            def denoise_uncond(z: Tensor, t: Tensor) -> Tensor:
                return self.denoise(z, t, None)

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
        guidance = self.guidance
        if guidance is not None and guidance.scale > 0:
            if torch.is_inference_mode_enabled():
                raise RuntimeError(
                    "reward guidance differentiates the reward through the denoiser, which inference mode forbids; "
                    "set trainer.inference_mode=false (or guidance.scale=0 for best-of-N alone)"
                )
            denoise = reward_guided(denoise, guidance.reward, guidance.scale, self.schedule)

        def draw() -> Tensor:
            return self.space.decode(draw_latents(), self.datamodule())

        def draw_latents() -> Tensor:
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

        if guidance is not None and guidance.best_of > 1:
            return best_of_n(draw, guidance.reward, guidance.best_of)
        return draw()

    @torch.no_grad()
    def embed(self, x: Tensor, t: float | Tensor | None = None, layer: int | None = None, **kw: Any) -> Tensor:
        """Pooled hidden features of the denoiser at noise level ``t`` (1 = data, 0 = noise).

        ``layer`` indexes the net's hidden blocks (default: the middle one); feature maps and
        token grids are averaged over space/tokens (DDAE, Xiang et al. ICCV 2023). The input is
        noised with fresh noise on every call.
        """
        t = self.embed_t if t is None else t
        layer = self.embed_layer if layer is None else layer
        x = self.space.encode(x, datamodule=self.datamodule())
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.denoiser.embed(x, t, None, layer)
