"""Self-refining sampling by predict-and-perturb (Jang et al., arXiv 2601.18577, Eq. 5-6 and Alg. 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from zoo.diffusion.samplers import Step
from zoo.diffusion.schedules import Schedule


@dataclass
class PredictAndPerturb:
    """A ``refine=`` for every sampler: re-run the step K times from re-noised predictions.

    On the steps with ``progress < fraction`` (the early, noisy part of the grid): the step from z
    gives ``x_hat^(0)`` and a next state; then K times ``z_k = a(t) x_hat^(k-1) + b(t) eps_new`` and
    the step is re-run from z_k. The per-position uncertainty ``U = ||x_hat^(k) - x_hat^(k-1)||_1 / C``
    (over dim 1, channels) marks positions with ``U < tau`` certain; certain positions keep their
    previous x_hat and next state from then on (the mask is a union over k), and the loop stops once
    more than ``certain`` of all positions are. Mode-seeking: it lowers diversity. ``k = 0`` is exactly
    the base sampler. ``generator`` seeds eps_new.
    """

    schedule: Schedule
    k: int
    tau: float = 0.2
    fraction: float = 0.25
    certain: float = 0.999
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(f"refine k={self.k} must be >= 0 (0 disables predict-and-perturb)")
        if self.tau < 0:
            raise ValueError(f"refine tau={self.tau} must be >= 0")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"refine fraction={self.fraction} must be in [0, 1]")
        if not 0.0 < self.certain <= 1.0:
            raise ValueError(f"refine certain={self.certain} must be in (0, 1]")

    def __call__(self, step: Step, z: Tensor, t: float, t_next: float, progress: float) -> Tensor:
        x_hat, z_next = step(z, t, t_next)
        if self.k == 0 or progress >= self.fraction:
            return z_next
        times = torch.tensor(t, dtype=torch.float64)
        a, b = float(self.schedule.a(times)), float(self.schedule.b(times))
        certain = None
        for _ in range(self.k):
            noise = torch.randn(z.shape, generator=self.generator, device=z.device, dtype=z.dtype)
            x_new, z_next_new = step(a * x_hat + b * noise, t, t_next)
            now = (x_new - x_hat).abs().mean(dim=1, keepdim=True) < self.tau
            certain = now if certain is None else certain | now
            x_hat = torch.where(certain, x_hat, x_new)
            z_next = torch.where(certain, z_next, z_next_new)
            if certain.float().mean() > self.certain:
                break
        return z_next
