"""The diffusion math, once: schedules, x/eps/v/score conversions, losses, time samplers, samplers, guidance.

Time convention (zoo-wide, JiT's): one normalized time t in [0, 1], t = 1 is DATA and t = 0 is NOISE,
and every schedule writes ``z_t = a(t) x + b(t) eps``:

- ``LinearFlow`` (JiT, SiT): a = t, b = 1 - t. diffusers' flow convention is the mirror, sigma = 1 - t.
- ``VP(beta="linear" | "cosine")``: native diffusion time tau = 1 - t, a = sqrt(alpha_bar(tau)),
  b = sqrt(1 - alpha_bar(tau)).
- ``EDM`` (VE): a = 1, b = sigma(t) = (sigma_max^(1/rho) + t (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
  so a uniform grid in t from 0 to 1 is the Karras grid from sigma_max down to sigma_min.

"v" is always the path velocity ``dz/dt = a'(t) x + b'(t) eps``: for the linear flow ``v = x - eps``
(JiT's v); for the cosine VP with s = 0 it is -pi/2 times Salimans & Ho's ``alpha eps - sigma x``
(the angle's scale, and the sign because t runs toward data). The score is ``-eps/b``.

``Denoiser`` is net + schedule + prediction + clamps as one module (``forward(z, t, y) -> x_hat``).
Samplers take ``denoise(z, t) -> x_hat`` with t of shape [B], walk ``schedule.grid(steps)`` from
noise to data and return the clean estimate.
"""

from zoo.diffusion.denoiser import Denoiser, DenoiserOutput
from zoo.diffusion.guidance import best_of_n, classifier_free, cosine_reward, reward_guided
from zoo.diffusion.losses import cosine_velocity_loss, denoising_loss, validate
from zoo.diffusion.parameterization import SPACES, convert, true_value
from zoo.diffusion.refine import PredictAndPerturb
from zoo.diffusion.samplers import (
    SAMPLERS,
    clean_estimate,
    ddim,
    ddim_step,
    euler,
    euler_step,
    heun,
    heun_step,
    sample,
    sde,
    sde_step,
)
from zoo.diffusion.schedules import EDM, VP, LinearFlow, Schedule, append_dims
from zoo.diffusion.time_samplers import LogitNormal, LogNormalSigma, Shifted, Uniform, alpha_for_dim, shift

__all__ = [
    "EDM",
    "Denoiser",
    "DenoiserOutput",
    "SAMPLERS",
    "SPACES",
    "VP",
    "LinearFlow",
    "LogitNormal",
    "LogNormalSigma",
    "PredictAndPerturb",
    "Schedule",
    "Shifted",
    "Uniform",
    "alpha_for_dim",
    "append_dims",
    "best_of_n",
    "classifier_free",
    "clean_estimate",
    "convert",
    "cosine_reward",
    "cosine_velocity_loss",
    "ddim",
    "ddim_step",
    "denoising_loss",
    "euler",
    "euler_step",
    "heun",
    "heun_step",
    "reward_guided",
    "sample",
    "sde",
    "sde_step",
    "shift",
    "true_value",
    "validate",
]
