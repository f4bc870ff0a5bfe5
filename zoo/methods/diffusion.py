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

from zoo.autoencoder import FrozenAutoencoder, LatentNormalizer, load_autoencoder
from zoo.diffusion import (
    SAMPLERS,
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
from zoo.diffusion.time_samplers import Shifted, alpha_for_dim
from zoo.latent_cache import LatentCache, cached_latents, encode_all
from zoo.methods.base import Method
from zoo.rewards import RewardGuidance
from zoo.terms import LossTerm, TermInputs

SAMPLER_DEFAULTS = {
    "name": "heun",
    "steps": 16,
    "eta": 0.0,
    "shift": 1.0,
    "guidance": 1.0,
    "interval": (0.0, 1.0),
    "refine_k": 0,
    "refine_tau": 0.2,
    "refine_fraction": 0.25,
}


class Diffusion(Method):
    """A ``Denoiser`` (net + schedule + prediction + clamps) trained with ``denoising_loss`` on ``z = a x + b ε``.

    ``prediction`` is what the net outputs (x, eps or v), ``loss_space`` where the loss is
    measured; ``min_b`` and ``min_a`` clamp b(t) and a(t) from below in the conversions (JiT's
    1 - t >= 0.05 is ``min_b=0.05`` on the linear flow).
    ``label_dropout`` replaces labels by the null class for classifier-free guidance when the net is
    class-conditional (``net.num_classes > 0``). ``sampler`` holds the defaults of ``sample``;
    ``embed_t``/``embed_layer`` those of ``embed``. Bad settings fail at construction, before training:
    a loss undefined where the time sampler reaches (``validate``), a prediction the sampler cannot
    turn into x̂ at an end of its grid, and any bad sampler option.
    ``terms``: extra loss terms by name (``zoo.terms.LossTerm``), each added times its ``weight`` and
    logged as ``<stage>/<name>`` beside ``<stage>/denoise``; the hidden states they ask for come from
    the same forward pass as the denoising loss. ``guidance`` (``zoo.rewards.RewardGuidance``) steers
    every ``sample`` by a frozen encoder's reward: gradient guidance on x̂ and/or best-of-N.

    ``autoencoder`` (a checkpoint path, loaded by ``zoo.autoencoder.load_autoencoder`` against the
    pixel shape ``data_shape``, or a frozen autoencoder module) puts the model in its latent space:
    ``shape`` is then the latent shape (what the net and sampler see), ``data_shape`` the pixels'.
    ``losses`` encodes ``batch["x"]`` without gradients and normalises it by per-channel statistics of
    the train split's latents (``latent_norm``, fitted in ``setup`` and kept in the checkpoint);
    ``sample`` decodes, ``embed`` encodes first, so callbacks and ``task=sample`` stay in pixels.
    ``dimension_shift`` (RAE's base ``n``, e.g. 4096) shifts training times and the sampler's grid by
    ``alpha = sqrt(m / n)``, ``m = C*H*W`` of what the net denoises (RAE, Zheng et al. 2025, Sec. 4.2),
    computed from the shape rather than typed (``sample(shift=...)`` still overrides it).
    ``cache_latents`` reads the train split's latents from an on-disk cache in ``cache_dir``
    (``zoo.latent_cache``) instead of encoding each batch.
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
        autoencoder: str | nn.Module | None = None,
        data_shape: Sequence[int] | None = None,
        cache_latents: bool = False,
        cache_dir: str | None = None,
        dimension_shift: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.shape = tuple(shape)
        self.autoencoder = self._latent_space(autoencoder, data_shape, guidance, cache_latents, cache_dir)
        self.data_shape = self.autoencoder.shape if self.autoencoder is not None else self.shape
        if self.autoencoder is not None:
            self.latent_norm = LatentNormalizer(self.shape[0])
        self.cache_latents, self.cache_dir = cache_latents, cache_dir
        self.latent_cache: LatentCache | None = None
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
        self._check_denoiser_on_the_grid()
        self.sampler = self._sampler_options(sampler or {})
        self.terms = nn.ModuleDict(dict((terms or {}).items()))
        self._check_terms()
        self.guidance = guidance

    def setup(self, stage: str) -> None:
        """A reward that needs the data (a class prototype) is fitted to the trainer's datamodule; in a
        latent space, the latent statistics (and the cache) come from its train split."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.guidance is not None and datamodule is not None:
            self.guidance.fit_to(datamodule)
        if self.autoencoder is not None and datamodule is not None and stage == "fit":
            self.fit_latents(datamodule)

    def _latent_space(
        self,
        autoencoder: str | nn.Module | None,
        data_shape: Sequence[int] | None,
        guidance: RewardGuidance | None,
        cache_latents: bool,
        cache_dir: str | None,
    ) -> FrozenAutoencoder | None:
        """The frozen autoencoder of ``autoencoder``, checked against the data and the latent shape."""
        if autoencoder is None:
            if cache_latents:
                raise ValueError(
                    "method.cache_latents=true caches an autoencoder's latents, but there is no autoencoder; "
                    "pass autoencoder=<a vae/vavae/rae last.ckpt> or drop method.cache_latents"
                )
            return None
        if isinstance(autoencoder, (str, Path)):
            if data_shape is None:
                raise ValueError("autoencoder= needs method.data_shape, the pixel shape the autoencoder must match")
            autoencoder = load_autoencoder(autoencoder, data_shape)
        if not isinstance(autoencoder, FrozenAutoencoder):
            raise ValueError(
                f"autoencoder is a {type(autoencoder).__name__}; pass a checkpoint path (autoencoder=<last.ckpt>) "
                "or a zoo.autoencoder.FrozenAutoencoder"
            )
        if tuple(autoencoder.latent_shape) != self.shape:
            raise ValueError(
                f"method.shape={list(self.shape)} but the autoencoder's latents are {list(autoencoder.latent_shape)}; "
                "in a latent space the net and the sampler see the latent shape (zoo.app.train.build sets shape)"
            )
        if guidance is not None and guidance.scale > 0:
            raise ValueError(
                "guidance.scale > 0 steers x̂ in pixel space, but this model denoises latents; use best-of-N "
                "alone (guidance.scale=0) with autoencoder="
            )
        if cache_latents and not cache_dir:
            raise ValueError("method.cache_latents=true needs method.cache_dir (paths.cache_dir by default)")
        return autoencoder

    @torch.no_grad()
    def fit_latents(self, datamodule: Any) -> None:
        """Latent statistics of the unaugmented train split (once: a resumed or loaded model keeps its own),
        and with ``cache_latents`` the on-disk cache of its latents."""
        if not hasattr(datamodule, "train_tensor"):
            raise ValueError(
                f"autoencoder=: the latent statistics come from the train split, but {type(datamodule).__name__} "
                "has no train_tensor(); use a zoo datamodule"
            )
        if self.cache_latents and (getattr(datamodule, "augment", None) or getattr(datamodule, "views", None)):
            raise ValueError(
                f"method.cache_latents=true caches the unaugmented train split, but data.augment="
                f"{getattr(datamodule, 'augment', None)} / data.views={getattr(datamodule, 'views', None)} change "
                "every batch; set them to null, or method.cache_latents=false"
            )
        pixels, _ = datamodule.train_tensor()
        if self.cache_latents:
            self.latent_cache = cached_latents(
                self.autoencoder, self.autoencoder.digest, pixels, self.cache_dir, self.device
            )
            latents = self.latent_cache.latents
        else:
            latents = encode_all(self.autoencoder, pixels, self.device)
        if not bool(self.latent_norm.fitted):
            self.latent_norm.fit(latents.to(self.latent_norm.mean.device))

    def check_fitted(self) -> None:
        """Fit the latent statistics if they are not (a weight average copied before ``setup`` and swapped in
        before its first update carries unfitted ones); outside a trainer, an unfitted model is an error."""
        if bool(self.latent_norm.fitted):
            return
        datamodule = getattr(getattr(self, "_trainer", None), "datamodule", None)
        if datamodule is None:
            raise RuntimeError(
                "the latent statistics are not fitted: a latent-space model is trained by the trainer (setup fits "
                "them on the train split) or loaded from its checkpoint"
            )
        self.fit_latents(datamodule)

    @torch.no_grad()
    def to_latent(self, x: Tensor, cached: bool = False) -> Tensor:
        """Normalised latents of the pixels ``x`` (from the cache when ``cached`` and there is one)."""
        self.check_fitted()
        z = self.latent_cache.lookup(x) if cached and self.latent_cache is not None else self.autoencoder.encode(x)
        return self.latent_norm.normalize(z)

    def to_pixels(self, z: Tensor) -> Tensor:
        """Pixels of normalised latents ``z``."""
        self.check_fitted()
        return self.autoencoder.decode(self.latent_norm.denormalize(z))

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

    def _check_denoiser_on_the_grid(self) -> None:
        """Raise a ValueError if ``denoise`` is undefined where a sampler evaluates it.

        Samplers call ``denoise`` from the grid's first time ``t_min`` (pure noise for the flow and the
        cosine VP: a = 0) up to ``t_max``, which is skipped where b(t_max) = 0; the ends are where the
        conversion of the prediction to x can divide by zero (eps or score: ``x = (z - b eps)/a``).
        """
        ends = [self.schedule.t_min]
        if float(self.schedule.b(torch.tensor(self.schedule.t_max, dtype=torch.float64))) > 0:
            ends.append(self.schedule.t_max)
        one = torch.ones(1, dtype=torch.float64)
        for t in ends:
            times = torch.tensor([t], dtype=torch.float64)
            x_hat = self.denoiser.convert(one, "x", one, times)
            if not torch.isfinite(x_hat).all():
                raise ValueError(
                    f"method.prediction={self.prediction!r} cannot be turned into a clean estimate at t={t}, "
                    f"an end of the sampling grid on {type(self.schedule).__name__}: x = (z - b eps) / a with "
                    "a = 0 (pure noise); set method.min_a > 0 (e.g. 0.05), start the grid later "
                    "(method.schedule.t_min > 0), or predict 'x' or 'v'"
                )

    def _sampler_options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """``SAMPLER_DEFAULTS`` updated by ``overrides``, checked so that a bad setting fails before
        training (at construction) rather than at the first sampling."""
        unknown = sorted(set(overrides) - set(SAMPLER_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown sampler option(s) {unknown}; valid: {', '.join(SAMPLER_DEFAULTS)}")
        options = {**SAMPLER_DEFAULTS, **overrides}
        name, eta, steps = options["name"], options["eta"], options["steps"]
        if name not in SAMPLERS:
            raise ValueError(
                f"method.sampler.name={name!r} is not a sampler; choose one of {', '.join(SAMPLERS)}"
            )
        if not 0.0 <= eta <= 1.0:
            raise ValueError(
                f"method.sampler.eta={eta} is outside [0, 1]; 0 is the probability-flow ODE (deterministic "
                "DDIM), 1 the reverse SDE (ancestral sampling)"
            )
        if name in ("euler", "heun") and eta != 0.0:
            raise ValueError(
                f"method.sampler.eta={eta} needs a stochastic sampler ('sde' or 'ddim'), "
                f"not method.sampler.name={name!r}"
            )
        if int(steps) < 1:
            raise ValueError(f"method.sampler.steps={steps}: sampling needs at least one step")
        lo, hi = options["interval"]
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(
                f"method.sampler.interval={list(options['interval'])}: need 0 <= lo <= hi <= 1 (t = 1 is data)"
            )
        if options["guidance"] != 1.0 and self.num_classes == 0:
            raise ValueError(
                f"method.sampler.guidance={options['guidance']} needs a class-conditional net, but the net is "
                "unconditional; set net.num_classes=${num_classes} (or guidance 1.0)"
            )
        try:
            PredictAndPerturb(
                self.schedule, options["refine_k"], options["refine_tau"], options["refine_fraction"]
            )
        except ValueError as error:
            raise ValueError(f"method.sampler: {error}") from error
        return options

    def labels(self, y: Tensor | None, n: int, drop: float = 0.0) -> Tensor | None:
        """Labels for the net: the null class (index ``num_classes``) where unlabeled or dropped."""
        if self.num_classes == 0:
            return None
        null = torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)
        if y is None:
            return null
        keep = (y >= 0) & (torch.rand(n, device=y.device) >= drop)
        return torch.where(keep, y, null)

    def denoise(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The clean estimate x̂(z, t) of the denoiser."""
        return self.denoiser(z, t, y)

    def losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The denoising loss at ``t`` from the time sampler and fresh ``eps``, plus every term."""
        x = batch["x"] if self.autoencoder is None else self.to_latent(batch["x"], cached=self.training)
        n = x.shape[0]
        t = self.time_sampler(n, generator=generator, device=x.device).to(x.dtype)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = self.schedule.noise(x, t, eps)
        y = self.labels(batch.get("y"), n, self.label_dropout if self.training else 0.0)
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

    @torch.no_grad()
    def sample(
        self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **overrides: Any
    ) -> Tensor:
        """``n`` samples in [-1, 1]-scale data space; ``overrides`` change the sampler defaults
        (the keys of ``SAMPLER_DEFAULTS``; any other key is an error).

        With a conditional net, ``y`` defaults to classes ``0..n-1 mod num_classes``; guidance > 1
        applies classifier-free guidance inside ``interval`` (t in (lo, hi)). With ``self.guidance``, the
        reward's gradient tilts x̂ (``guidance.scale``) and the best of ``guidance.best_of`` draws is kept.
        """
        options = self._sampler_options({**self.sampler, **overrides})
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
        guidance = self.guidance
        if guidance is not None and guidance.scale > 0:
            if torch.is_inference_mode_enabled():
                raise RuntimeError(
                    "reward guidance differentiates the reward through the denoiser, which inference mode forbids; "
                    "set trainer.inference_mode=false (or guidance.scale=0 for best-of-N alone)"
                )
            denoise = reward_guided(denoise, guidance.reward, guidance.scale, self.schedule)

        def draw() -> Tensor:
            if self.autoencoder is not None:
                return self.to_pixels(draw_latents())
            return draw_latents()

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
        if self.autoencoder is not None:
            x = self.to_latent(x)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.denoiser.embed(x, t, self.labels(None, x.shape[0]), layer)

