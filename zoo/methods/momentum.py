"""Momentum (EMA) target networks: the momentum schedules and the update, as pure functions.

A target network follows its online network by ``theta_t <- m theta_t + (1 - m) theta_o`` (MoCo,
He et al. CVPR 2020, Eq. 2; BYOL, Grill et al. 2020, Eq. 1), with ``m`` constant (MoCo v2) or raised
from ``m0`` to 1 on a cosine (BYOL Sec. 3.2, MoCo v3 Sec. 4). ``m = 0`` makes the target a copy of the
online network at every step (consistency distillation's ``mu = 0``). ``Method`` applies these to its
``momentum_pairs`` once per optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

MOMENTUM_SCHEDULES = ("constant", "cosine")


def cosine_momentum(step: int, total: int, m0: float) -> float:
    """``m(k) = 1 - (1 - m0) (cos(pi k / K) + 1) / 2`` (BYOL, Grill et al. 2020, Sec. 3.2; MoCo v3 Sec. 4).

    Rises from ``m0`` at step 0 to 1 at step ``total``; steps past ``total`` stay at 1.
    """
    progress = min(step, total) / max(total, 1)
    return 1 - 0.5 * (1 + math.cos(math.pi * progress)) * (1 - m0)


def scheduled_momentum(schedule: str, m0: float, step: int, total: int) -> float:
    """The momentum after ``step`` of ``total`` optimizer steps: ``m0`` (constant) or ``cosine_momentum``."""
    if schedule not in MOMENTUM_SCHEDULES:
        raise ValueError(f"momentum schedule {schedule!r}: choose one of {', '.join(MOMENTUM_SCHEDULES)}")
    return m0 if schedule == "constant" else cosine_momentum(step, total, m0)


@torch.no_grad()
def ema_update(pairs: Iterable[tuple[nn.Module, nn.Module]], m: float) -> None:
    """``target <- m target + (1 - m) online`` for every parameter of every ``(online, target)`` pair.

    Buffers are left alone, as in MoCo's reference code: a target's BatchNorm statistics come from
    its own forward passes. ``lerp_`` makes ``m = 0`` an exact copy and ``m = 1`` an exact no-op.
    """
    for online, target in pairs:
        for p_online, p_target in zip(online.parameters(), target.parameters()):
            p_target.lerp_(p_online.detach(), 1 - m)


def check_pairs(pairs: Iterable[tuple[nn.Module, nn.Module]]) -> None:
    """Refuse a pair whose target is not shaped like its online module (the EMA zips their parameters)."""
    for i, (online, target) in enumerate(pairs):
        shapes = [p.shape for p in online.parameters()], [p.shape for p in target.parameters()]
        if shapes[0] != shapes[1]:
            raise ValueError(
                f"momentum pair {i}: the target {type(target).__name__} does not have the parameter shapes of "
                f"the online {type(online).__name__} ({len(shapes[1])} vs {len(shapes[0])} tensors); build the "
                "target as copy.deepcopy(online)"
            )
