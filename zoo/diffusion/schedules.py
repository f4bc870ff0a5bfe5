"""Noise schedules ``z_t = a(t) x + b(t) eps`` on the zoo's normalized time t in [0, 1] (t = 1 data, t = 0 noise).

Every schedule gives ``a, b`` and their t-derivatives ``da, db``; the path velocity is
``v = dz/dt = da x + db eps``. Each documents its map to its own ("native") parameter, in which
the ODE samplers integrate (``native``, ``dnative``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from zoo.diffusion.time_samplers import shift as shift_time


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """``v`` (shape [B] or []) viewed with trailing singleton dims up to ``ndim`` dims (k-diffusion's name)."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


@dataclass(frozen=True, kw_only=True)
class Schedule(ABC):
    """Base class: coefficients as functions of a time tensor t (any shape, elementwise).

    ``sigma_data`` is the data's standard deviation for the EDM preconditioning (Karras et al. 2022,
    Table 1); ``[t_min, t_max]`` is the range the sampler grid spans (prior at ``t_min``).
    """

    sigma_data: float = 0.5
    t_min: float = 0.0
    t_max: float = 1.0

    def __post_init__(self) -> None:
        if self.sigma_data <= 0:
            raise ValueError(f"schedule sigma_data={self.sigma_data} must be positive")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"schedule t_min={self.t_min}, t_max={self.t_max}: need 0 <= t_min < t_max <= 1")

    @abstractmethod
    def a(self, t: Tensor) -> Tensor:
        """Signal coefficient a(t)."""

    @abstractmethod
    def b(self, t: Tensor) -> Tensor:
        """Noise coefficient b(t)."""

    @abstractmethod
    def da(self, t: Tensor) -> Tensor:
        """da/dt."""

    @abstractmethod
    def db(self, t: Tensor) -> Tensor:
        """db/dt."""

    @abstractmethod
    def native(self, t: Tensor) -> Tensor:
        """The schedule's own parameter (flow: t, VP: tau = 1 - t, EDM: sigma); ODE samplers step in it."""

    @abstractmethod
    def dnative(self, t: Tensor) -> Tensor:
        """d native / dt."""

    def sde(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(f, g)`` of the forward SDE ``dz = f z ds + g dW`` in the noise time s = 1 - t.

        Matching the marginals ``a x + b eps`` (Song et al. 2021, App. B; Kingma et al. 2021):
        ``f = d log a / ds = -da/a`` and ``g^2 = d b^2/ds - 2 f b^2 = 2 (da/a) b^2 - 2 b db``.
        ``g`` is infinite where a = 0 (pure noise).
        """
        a, b, da, db = self.a(t), self.b(t), self.da(t), self.db(t)
        rate = da / a
        return -rate, (2 * rate * b**2 - 2 * b * db).sqrt()

    def noise(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``z_t = a(t) x + b(t) eps`` with t of shape [B]."""
        return append_dims(self.a(t), x.ndim) * x + append_dims(self.b(t), x.ndim) * eps

    def c_in(self, t: Tensor) -> Tensor:
        """Input scale giving the net unit-variance input: ``1 / sqrt(a^2 sigma_data^2 + b^2)`` (EDM Eq. 7)."""
        return (self.a(t) ** 2 * self.sigma_data**2 + self.b(t) ** 2).rsqrt()

    def c_skip(self, t: Tensor) -> Tensor:
        """EDM's skip weight generalized to ``a != 1``: ``a sigma_data^2 / (a^2 sigma_data^2 + b^2)``.

        The least-squares coefficient of x on z; for a = 1, b = sigma it is EDM's ``sd^2/(sigma^2 + sd^2)``.
        """
        a, b = self.a(t), self.b(t)
        return a * self.sigma_data**2 / (a**2 * self.sigma_data**2 + b**2)

    def c_out(self, t: Tensor) -> Tensor:
        """EDM's output scale generalized: ``b sigma_data / sqrt(a^2 sigma_data^2 + b^2)`` (a = 1: EDM's)."""
        a, b = self.a(t), self.b(t)
        return b * self.sigma_data * (a**2 * self.sigma_data**2 + b**2).rsqrt()

    def c_noise(self, t: Tensor) -> Tensor:
        """The time value given to the net, in [0, 1] with 1 = data; t itself unless overridden."""
        return t

    def grid(self, n: int, shift: float = 1.0) -> Tensor:
        """n + 1 float64 times from ``t_min`` (noise) to ``t_max`` (data), increasing.

        Uniform in the fraction u in [0, 1], then ``shift`` (RAE's shift, ``time_samplers.shift``)
        is applied to u: ``t = t_min + (t_max - t_min) shift(u)``.
        """
        if n < 1:
            raise ValueError(f"steps={n}: a sampling grid needs at least one step")
        u = shift_time(torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64), shift)
        return self.t_min + (self.t_max - self.t_min) * u

    def prior(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """A draw of ``z`` at ``t_min``: ``b(t_min) eps`` (the signal ``a(t_min) x`` is taken as zero)."""
        scale = float(self.b(torch.tensor(self.t_min, dtype=torch.float64)))
        return scale * torch.randn(shape, generator=generator, device=device, dtype=dtype)


@dataclass(frozen=True, kw_only=True)
class LinearFlow(Schedule):
    """The linear (rectified) flow of JiT (Li & He 2025, Sec. 2) and SiT: ``z = t x + (1 - t) eps``.

    Native parameter: t itself, so ``v = x - eps`` is JiT's velocity. diffusers' flow-matching
    scheduler uses the mirror convention ``sigma = 1 - t`` (sigma = 1 is noise).
    """

    def a(self, t: Tensor) -> Tensor:
        return t

    def b(self, t: Tensor) -> Tensor:
        return 1 - t

    def da(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def db(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def native(self, t: Tensor) -> Tensor:
        return t

    def dnative(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


@dataclass(frozen=True, kw_only=True)
class VP(Schedule):
    """Variance preserving: ``a = sqrt(alpha_bar(tau))``, ``b = sqrt(1 - alpha_bar(tau))``, tau = 1 - t.

    ``beta="linear"``: DDPM / VP-SDE (Ho et al. 2020; Song et al. 2021, Eq. 11),
    ``beta(tau) = beta_min + tau (beta_max - beta_min)``, ``alpha_bar = exp(-int_0^tau beta)``.
    ``beta="cosine"``: Nichol & Dhariwal 2021, Eq. 17, ``alpha_bar = f(tau)/f(0)``,
    ``f = cos^2((tau + s)/(1 + s) pi/2)``; written in t as ``a = sin(theta t)/sin(theta)``,
    ``theta = pi / (2 (1 + s))``, so a(0) = 0 exactly. With s = 0 the path velocity is
    ``v = (pi/2)(b x - a eps)``, i.e. minus pi/2 times Salimans & Ho's v = alpha eps - sigma x
    (time runs toward data here). db is -inf at t = 1 (b = 0) for both betas.
    Native parameter: tau = 1 - t (Song et al.'s VP-SDE time); f = -beta/2, g = sqrt(beta).
    """

    beta: str = "linear"
    beta_min: float = 0.1
    beta_max: float = 20.0
    cosine_s: float = 0.008

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta not in ("linear", "cosine"):
            raise ValueError(f"schedule beta={self.beta!r}; choose 'linear' or 'cosine'")
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError(
                f"schedule beta_min={self.beta_min}, beta_max={self.beta_max}: need 0 < min < max"
            )
        if self.cosine_s < 0:
            raise ValueError(f"schedule cosine_s={self.cosine_s} must be >= 0")

    @property
    def _theta(self) -> float:
        return math.pi / (2 * (1 + self.cosine_s))

    def _beta(self, tau: Tensor) -> Tensor:
        return self.beta_min + tau * (self.beta_max - self.beta_min)

    def _integral(self, tau: Tensor) -> Tensor:
        return self.beta_min * tau + 0.5 * (self.beta_max - self.beta_min) * tau**2

    def a(self, t: Tensor) -> Tensor:
        if self.beta == "linear":
            return torch.exp(-0.5 * self._integral(1 - t))
        return torch.sin(self._theta * t) / math.sin(self._theta)

    def b(self, t: Tensor) -> Tensor:
        if self.beta == "linear":
            return torch.sqrt(-torch.expm1(-self._integral(1 - t)))
        theta = self._theta
        return torch.sqrt(torch.sin(theta * (1 - t)) * torch.sin(theta * (1 + t))) / math.sin(theta)

    def da(self, t: Tensor) -> Tensor:
        if self.beta == "linear":
            return 0.5 * self._beta(1 - t) * self.a(t)
        return self._theta * torch.cos(self._theta * t) / math.sin(self._theta)

    def db(self, t: Tensor) -> Tensor:
        return -self.a(t) * self.da(t) / self.b(t)

    def sde(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """VP-SDE coefficients ``f = -beta/2, g = sqrt(beta)`` with ``beta = 2 (da/dt) / a`` (Song et al. Eq. 11)."""
        beta = 2 * self.da(t) / self.a(t)
        return -0.5 * beta, beta.sqrt()

    def native(self, t: Tensor) -> Tensor:
        return 1 - t

    def dnative(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)


@dataclass(frozen=True, kw_only=True)
class EDM(Schedule):
    """Variance exploding with the EDM noise levels (Karras et al. 2022): ``a = 1``, ``b = sigma(t)``.

    ``sigma(t) = (sigma_max^(1/rho) + t (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, so a uniform
    grid in t from 0 to 1 is exactly the Karras grid (EDM Eq. 5) from sigma_max down to sigma_min.
    Native parameter: sigma (the ODE samplers step in sigma as EDM's Algorithm 1).
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"schedule sigma_min={self.sigma_min}, sigma_max={self.sigma_max}: need 0 < min < max"
            )
        if self.rho <= 0:
            raise ValueError(f"schedule rho={self.rho} must be positive")

    def _root(self, t: Tensor) -> Tensor:
        top, bottom = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        return top + t * (bottom - top)

    def a(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def b(self, t: Tensor) -> Tensor:
        return self._root(t) ** self.rho

    def da(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def db(self, t: Tensor) -> Tensor:
        slope = self.sigma_min ** (1 / self.rho) - self.sigma_max ** (1 / self.rho)
        return self.rho * self._root(t) ** (self.rho - 1) * slope

    def c_noise(self, t: Tensor) -> Tensor:
        """``(ln sigma_max - ln sigma) / (ln sigma_max - ln sigma_min)``: affine in EDM's ``ln(sigma)/4``, 1 = data."""
        log_max, log_min = math.log(self.sigma_max), math.log(self.sigma_min)
        return (log_max - self.b(t).log()) / (log_max - log_min)

    def native(self, t: Tensor) -> Tensor:
        return self.b(t)

    def dnative(self, t: Tensor) -> Tensor:
        return self.db(t)

    def time_of(self, sigma: Tensor | float) -> Tensor | float:
        """The zoo time t with ``b(t) = sigma``: the inverse of ``sigma(t)`` (EDM Eq. 5 solved for t)."""
        top, bottom = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        return (sigma ** (1 / self.rho) - top) / (bottom - top)
