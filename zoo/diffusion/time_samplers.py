"""Training-time distributions over the normalized time t in (0, 1), with t = 1 data and t = 0 noise.

A time sampler is a callable ``sampler(n, generator=None, device=None) -> Tensor[n]`` with a
``support`` ``(lo, hi)``: the closure of the values it can return, which
``zoo.diffusion.losses.validate`` checks against the loss's endpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


def shift(t: Tensor | float, alpha: float) -> Tensor | float:
    """RAE's dimension-dependent timestep shift (Zheng et al. 2025, Sec. 4), in the zoo's convention.

    RAE states it in noise time u = 1 - t (u = 1 is noise): ``u_m = alpha u_n / (1 + (alpha - 1) u_n)``.
    Substituting u = 1 - t gives ``t_m = t / (alpha - (alpha - 1) t)``. The end points 0 and 1 are fixed;
    ``alpha = 1`` is the identity and ``alpha > 1`` moves every interior t toward noise (t = 0).
    """
    if alpha <= 0:
        raise ValueError(
            f"shift alpha={alpha} must be positive (alpha = 1 is no shift, alpha > 1 moves t to noise)"
        )
    return t / (alpha - (alpha - 1) * t)


def alpha_for_dim(m: int, base: int = 4096) -> float:
    """RAE's shift factor ``alpha = sqrt(m / base)`` for a latent of ``m = C*H*W`` numbers (base n = 4096)."""
    if m <= 0 or base <= 0:
        raise ValueError(f"alpha_for_dim needs positive sizes, got m={m}, base={base}")
    return math.sqrt(m / base)


@dataclass(frozen=True)
class Uniform:
    """t ~ U(lo, hi) (REPA/SiT train on U(0, 1))."""

    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.lo < self.hi <= 1.0:
            raise ValueError(f"time_sampler lo={self.lo}, hi={self.hi}: need 0 <= lo < hi <= 1")

    @property
    def support(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    def __call__(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        return self.lo + (self.hi - self.lo) * torch.rand(n, generator=generator, device=device)


@dataclass(frozen=True)
class LogitNormal:
    """t = sigmoid(s), s ~ N(mu, sigma) (Esser et al. 2024; JiT, Li & He 2025: mu -0.8, sigma 0.8).

    ``mu`` is stated in the zoo's convention (t = 1 data), which is JiT's: the default's median
    sigmoid(-0.8) = 0.31 lies on the noise side. A paper that states mu in noise time (t = 1 noise,
    e.g. SD3 / diffusers) needs ``-mu`` here.
    """

    mu: float = -0.8
    sigma: float = 0.8

    def __post_init__(self) -> None:
        if self.sigma <= 0:
            raise ValueError(f"time_sampler sigma={self.sigma} must be positive")

    @property
    def support(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def __call__(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        return torch.sigmoid(self.mu + self.sigma * torch.randn(n, generator=generator, device=device))


@runtime_checkable
class SigmaSchedule(Protocol):
    """A schedule of noise levels ``sigma`` in ``[sigma_min, sigma_max]`` with the time of each (``schedules.EDM``)."""

    sigma_min: float
    sigma_max: float

    def time_of(self, sigma: Tensor | float) -> Tensor | float: ...


@dataclass(frozen=True)
class LogNormalSigma:
    """``ln sigma ~ N(p_mean, p_std)`` (EDM, Karras et al. 2022, Table 1: -1.2, 1.2; iCT and ECT: -1.1, 2.0), returned
    as the time t of the method's EDM schedule (``schedule.time_of``, EDM Eq. 5 solved for t), sigma clamped into the
    schedule's ``[sigma_min, sigma_max]`` (at EDM's values a draw outside has probability below 2e-5).
    """

    schedule: SigmaSchedule
    p_mean: float = -1.2
    p_std: float = 1.2

    def __post_init__(self) -> None:
        if self.p_std <= 0:
            raise ValueError(f"time_sampler p_std={self.p_std} must be positive")
        if not isinstance(self.schedule, SigmaSchedule):
            raise ValueError(
                f"time_sampler=edm_lognormal draws EDM's sigma, which a {type(self.schedule).__name__} schedule does "
                "not have: use it with method.schedule._target_=zoo.diffusion.schedules.EDM"
            )

    @property
    def support(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def __call__(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        normal = torch.randn(n, generator=generator, device=device, dtype=torch.float64)
        sigma = (self.p_mean + self.p_std * normal).exp().clamp(self.schedule.sigma_min, self.schedule.sigma_max)
        return self.schedule.time_of(sigma).float()


@dataclass(frozen=True)
class Shifted:
    """``shift(base(n), alpha)``: RAE applies the shift after logit-normal sampling (and in the sampler grid)."""

    base: Uniform | LogitNormal
    alpha: float

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ValueError(f"shift alpha={self.alpha} must be positive (alpha > 1 moves t toward noise)")

    @property
    def support(self) -> tuple[float, float]:
        lo, hi = self.base.support
        return (shift(lo, self.alpha), shift(hi, self.alpha))

    def __call__(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        return shift(self.base(n, generator=generator, device=device), self.alpha)

