"""The options of a diffusion model's sampler: their defaults, and the checks that make a bad one fail early.

``sample`` (``zoo.diffusion.samplers``) takes them as arguments; a method keeps its defaults in its config
(``method.sampler``) and checks them at construction with ``sampler_options``.
"""

from __future__ import annotations

from typing import Any

from zoo.diffusion.refine import PredictAndPerturb
from zoo.diffusion.samplers import SAMPLERS
from zoo.diffusion.schedules import Schedule

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
"""The sampler options and their defaults: sampler name, steps, stochasticity eta, time shift, CFG scale
and its interval, predict-and-perturb iterations (Song et al.'s self-refining steps)."""


def sampler_options(overrides: dict[str, Any], schedule: Schedule, num_classes: int = 0) -> dict[str, Any]:
    """``SAMPLER_DEFAULTS`` updated by ``overrides``, checked so that a bad setting fails before training (at
    the method's construction) rather than at the first sampling; ``num_classes`` is the net's (0:
    unconditional, which classifier-free guidance cannot use)."""
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
    if options["guidance"] != 1.0 and num_classes == 0:
        raise ValueError(
            f"method.sampler.guidance={options['guidance']} needs a class-conditional net, but the net is "
            "unconditional; set net.num_classes=${num_classes} (or guidance 1.0)"
        )
    try:
        PredictAndPerturb(
            schedule, options["refine_k"], options["refine_tau"], options["refine_fraction"]
        )
    except ValueError as error:
        raise ValueError(f"method.sampler: {error}") from error
    return options
