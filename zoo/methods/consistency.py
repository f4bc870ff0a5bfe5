"""Consistency models: distillation (CD) and training (CT, iCT) on the EDM schedule.

Song et al. 2023, "Consistency Models" (arXiv 2303.01469) and Song & Dhariwal 2023, "Improved Techniques
for Training Consistency Models" (iCT, arXiv 2310.14189); reference code ``openai/consistency_models``
(``cm/karras_diffusion.py``). The student is ``f(z, t) = c_skip(sigma) z + c_out(sigma) F``
with the CM coefficients shifted by sigma_min, so ``f(z, t_max) = z`` exactly; ``F`` is the EDM-preconditioned
output of a ``zoo.diffusion.Denoiser`` (read off its clean estimate, so any prediction works). Its target network (theta^-) is a momentum pair of the base class. CD takes
one ODE step of a frozen ``method=diffusion`` teacher with the public ``heun_step``/``euler_step``; CT
uses the data point in place of the teacher. Zoo time: t = 1 is data, t = 0 noise; on EDM sigma(t) falls
from sigma_max at t = 0 to sigma_min at t = 1, and ``schedule.grid`` is the Karras grid.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zoo.diffusion import EDM, Denoiser, Schedule, append_dims, euler_step, heun_step
from zoo.loading import load_method
from zoo.methods.base import Method
from zoo.methods.diffusion import Diffusion

MODES = ("distill", "train")
TEACHER_STEPS = {"heun": heun_step, "euler": euler_step}
DISTANCES = ("l2", "l1", "pseudo_huber")
WEIGHTINGS = ("uniform", "inverse_delta")
INDEX_SAMPLERS = ("uniform", "lognormal")
CURRICULA = ("constant", "cm", "ict")
SAMPLER_DEFAULTS: dict[str, Any] = {"steps": 1, "taus": [0.8]}


def cm_c_skip(sigma: Tensor, sigma_min: float | Tensor, sigma_data: float) -> Tensor:
    """``c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2)`` (Song et al. 2023, App. C, Eq. 5's boundary form).

    Equal to 1 at ``sigma = sigma_min``, so ``f(z, sigma_min) = z``.
    """
    return sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)


def cm_c_out(sigma: Tensor, sigma_min: float | Tensor, sigma_data: float) -> Tensor:
    """``c_out = (sigma - sigma_min) sd / sqrt(sigma^2 + sd^2)`` (Song et al. 2023, App. C); 0 at sigma_min."""
    return (sigma - sigma_min) * sigma_data / (sigma**2 + sigma_data**2).sqrt()


def pseudo_huber(x: Tensor, y: Tensor, c: float | None = None) -> Tensor:
    """``sqrt(||x - y||^2 + c^2) - c`` per sample (iCT, Song & Dhariwal 2023, Sec. 3.3), ``c = 0.00054 sqrt(d)``."""
    d = x[0].numel()
    c = 0.00054 * math.sqrt(d) if c is None else c
    return ((x - y).reshape(x.shape[0], -1).pow(2).sum(1) + c**2).sqrt() - c


def distance(x: Tensor, y: Tensor, name: str) -> Tensor:
    """Per-sample ``d(x, y)``: mean squared (l2) or absolute (l1) difference, as CM's ``mean_flat``, or pseudo-Huber."""
    if name == "pseudo_huber":
        return pseudo_huber(x, y)
    diff = (x - y).reshape(x.shape[0], -1)
    return diff.pow(2).mean(1) if name == "l2" else diff.abs().mean(1)


def cm_discretization(k: int, total: int, s0: int, s1: int) -> int:
    """``N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1`` (Song et al. 2023, App. C, CT's N(k)).

    From ``s0`` at k = 0 to ``s1 + 1`` at k = K; steps past K stay there.
    """
    k = min(k, total)
    return math.ceil(math.sqrt(k / max(total, 1) * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1) + 1


def cm_momentum(n: int, s0: int, mu0: float) -> float:
    """``mu(k) = exp(s0 log(mu0) / N(k))`` (Song et al. 2023, App. C, CT's target momentum); ``mu0 = 0`` gives 0."""
    return 0.0 if mu0 == 0 else math.exp(s0 * math.log(mu0) / n)


def ict_discretization(k: int, total: int, s0: int, s1: int) -> int:
    """``N(k) = min(s0 2^floor(k/K'), s1) + 1`` with ``K' = floor(K / (log2 floor(s1/s0) + 1))`` (iCT, Eq. 7)."""
    stage = max(1, math.floor(total / (math.log2(math.floor(s1 / s0)) + 1)))
    return min(s0 * 2 ** (k // stage), s1) + 1


def lognormal_index_probs(sigmas: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """``p(n) ∝ erf((ln s_{n+1} - P_mean)/(sqrt2 P_std)) - erf((ln s_n - P_mean)/(sqrt2 P_std))`` (iCT, Sec. 3.5).

    ``sigmas`` ascending (N values); the result has N - 1 probabilities, one per adjacent pair.
    """
    cdf = torch.erf((sigmas.log() - p_mean) / (math.sqrt(2) * p_std))
    probs = cdf[1:] - cdf[:-1]
    return probs / probs.sum()


def edm_time(schedule: EDM, sigma: float) -> float:
    """The zoo time t with ``schedule.b(t) = sigma``: the inverse of EDM's ``sigma(t)``."""
    top, bottom = schedule.sigma_max ** (1 / schedule.rho), schedule.sigma_min ** (1 / schedule.rho)
    return (sigma ** (1 / schedule.rho) - top) / (bottom - top)


def shared_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """Run a block on a fork of the global RNG (CPU, and ``device`` if CUDA), restored on exit.

    The target's forward runs inside it and the online forward after it, so both draw the same dropout
    masks: CM's shared dropout RNG between ``f_theta`` and ``f_theta^-`` (``cm/karras_diffusion.py``).
    """
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class Consistency(Method):
    """Consistency distillation (``mode=distill``) or training (``mode=train``) of ``f(z, t)``.

    ``steps`` is N, the points of the Karras grid (CT with ``curriculum=cm|ict`` replaces it by N(k) at
    ``global_step``, with ``s0``, ``s1``, ``mu0`` and ``total_steps`` K, null = the run's optimizer steps).
    ``teacher``: a ``method=diffusion`` checkpoint on EDM with this data shape (distill only); the student
    net starts from its weights. ``momentum`` is mu of the target network, in [0, 1) (0: iCT, target =
    online). ``sampler``: ``steps`` (default) and ``taus`` (the intermediate sigmas of multistep sampling).
    """

    def __init__(
        self,
        net: nn.Module,
        shape: Sequence[int],
        schedule: Schedule,
        mode: str = "train",
        teacher: str | None = None,
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
        **kwargs: Any,
    ) -> None:
        if momentum is None or not 0 <= momentum < 1:
            raise ValueError(
                f"method.momentum={momentum}: the target network's mu must lie in [0, 1) (0 = iCT, the target is "
                "the online network; 1 would freeze it)"
            )
        super().__init__(momentum=momentum, **kwargs)
        self.shape = tuple(shape)
        if not isinstance(schedule, EDM):
            raise ValueError(
                f"method.schedule is {type(schedule).__name__}: consistency models here support the EDM schedule "
                "only (zoo.diffusion.schedules.EDM), whose sigma_min end carries the boundary condition"
            )
        for name, value, valid in (
            ("mode", mode, MODES),
            ("teacher_step", teacher_step, tuple(TEACHER_STEPS)),
            ("index_sampler", index_sampler, INDEX_SAMPLERS),
            ("distance", distance, DISTANCES),
            ("weighting", weighting, WEIGHTINGS),
            ("curriculum", curriculum, CURRICULA),
        ):
            if value not in valid:
                raise ValueError(f"method.{name}={value!r}: choose one of {', '.join(valid)}")
        if int(steps) < 2:
            raise ValueError(f"method.steps={steps}: the consistency grid needs N >= 2 points")
        if curriculum != "constant" and mode == "distill":
            raise ValueError(f"method.curriculum={curriculum!r} is CT's N(k) schedule: use it with method.mode=train")
        if curriculum != "constant" and not 2 <= s0 <= s1:
            raise ValueError(f"method.s0={s0}, method.s1={s1}: need 2 <= s0 <= s1")
        if curriculum == "cm" and not 0 <= mu0 < 1:
            raise ValueError(f"method.mu0={mu0}: CT's initial target momentum must lie in [0, 1)")
        self.mode, self.steps, self.index_sampler = mode, int(steps), index_sampler
        self.distance, self.weighting, self.curriculum = distance, weighting, curriculum
        self.s0, self.s1, self.mu0, self.fixed_total = int(s0), int(s1), float(mu0), total_steps
        self.embed_t, self.embed_layer = embed_t, embed_layer
        self.teacher_step = TEACHER_STEPS[teacher_step]
        self.num_classes = int(getattr(net, "num_classes", 0))
        self.teacher = self._load_teacher(teacher, schedule) if mode == "distill" else None
        # The student reads its net's output as the teacher does (CT: as x), so the copied weights mean the same.
        reading = ("x", 0.0, 0.0)
        if self.teacher is not None:
            reading = (self.teacher.prediction, self.teacher.min_b, self.teacher.min_a)
        self.student = Denoiser(net, schedule, *reading, shape=self.shape)
        if self.teacher is not None:
            try:
                self.student.net.load_state_dict(self.teacher.net.state_dict())
            except RuntimeError as error:
                raise ValueError(
                    f"method.teacher={teacher}: the student net ({type(net).__name__}) cannot take the teacher's "
                    f"weights ({type(self.teacher.net).__name__}); use the teacher's net config. {error}"
                ) from None
        self.target = copy.deepcopy(self.student).requires_grad_(False)
        self.sampler = self._sampler_options(sampler or {})

    def _load_teacher(self, path: str | None, schedule: Schedule) -> Denoiser:
        """The frozen denoiser of a ``method=diffusion`` checkpoint on this schedule and data shape."""
        if path is None:
            raise ValueError(
                "method.teacher=null: consistency distillation (method.mode=distill) needs a method=diffusion "
                "checkpoint on EDM (method.teacher=<run>/checkpoints/last.ckpt), or use method.mode=train (CT)"
            )
        teacher = load_method(path, expect=Diffusion, expected="a method=diffusion checkpoint", setting="method.teacher")
        if tuple(teacher.shape) != self.shape:
            raise ValueError(
                f"method.teacher={path} was trained on data of shape {list(teacher.shape)}, but the data here have "
                f"shape {list(self.shape)}: distil a teacher trained on this dataset"
            )
        if teacher.schedule != schedule:
            raise ValueError(
                f"method.teacher={path} was trained on {teacher.schedule}, but method.schedule is {schedule}: "
                "the teacher's ODE step needs the same schedule (train it with method.schedule=EDM and these settings)"
            )
        return teacher.denoiser.requires_grad_(False).eval()

    def _sampler_options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(SAMPLER_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown sampler option(s) {unknown}; valid: {', '.join(SAMPLER_DEFAULTS)}")
        options = {**SAMPLER_DEFAULTS, **overrides}
        taus = [float(tau) for tau in options["taus"]]
        lo, hi = self.sigma_min, float(self.schedule.b(torch.tensor(self.schedule.t_min, dtype=torch.float64)))
        if any(not lo < tau < hi for tau in taus) or any(a <= b for a, b in zip(taus, taus[1:])):
            raise ValueError(
                f"method.sampler.taus={taus}: the intermediate sigmas must decrease strictly inside ({lo:g}, {hi:g})"
            )
        steps = int(options["steps"])
        if not 1 <= steps <= len(taus) + 1:
            raise ValueError(
                f"steps={steps}: multistep consistency sampling takes 1 to len(method.sampler.taus) + 1 = "
                f"{len(taus) + 1} steps; give more intermediate sigmas in method.sampler.taus"
            )
        return {"steps": steps, "taus": taus}

    @property
    def schedule(self) -> EDM:
        return self.student.schedule

    @property
    def net(self) -> nn.Module:
        return self.student.net

    @property
    def sigma_min(self) -> float:
        """sigma at the data end t_max of the grid, where ``f(z, t_max) = z``."""
        return float(self.schedule.b(torch.tensor(self.schedule.t_max, dtype=torch.float64)))

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
        if self.curriculum == "cm":
            return cm_discretization(k, self._total(), self.s0, self.s1)
        if self.curriculum == "ict":
            return ict_discretization(k, self._total(), self.s0, self.s1)
        return self.steps

    def current_momentum(self) -> float:
        """mu(k): CM's adaptive ``cm_momentum`` under ``curriculum=cm``, 0 under iCT, else the base's schedule."""
        if self.curriculum == "cm":
            return cm_momentum(self.discretization(), self.s0, self.mu0)
        if self.curriculum == "ict":
            return 0.0
        return super().current_momentum()

    def labels(self, y: Tensor | None, n: int, device: torch.device) -> Tensor | None:
        if self.num_classes == 0:
            return None
        null = torch.full((n,), self.num_classes, dtype=torch.long, device=device)
        return null if y is None else torch.where(y >= 0, y, null)

    def consistency(self, denoiser: Denoiser, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """``f(z, t) = c_skip z + c_out F`` with the CM coefficients; exactly z at t_max.

        ``F = (x_hat - c_skip^EDM z) / c_out^EDM`` is the EDM-preconditioned output (Karras et al. 2022,
        Eq. 7) read off the denoiser's clean estimate, whatever its prediction (x, eps, v): what the raw
        net output is in CM's code, whose teachers are EDM nets. A student that starts from the teacher's
        weights then equals the teacher's x_hat wherever sigma >> sigma_min.
        """
        schedule = self.schedule
        sigma = schedule.b(t)
        sigma_min = schedule.b(torch.full_like(t, schedule.t_max))
        sd = schedule.sigma_data
        x_hat = denoiser(z, t, y)
        out = (x_hat - append_dims(schedule.c_skip(t), z.ndim) * z) / append_dims(schedule.c_out(t), z.ndim)
        return append_dims(cm_c_skip(sigma, sigma_min, sd), z.ndim) * z + append_dims(
            cm_c_out(sigma, sigma_min, sd), z.ndim
        ) * out

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The student's consistency function f_theta(z, t)."""
        return self.consistency(self.student, z, t, y)

    def grid_times(self, n: int) -> Tensor:
        """The N Karras-grid times ordered by ascending sigma: index 0 is t_max (sigma_min), N - 1 is t_min."""
        return self.schedule.grid(n - 1).flip(0)

    def teacher_denoise(self, y: Tensor | None) -> Any:
        """The teacher's ``denoise(z, t) -> x_hat``, with labels (the null class where none) if it is conditional."""
        assert self.teacher is not None
        teacher = self.teacher
        classes = int(getattr(teacher.net, "num_classes", 0))

        def denoise(z: Tensor, t: Tensor) -> Tensor:
            labels = None
            if classes:
                labels = torch.full((z.shape[0],), classes, dtype=torch.long, device=z.device)
                if y is not None:
                    labels = torch.where(y >= 0, y, labels)
            return teacher(z, t, labels)

        return denoise

    @torch.no_grad()
    def teacher_ode_step(self, z: Tensor, index: Tensor, times: Tensor, y: Tensor | None = None) -> Tensor:
        """z at ``times[index]`` from z at ``times[index + 1]``: one teacher step (``heun_step``), per index group."""
        z_next = torch.empty_like(z)
        for n in index.unique().tolist():
            rows = index == n
            z_next[rows] = self.teacher_step(
                self.teacher_denoise(None if y is None else y[rows]),
                z[rows],
                float(times[n + 1]),
                float(times[n]),
                self.schedule,
            )[1]
        return z_next

    def sample_index(self, sigmas: Tensor, b: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """n in 0..N-2: uniform (CM) or iCT's discretized lognormal."""
        if self.index_sampler == "uniform":
            return torch.randint(0, len(sigmas) - 1, (b,), generator=generator, device=device)
        probs = lognormal_index_probs(sigmas).to(device)
        return torch.multinomial(probs, b, replacement=True, generator=generator)

    def losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``lambda d(f_theta(z_{n+1}, t_{n+1}), stopgrad f_theta^-(z_n, t_n))`` with z_n from the teacher (CD) or data (CT)."""
        x = batch["x"]
        b = x.shape[0]
        times = self.grid_times(self.discretization()).to(x.device)
        sigmas = self.schedule.b(times)
        index = self.sample_index(sigmas, b, generator, x.device)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        t_noisy, t_clean = times[index + 1].to(x.dtype), times[index].to(x.dtype)
        z_noisy = self.schedule.noise(x, t_noisy, eps)
        y = self.labels(batch.get("y"), b, x.device)
        if self.mode == "distill":
            z_clean = self.teacher_ode_step(z_noisy, index, times.to(x.dtype), batch.get("y"))
        else:
            z_clean = self.schedule.noise(x, t_clean, eps)
        with shared_rng(x.device), torch.no_grad():
            target = self.consistency(self.target, z_clean, t_clean, y)
        online = self.consistency(self.student, z_noisy, t_noisy, y)
        loss = distance(online, target, self.distance)
        if self.weighting == "inverse_delta":
            loss = loss / (sigmas[index + 1] - sigmas[index]).to(x.dtype)
        return {"loss": loss.mean()}

    @torch.no_grad()
    def sample(
        self, n: int, steps: int | None = None, generator: torch.Generator | None = None, y: Tensor | None = None,
        **overrides: Any,
    ) -> Tensor:
        """Multistep consistency sampling (Song et al. 2023, Alg. 1): ``x = f(sigma_max eps, t_min)``, then for
        each tau of ``taus[:steps - 1]``: ``x = f(x + sqrt(tau^2 - sigma_min^2) eps, t(tau))``."""
        if steps is not None:
            overrides = {**overrides, "steps": steps}
        options = self._sampler_options({**self.sampler, **overrides})
        cond = self.labels(y, n, self.device) if y is not None or self.num_classes else None
        schedule = self.schedule
        shape = (n, *self.shape)
        z = schedule.prior(shape, generator=generator, device=self.device)
        x = self.consistency(self.student, z, torch.full((n,), schedule.t_min, device=self.device), cond)
        for tau in options["taus"][: options["steps"] - 1]:
            noise = torch.randn(shape, generator=generator, device=self.device)
            z = x + math.sqrt(tau**2 - self.sigma_min**2) * noise
            x = self.consistency(self.student, z, torch.full((n,), edm_time(schedule, tau), device=self.device), cond)
        return x

    @torch.no_grad()
    def embed(self, x: Tensor, t: float | Tensor | None = None, layer: int | None = None, **kw: Any) -> Tensor:
        """Pooled hidden features of the student at noise level ``t`` (1 = data), as ``Diffusion.embed``."""
        t = self.embed_t if t is None else t
        layer = self.embed_layer if layer is None else layer
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.student.embed(x, t, self.labels(None, x.shape[0], x.device), layer)
