"""Consistency-model math, as pure functions with the papers' names (the method is ``zoo.methods.consistency``).

Song et al. 2023, "Consistency Models" (arXiv 2303.01469, CM) and Song & Dhariwal 2023, "Improved
Techniques for Training Consistency Models" (iCT, arXiv 2310.14189); reference code
``openai/consistency_models`` (``cm/karras_diffusion.py``). The consistency function
``f(z, t) = c_skip(sigma) z + c_out(sigma) F`` uses the CM coefficients shifted by sigma_min, so that
``f(z, t_max) = z`` exactly (the boundary condition); ``F`` is the EDM-preconditioned output read off a
``Denoiser``'s clean estimate. CT's discretization curricula N(k) (CM's and iCT's), CM's target momentum
mu(k), iCT's lognormal distribution over grid indices, and the per-sample distances (l2, l1,
pseudo-Huber) are here too. Zoo time: t = 1 is data; on EDM sigma(t) falls from sigma_max at t = 0 to
sigma_min at t = 1.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from zoo.diffusion.denoiser import Denoiser
from zoo.diffusion.schedules import EDM, append_dims

DISTANCES = ("l2", "l1", "pseudo_huber")
CURRICULA = ("constant", "cm", "ict")
INDEX_SAMPLERS = ("uniform", "lognormal")
WEIGHTINGS = ("uniform", "inverse_delta")
MULTISTEP_DEFAULTS: dict[str, Any] = {"steps": 1, "taus": [0.8]}
"""Multistep sampling's defaults: one step, and the intermediate sigma of a second (CM's CIFAR-10 two-step)."""


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


def consistency_distance(x: Tensor, y: Tensor, name: str) -> Tensor:
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


def consistency_function(denoiser: Denoiser, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
    """``f(z, t) = c_skip z + c_out F`` with the CM coefficients (CM, Eq. 5 and App. C); exactly z at t_max.

    ``F = (x_hat - c_skip^EDM z) / c_out^EDM`` is the EDM-preconditioned output (Karras et al. 2022, Eq. 7)
    read off the denoiser's clean estimate, whatever its prediction (x, eps, v): what the raw net output
    is in CM's code, whose teachers are EDM nets. A student that starts from the teacher's weights then
    equals the teacher's x_hat wherever sigma >> sigma_min. ``denoiser.schedule`` must be ``EDM``.
    """
    schedule: EDM = denoiser.schedule
    sigma = schedule.b(t)
    sigma_min = schedule.b(torch.full_like(t, schedule.t_max))
    sd = schedule.sigma_data
    x_hat = denoiser(z, t, y)
    out = (x_hat - append_dims(schedule.c_skip(t), z.ndim) * z) / append_dims(schedule.c_out(t), z.ndim)
    return append_dims(cm_c_skip(sigma, sigma_min, sd), z.ndim) * z + append_dims(
        cm_c_out(sigma, sigma_min, sd), z.ndim
    ) * out


def discretization(curriculum: str, k: int, total: int, s0: int, s1: int, steps: int) -> int:
    """N at optimizer step ``k`` of ``total``: ``steps`` (``constant``), CM's ``cm_discretization`` or iCT's
    ``ict_discretization``."""
    if curriculum == "cm":
        return cm_discretization(k, total, s0, s1)
    if curriculum == "ict":
        return ict_discretization(k, total, s0, s1)
    return steps


def grid_index(
    sigmas: Tensor, b: int, kind: str, generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """``b`` grid indices n in 0..N-2 (the pair sigma_n < sigma_{n+1}): uniform (CM) or iCT's discretized
    lognormal (``lognormal_index_probs``)."""
    if kind == "uniform":
        return torch.randint(0, len(sigmas) - 1, (b,), generator=generator, device=device)
    probs = lognormal_index_probs(sigmas).to(device)
    return torch.multinomial(probs, b, replacement=True, generator=generator)


def grid_sigmas(schedule: EDM) -> tuple[float, float]:
    """``(sigma_min, sigma_max)``: sigma at the data end ``t_max`` of the grid (where ``f(z, t_max) = z``) and at
    its noise end ``t_min``."""
    return tuple(float(schedule.b(torch.tensor(t, dtype=torch.float64))) for t in (schedule.t_max, schedule.t_min))


def multistep_sample(
    f: Callable[[Tensor, Tensor], Tensor],
    shape: Sequence[int],
    schedule: EDM,
    taus: Sequence[float],
    generator: torch.Generator | None,
    device: torch.device | str,
) -> Tensor:
    """Multistep consistency sampling (CM, Alg. 1) of a consistency function ``f(z, t)``:
    ``x = f(sigma_max eps, t_min)``, then for each tau of ``taus``: ``x = f(x + sqrt(tau^2 - sigma_min^2) eps, t(tau))``."""
    n = shape[0]
    sigma_min, _ = grid_sigmas(schedule)
    z = schedule.prior(tuple(shape), generator=generator, device=device)
    x = f(z, torch.full((n,), schedule.t_min, device=device))
    for tau in taus:
        noise = torch.randn(tuple(shape), generator=generator, device=device)
        z = x + math.sqrt(tau**2 - sigma_min**2) * noise
        x = f(z, torch.full((n,), schedule.time_of(tau), device=device))
    return x


def shared_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """Run a block on a fork of the global RNG (CPU, and ``device`` if CUDA), restored on exit.

    The target's forward runs inside it and the online forward after it, so both draw the same dropout
    masks: CM's shared dropout RNG between ``f_theta`` and ``f_theta^-`` (``cm/karras_diffusion.py``).
    """
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def check_recipe(
    steps: int, index_sampler: str, distance: str, weighting: str, curriculum: str, s0: int, s1: int, mu0: float
) -> None:
    """A ValueError naming the ``method.*`` key of the first setting a consistency recipe cannot take."""
    for name, value, valid in (
        ("index_sampler", index_sampler, INDEX_SAMPLERS),
        ("distance", distance, DISTANCES),
        ("weighting", weighting, WEIGHTINGS),
        ("curriculum", curriculum, CURRICULA),
    ):
        if value not in valid:
            raise ValueError(f"method.{name}={value!r}: choose one of {', '.join(valid)}")
    if int(steps) < 2:
        raise ValueError(f"method.steps={steps}: the consistency grid needs N >= 2 points")
    if curriculum != "constant" and not 2 <= s0 <= s1:
        raise ValueError(f"method.s0={s0}, method.s1={s1}: need 2 <= s0 <= s1")
    if curriculum == "cm" and not 0 <= mu0 < 1:
        raise ValueError(f"method.mu0={mu0}: CT's initial target momentum must lie in [0, 1)")


def multistep_options(overrides: dict[str, Any], schedule: EDM) -> dict[str, Any]:
    """``MULTISTEP_DEFAULTS`` updated by ``overrides``, checked: the taus decrease strictly inside
    (sigma_min, sigma_max), and ``steps`` is 1 to ``len(taus) + 1``."""
    unknown = sorted(set(overrides) - set(MULTISTEP_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown sampler option(s) {unknown}; valid: {', '.join(MULTISTEP_DEFAULTS)}")
    options = {**MULTISTEP_DEFAULTS, **overrides}
    taus = [float(tau) for tau in options["taus"]]
    lo, hi = grid_sigmas(schedule)
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
