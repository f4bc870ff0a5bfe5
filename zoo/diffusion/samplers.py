"""Samplers as plain functions of a denoiser ``denoise(z, t) -> x_hat`` (t a tensor of shape [B]).

Each walks a grid from noise (``grid[0]``, the prior) to data (``grid[-1]``) and returns the clean
estimate (``clean_estimate``): ``z / a`` where the grid ends at b = 0 (flow, VP), else
``denoise(z, t_max)`` (EDM's final step from sigma_min to 0). The denoiser is only evaluated where
b > 0. A step is ``step(z, t, t_next) -> (x_hat at t, z at t_next)``: the public ``euler_step``,
``heun_step``, ``sde_step`` and ``ddim_step`` (which consistency distillation's teacher calls too); an optional ``refine``
(e.g. ``zoo.diffusion.refine.PredictAndPerturb``) wraps every step and is called as
``refine(step, z, t, t_next, progress)`` with ``progress = i / steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from zoo.diffusion.parameterization import convert
from zoo.diffusion.schedules import Schedule

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
Step = Callable[[Tensor, float, float], tuple[Tensor, Tensor]]
Refiner = Callable[[Step, Tensor, float, float, float], Tensor]

SAMPLERS = ("euler", "heun", "sde", "ddim")


def _times(t: float, z: Tensor) -> Tensor:
    return torch.full((z.shape[0],), t, dtype=z.dtype, device=z.device)


def _at(fn: Callable[[Tensor], Tensor], t: float) -> float:
    return float(fn(torch.tensor(t, dtype=torch.float64)))


def _check_eta(eta: float) -> None:
    if not 0.0 <= eta <= 1.0:
        raise ValueError(
            f"eta={eta} is outside [0, 1]; eta=0 is the deterministic sampler (probability-flow ODE, DDIM), "
            "eta=1 the reverse SDE / ancestral sampling"
        )


def _walk(step: Step, z: Tensor, grid: Tensor, refine: Refiner | None) -> Tensor:
    times = grid.tolist()
    steps = len(times) - 1
    for i in range(steps):
        if refine is None:
            z = step(z, times[i], times[i + 1])[1]
        else:
            z = refine(step, z, times[i], times[i + 1], i / steps)
    return z


def clean_estimate(denoise: DenoiseFn, z: Tensor, t: float, schedule: Schedule) -> Tensor:
    """The sample at the grid's last time t: ``z / a(t)`` where b(t) = 0, else ``denoise(z, t)``.

    For EDM this is Karras et al.'s last Euler step from sigma_min to sigma = 0, which lands on D(z).
    """
    if _at(schedule.b, t) == 0.0:
        return z / _at(schedule.a, t)
    return denoise(z, _times(t, z))


def _native_slope(denoise: DenoiseFn, z: Tensor, t: float, schedule: Schedule) -> tuple[Tensor, Tensor]:
    times = _times(t, z)
    x_hat = denoise(z, times)
    return x_hat, convert(x_hat, "x", "v", z, times, schedule) / _at(schedule.dnative, t)


def euler_step(
    denoise: DenoiseFn, z: Tensor, t: float, t_next: float, schedule: Schedule
) -> tuple[Tensor, Tensor]:
    """One Euler step of the probability-flow ODE in the native parameter n: ``z += dn (dz/dn)``.

    Returns ``(x_hat at t, z at t_next)``. For the flow (n = t) this is JiT's Euler and equals DDIM;
    for EDM (n = sigma) it is EDM's Euler step ``z += (sigma' - sigma)(z - D)/sigma``.
    """
    x_hat, slope = _native_slope(denoise, z, t, schedule)
    return x_hat, z + (_at(schedule.native, t_next) - _at(schedule.native, t)) * slope


def heun_step(
    denoise: DenoiseFn, z: Tensor, t: float, t_next: float, schedule: Schedule
) -> tuple[Tensor, Tensor]:
    """One step of Heun's 2nd-order method in the native parameter (Karras et al. 2022, Alg. 1, l. 5-8).

    Returns ``(x_hat at t, z at t_next)``. The correction is skipped when the step ends where b = 0
    (the flow's and VP's last step is Euler, as in JiT): the denoiser is never evaluated there.
    """
    x_hat, slope = _native_slope(denoise, z, t, schedule)
    h = _at(schedule.native, t_next) - _at(schedule.native, t)
    z_euler = z + h * slope
    if _at(schedule.b, t_next) == 0.0:
        return x_hat, z_euler
    slope_next = _native_slope(denoise, z_euler, t_next, schedule)[1]
    return x_hat, z + h * (slope + slope_next) / 2


def sde_step(
    denoise: DenoiseFn,
    z: Tensor,
    t: float,
    t_next: float,
    schedule: Schedule,
    eta: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One Euler-Maruyama step of ``dY = [-f + (1+eta^2)/2 g^2 score] dt + eta g dB`` (see ``sde``).

    Returns ``(x_hat at t, z at t_next)``. The drift is ``v + eta^2/2 g^2 score`` with
    ``score = (a x_hat - z)/b^2``; the step is deterministic (eta = 0) where g is infinite (a = 0) and
    on a step that ends where b = 0.
    """
    times = _times(t, z)
    x_hat = denoise(z, times)
    v = convert(x_hat, "x", "v", z, times, schedule)
    dt = (_at(schedule.native, t_next) - _at(schedule.native, t)) / _at(schedule.dnative, t)
    g = float(schedule.sde(torch.tensor(t, dtype=torch.float64))[1])
    if eta == 0.0 or not math.isfinite(g) or _at(schedule.b, t_next) == 0.0:
        return x_hat, z + dt * v
    score = convert(x_hat, "x", "score", z, times, schedule)
    noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return x_hat, z + dt * (v + 0.5 * eta**2 * g**2 * score) + eta * g * math.sqrt(dt) * noise


def ddim_step(
    denoise: DenoiseFn,
    z: Tensor,
    t: float,
    t_next: float,
    schedule: Schedule,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One DDIM step (Song, Meng & Ermon 2021, Eq. 12 and 16) for any (a, b).

    ``z' = a' x_hat + sqrt(b'^2 - c^2) eps_hat + c xi`` with
    ``c = eta (b'/b) sqrt(b^2 - (a/a')^2 b'^2)``; returns ``(x_hat at t, z at t_next)``.
    """
    times = _times(t, z)
    x_hat = denoise(z, times)
    eps_hat = convert(x_hat, "x", "eps", z, times, schedule)
    a, b = _at(schedule.a, t), _at(schedule.b, t)
    a_next, b_next = _at(schedule.a, t_next), _at(schedule.b, t_next)
    c = eta * b_next / b * math.sqrt(max(b**2 - (a / a_next) ** 2 * b_next**2, 0.0))
    z_next = a_next * x_hat + math.sqrt(max(b_next**2 - c**2, 0.0)) * eps_hat
    if c > 0:
        z_next = z_next + c * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return x_hat, z_next


def euler(
    denoise: DenoiseFn, z: Tensor, grid: Tensor, schedule: Schedule, refine: Refiner | None = None
) -> Tensor:
    """Euler on the probability-flow ODE (``euler_step`` over ``grid``); equals DDIM with eta = 0."""
    step = partial(euler_step, denoise, schedule=schedule)
    return clean_estimate(denoise, _walk(step, z, grid, refine), float(grid[-1]), schedule)


def heun(
    denoise: DenoiseFn, z: Tensor, grid: Tensor, schedule: Schedule, refine: Refiner | None = None
) -> Tensor:
    """Heun's method (``heun_step`` over ``grid``; Karras et al. 2022, Alg. 1; JiT's sampler).

    On EDM every step is corrected and the clean estimate adds EDM's final evaluation, so
    ``steps = N - 1`` reproduces EDM's 2N - 1 evaluations.
    """
    step = partial(heun_step, denoise, schedule=schedule)
    return clean_estimate(denoise, _walk(step, z, grid, refine), float(grid[-1]), schedule)


def sde(
    denoise: DenoiseFn,
    z: Tensor,
    grid: Tensor,
    schedule: Schedule,
    eta: float,
    generator: torch.Generator | None = None,
    refine: Refiner | None = None,
) -> Tensor:
    """Euler-Maruyama on the reverse-SDE family ``dY = [-f + (1+eta^2)/2 g^2 score] dt + eta g dB``.

    eta = 0 is the probability-flow ODE, eta = 1 Anderson's reverse SDE; all share the marginals
    (Zhang & Chen 2023, DEIS; Karras et al. 2022, Eq. 6). Since the PF-ODE velocity is
    ``v = -f z + g^2/2 score``, the drift is computed as ``v + eta^2/2 g^2 score``, finite even where
    f is not. Like ``euler`` it steps in the native parameter n: the time increment is
    ``dn / (dn/dt)`` (= dt for flow and VP, d sigma / sigma' for EDM), so eta = 0 is exactly ``euler``.
    """
    _check_eta(eta)
    step = partial(sde_step, denoise, schedule=schedule, eta=eta, generator=generator)
    return clean_estimate(denoise, _walk(step, z, grid, refine), float(grid[-1]), schedule)


def ddim(
    denoise: DenoiseFn,
    z: Tensor,
    grid: Tensor,
    schedule: Schedule,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    refine: Refiner | None = None,
) -> Tensor:
    """DDIM (``ddim_step`` over ``grid``): eta = 0 deterministic DDIM, eta = 1 ancestral sampling (DDPM)."""
    _check_eta(eta)
    step = partial(ddim_step, denoise, schedule=schedule, eta=eta, generator=generator)
    return clean_estimate(denoise, _walk(step, z, grid, refine), float(grid[-1]), schedule)


def sample(
    denoise: DenoiseFn,
    shape: tuple[int, ...],
    schedule: Schedule,
    steps: int,
    sampler: str = "heun",
    eta: float = 0.0,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    refine: Refiner | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw the prior of ``shape`` at ``t_min`` and run ``sampler`` (one of ``SAMPLERS``) over
    ``schedule.grid(steps, shift)``; returns the clean samples. ``generator`` seeds the prior and the
    stochastic samplers' noise."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler in ("euler", "heun") and eta != 0.0:
        raise ValueError(f"eta={eta} needs a stochastic sampler ('sde' or 'ddim'), not sampler={sampler!r}")
    z = schedule.prior(shape, generator=generator, device=device, dtype=dtype)
    grid = schedule.grid(steps, shift)
    if sampler == "euler":
        return euler(denoise, z, grid, schedule, refine=refine)
    if sampler == "heun":
        return heun(denoise, z, grid, schedule, refine=refine)
    if sampler == "sde":
        return sde(denoise, z, grid, schedule, eta, generator=generator, refine=refine)
    return ddim(denoise, z, grid, schedule, eta, generator=generator, refine=refine)
