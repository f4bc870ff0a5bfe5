"""Consistency models: distillation (CD) and training (CT, iCT) on the EDM schedule, in pixels or latents.

Song et al. 2023, "Consistency Models" (arXiv 2303.01469) and Song & Dhariwal 2023, "Improved Techniques
for Training Consistency Models" (iCT, arXiv 2310.14189). The math (the consistency function with its
boundary condition, the curricula N(k) and mu(k), the distances, iCT's index distribution) is in
``zoo.diffusion.consistency``; this module is the method: the student (a ``zoo.diffusion.Denoiser``) and
its target network (theta^-, a momentum pair of the base class), the training step and sampling. CD
takes one ODE step of a frozen ``method=diffusion`` teacher with the public ``heun_step``/``euler_step``;
CT uses the data point in place of the teacher. With ``autoencoder=`` it runs in that autoencoder's
latents (``zoo.latent_space``); CD's teacher must denoise the same latents, and the student takes its
latent statistics. Zoo time: t = 1 is data; ``schedule.grid`` is the Karras grid.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.diffusion import EDM, Denoiser, Schedule, euler_step, heun_step
from zoo.diffusion.consistency import (
    check_recipe,
    cm_momentum,
    consistency_distance,
    consistency_function,
    discretization,
    grid_index,
    multistep_options,
    multistep_sample,
    shared_rng,
)
from zoo.latent_space import LatentSpace
from zoo.methods.base import Method
from zoo.methods.teacher import load_teacher

MODES = ("distill", "train")
TEACHER_STEPS = {"heun": heun_step, "euler": euler_step}


class Consistency(Method):
    """Consistency distillation (``mode=distill``) or training (``mode=train``) of ``f(z, t)``.

    ``steps`` is N, the points of the Karras grid (CT with ``curriculum=cm|ict`` replaces it by N(k) at
    ``global_step``, with ``s0``, ``s1``, ``mu0`` and ``total_steps`` K, null = the run's optimizer steps).
    ``teacher``: a ``method=diffusion`` checkpoint on EDM with this data shape, in the same latent space
    (distill only); the student net starts from its weights. ``init``: a ``method=diffusion`` checkpoint on EDM
    whose weights CT starts from (ECT, Geng et al. 2024: consistency tuning of a pretrained diffusion model),
    checked as a teacher is. ``autoencoder``, ``data_shape``,
    ``cache_latents``, ``cache_dir`` and ``latent_statistics_images`` are ``Diffusion``'s latent space. ``momentum`` is mu of the target
    network, in [0, 1) (0: iCT, target = online). ``sampler``: ``steps`` (default) and ``taus`` (the intermediate sigmas of multistep sampling).
    """

    def __init__(
        self,
        net: nn.Module,
        shape: Sequence[int],
        schedule: Schedule,
        mode: str = "train",
        teacher: str | None = None,
        init: str | None = None,
        teacher_step: str = "heun",
        steps: int = 18,
        index_sampler: str = "uniform",
        distance: str = "l2",
        weighting: str = "uniform",
        curriculum: str = "constant",
        s0: int = 2,
        s1: int = 150,
        mu0: float = 0.9,
        total_steps: int | None = None,
        sampler: dict[str, Any] | None = None,
        embed_t: float = 0.9,
        embed_layer: int | None = None,
        momentum: float | None = 0.0,
        autoencoder: str | Path | nn.Module | None = None,
        data_shape: Sequence[int] | None = None,
        cache_latents: bool = False,
        cache_dir: str | None = None,
        latent_statistics_images: int | None = None,
        **kwargs: Any,
    ) -> None:
        if momentum is None or not 0 <= momentum < 1:
            raise ValueError(
                f"method.momentum={momentum}: the target network's mu must lie in [0, 1) (0 = iCT, the target is "
                "the online network; 1 would freeze it)"
            )
        super().__init__(momentum=momentum, **kwargs)
        self.shape = tuple(shape)
        self.space = LatentSpace.build(autoencoder, shape, data_shape, cache_latents, cache_dir, latent_statistics_images)
        self.data_shape = self.space.data_shape
        if not isinstance(schedule, EDM):
            raise ValueError(
                f"method.schedule is {type(schedule).__name__}: consistency models here support the EDM schedule "
                "only (zoo.diffusion.schedules.EDM), whose sigma_min end carries the boundary condition"
            )
        for name, value, valid in (("mode", mode, MODES), ("teacher_step", teacher_step, tuple(TEACHER_STEPS))):
            if value not in valid:
                raise ValueError(f"method.{name}={value!r}: choose one of {', '.join(valid)}")
        if curriculum != "constant" and mode == "distill":
            raise ValueError(f"method.curriculum={curriculum!r} is CT's N(k) schedule: use it with method.mode=train")
        check_recipe(steps, index_sampler, distance, weighting, curriculum, s0, s1, mu0)
        self.mode, self.steps, self.index_sampler = mode, int(steps), index_sampler
        self.distance, self.weighting, self.curriculum = distance, weighting, curriculum
        self.s0, self.s1, self.mu0, self.fixed_total = int(s0), int(s1), float(mu0), total_steps
        self.embed_t, self.embed_layer = embed_t, embed_layer
        self.teacher_step = TEACHER_STEPS[teacher_step]
        self.num_classes = int(getattr(net, "num_classes", 0))
        if init is not None and mode == "distill":
            raise ValueError(
                f"method.init={init}: CD's student starts from method.teacher's weights; method.init is CT's start "
                "(method.mode=train, ECT): drop one of them"
            )
        setting, path = ("method.teacher", teacher) if mode == "distill" else ("method.init", init)
        start = None if mode == "train" and init is None else load_teacher(path, schedule, self.shape, self.space, setting)
        self.teacher = start if mode == "distill" else None
        # The student reads its net's output as the checkpoint does (CT from scratch: as x), so its weights mean the same.
        reading = ("x", 0.0, 0.0) if start is None else (start.prediction, start.min_b, start.min_a)
        self.student = Denoiser(net, schedule, *reading, shape=self.shape)
        if start is not None:
            try:
                self.student.net.load_state_dict(start.net.state_dict())
            except RuntimeError as error:
                raise ValueError(
                    f"{setting}={path}: the student net ({type(net).__name__}) cannot take the checkpoint's "
                    f"weights ({type(start.net).__name__}); use its net config. {error}"
                ) from None
        self.target = copy.deepcopy(self.student).requires_grad_(False)
        self.sampler = multistep_options(sampler or {}, schedule)

    def setup(self, stage: str) -> None:
        """In a latent space, the latent statistics (and the cache) come from the train split."""
        datamodule = self.datamodule()
        if datamodule is not None and stage == "fit":
            self.space.fit(datamodule, self.device)

    @property
    def schedule(self) -> EDM:
        return self.student.schedule

    @property
    def net(self) -> nn.Module:
        return self.student.net

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [*super().momentum_pairs, (self.student, self.target)]

    def train(self, mode: bool = True) -> Consistency:
        """The teacher stays in eval mode (no dropout) whatever the trainer sets."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def _total(self) -> int:
        return int(self.fixed_total) if self.fixed_total is not None else self.total_steps

    def discretization(self, step: int | None = None) -> int:
        """N at optimizer step ``step`` (default ``global_step``): fixed, CM's or iCT's N(k)."""
        k = self.global_step if step is None else step
        return discretization(self.curriculum, k, self._total(), self.s0, self.s1, self.steps)

    def current_momentum(self) -> float:
        """mu(k): CM's adaptive ``cm_momentum`` under ``curriculum=cm``, 0 under iCT, else the base's schedule."""
        if self.curriculum == "cm":
            return cm_momentum(self.discretization(), self.s0, self.mu0)
        if self.curriculum == "ict":
            return 0.0
        return super().current_momentum()

    def condition(self, y: Tensor | None) -> Tensor | None:
        """The labels the nets are given: none for an unconditional student; else ``y`` (None and -1: the null class)."""
        return y if self.num_classes else None

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The student's consistency function f_theta(z, t)."""
        return consistency_function(self.student, z, t, y)

    def grid_times(self, n: int) -> Tensor:
        """The N Karras-grid times ordered by ascending sigma: index 0 is t_max (sigma_min), N - 1 is t_min."""
        return self.schedule.grid(n - 1).flip(0)

    @torch.no_grad()
    def teacher_ode_step(self, z: Tensor, index: Tensor, times: Tensor, y: Tensor | None = None) -> Tensor:
        """z at ``times[index]`` from z at ``times[index + 1]``: one teacher step (``heun_step``), per index group."""
        z_next = torch.empty_like(z)
        for n in index.unique().tolist():
            rows = index == n
            labels = None if y is None else y[rows]
            z_next[rows] = self.teacher_step(
                lambda z, t, labels=labels: self.teacher(z, t, labels),
                z[rows],
                float(times[n + 1]),
                float(times[n]),
                self.schedule,
            )[1]
        return z_next

    def losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``lambda d(f_theta(z_{n+1}, t_{n+1}), stopgrad f_theta^-(z_n, t_n))`` with z_n from the teacher (CD) or data (CT)."""
        x = self.space.encode_batch(batch, cached=self.training, datamodule=self.datamodule())
        b = x.shape[0]
        times = self.grid_times(self.discretization()).to(x.device)
        sigmas = self.schedule.b(times)
        index = grid_index(sigmas, b, self.index_sampler, generator, x.device)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        t_noisy, t_clean = times[index + 1].to(x.dtype), times[index].to(x.dtype)
        z_noisy = self.schedule.noise(x, t_noisy, eps)
        y = self.condition(batch.get("y"))
        if self.mode == "distill":
            z_clean = self.teacher_ode_step(z_noisy, index, times.to(x.dtype), batch.get("y"))
        else:
            z_clean = self.schedule.noise(x, t_clean, eps)
        with shared_rng(x.device), torch.no_grad():
            target = consistency_function(self.target, z_clean, t_clean, y)
        online = consistency_function(self.student, z_noisy, t_noisy, y)
        loss = consistency_distance(online, target, self.distance)
        if self.weighting == "inverse_delta":
            loss = loss / (sigmas[index + 1] - sigmas[index]).to(x.dtype)
        return {"loss": loss.mean()}

    @torch.no_grad()
    def sample(
        self, n: int, steps: int | None = None, generator: torch.Generator | None = None, y: Tensor | None = None,
        **overrides: Any,
    ) -> Tensor:
        """Multistep consistency sampling (``multistep_sample``, Song et al. 2023, Alg. 1) with the student,
        ``steps`` of them (default ``sampler.steps``), decoded to pixels."""
        if steps is not None:
            overrides = {**overrides, "steps": steps}
        options = multistep_options({**self.sampler, **overrides}, self.schedule)
        cond = self.condition(y)
        x = multistep_sample(
            lambda z, t: consistency_function(self.student, z, t, cond),
            (n, *self.shape), self.schedule, options["taus"][: options["steps"] - 1], generator, self.device,
        )
        return self.space.decode(x, self.datamodule())

    @torch.no_grad()
    def embed(self, x: Tensor, t: float | Tensor | None = None, layer: int | None = None, **kw: Any) -> Tensor:
        """Pooled hidden features of the student at noise level ``t`` (1 = data), as ``Diffusion.embed``."""
        t = self.embed_t if t is None else t
        layer = self.embed_layer if layer is None else layer
        x = self.space.encode(x, datamodule=self.datamodule())
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.student.embed(x, t, None, layer)
