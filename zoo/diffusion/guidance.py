"""Guidance at sampling time: classifier-free guidance, reward-gradient guidance, best-of-N.

Each guidance that changes the denoiser returns a new ``denoise(z, t) -> x_hat`` for the samplers.
The reward functions are the image analogue of WMReward (Yuan et al. 2026): a frozen model's
feature-space agreement with a target, used for best-of-N and for gradient guidance on x_hat.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.diffusion.samplers import DenoiseFn
from zoo.diffusion.schedules import Schedule, append_dims

Reward = Callable[[Tensor], Tensor]


def classifier_free(
    denoise_cond: DenoiseFn,
    denoise_uncond: DenoiseFn,
    scale: float,
    interval: tuple[float, float] = (0.0, 1.0),
) -> DenoiseFn:
    """Classifier-free guidance (Ho & Salimans 2022) on x_hat, limited to ``interval`` (Kynkaanniemi et al. 2024).

    ``x_hat = x_u + w (x_c - x_u)`` for t in [lo, hi], ``x_c`` elsewhere (JiT: (0.1, 1)). At fixed
    (z, t), eps and v are affine in x_hat with weights summing to one, so this equals CFG applied to
    eps or v. Computed as ``x_c + (w - 1)(x_c - x_u)`` so that w = 1 returns x_c exactly.
    """
    lo, hi = interval
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"guidance interval={interval}: need 0 <= lo <= hi <= 1 (t = 1 is data)")

    def guided(z: Tensor, t: Tensor) -> Tensor:
        x_cond = denoise_cond(z, t)
        inside = (t >= lo) & (t <= hi)
        if not bool(inside.any()):
            return x_cond
        weight = append_dims((scale - 1) * inside.to(x_cond.dtype), x_cond.ndim)
        return x_cond + weight * (x_cond - denoise_uncond(z, t))

    return guided


def reward_guided(denoise: DenoiseFn, reward: Reward, scale: float, schedule: Schedule) -> DenoiseFn:
    """Gradient guidance by a differentiable per-sample reward ``r(x_hat) -> [B]``.

    ``x_hat <- x_hat + scale (b^2 / a) grad_z r(x_hat(z, t))`` (autograd through the denoiser): the
    denoiser of p_t tilted by ``exp(scale r(x_hat))``, i.e. classifier guidance (Dhariwal & Nichol 2021)
    with the reward of the denoised estimate as the classifier (universal guidance, Bansal et al. 2023,
    Eq. 6). For Gaussian data N(mu, S) and a linear reward w.x it samples exactly N(mu + scale S w, S).
    Where a = 0 (pure noise) x_hat does not depend on z and no guidance is added. Needs autograd:
    sample under ``torch.no_grad()`` (it re-enables grad), not ``torch.inference_mode()``.
    """

    def guided(z: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():
            z_in = z.detach().requires_grad_(True)
            x_hat = denoise(z_in, t)
            (grad,) = torch.autograd.grad(reward(x_hat).sum(), z_in)
        a, b = schedule.a(t), schedule.b(t)
        weight = torch.where(a > 0, scale * b**2 / a, torch.zeros_like(a))
        return x_hat.detach() + append_dims(weight, z.ndim) * grad

    return guided


def best_of_n(sample_fn: Callable[[], Tensor], reward: Reward, n: int) -> Tensor:
    """For each output slot keep the best of ``n`` candidates by reward (best-of-N, as in WMReward).

    ``sample_fn()`` draws one candidate for every slot ([B, ...]); it is called n times and the
    candidate with the highest ``reward -> [B]`` is kept per slot.
    """
    if n < 1:
        raise ValueError(f"best_of_n n={n} must be >= 1")
    best = sample_fn()
    best_reward = reward(best)
    for _ in range(n - 1):
        candidate = sample_fn()
        candidate_reward = reward(candidate)
        better = candidate_reward > best_reward
        best = torch.where(append_dims(better, best.ndim), candidate, best)
        best_reward = torch.where(better, candidate_reward, best_reward)
    return best


def cosine_reward(encode: Callable[[Tensor], Tensor], target: Tensor) -> Reward:
    """``r(x) = cos(encode(x), target)`` per sample: a frozen encoder's agreement with a target embedding
    ([F] for all samples, or [B, F]), the feature-space analogue of WMReward's ``1 - surprise``."""

    def reward(x: Tensor) -> Tensor:
        features = encode(x).flatten(1)
        return F.cosine_similarity(features, target.expand_as(features), dim=1)

    return reward
