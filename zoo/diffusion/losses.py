"""The denoising loss for any prediction in any loss space (the 3x3 of JiT's Table 2), and its guards."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.diffusion.parameterization import check_space, convert, true_value
from zoo.diffusion.schedules import Schedule


def denoising_loss(
    out: Tensor,
    prediction: str,
    loss_space: str,
    x: Tensor,
    eps: Tensor,
    t: Tensor,
    schedule: Schedule,
    min_b: float = 0.0,
    min_a: float = 0.0,
) -> Tensor:
    """Per-sample ``mean ||convert(out) - convert(truth)||^2`` in ``loss_space``, shape [B].

    The net output ``out`` is read as ``prediction``; both it and the true ``prediction`` value of
    ``(x, eps)`` go through the same (clamped) map into ``loss_space``, as JiT does
    (Li & He 2025, Sec. 2: ``v = (x - z)/max(1-t, 0.05)`` for both). The map is affine with the same
    z-term, so the loss is ``c(t)^2 ||out - truth||^2``: x-prediction with v-loss on the linear flow is
    ``||x_hat - x||^2 / max(1 - t, min_b)^2``. With no clamp the target is the exact x, eps or v.
    """
    check_space("method.prediction", prediction)
    check_space("method.loss_space", loss_space)
    error = out - true_value(prediction, x, eps, t, schedule)
    mapped = convert(error, prediction, loss_space, torch.zeros_like(x), t, schedule, min_b, min_a)
    return mapped.pow(2).flatten(1).mean(1)


def validate(
    prediction: str,
    loss_space: str,
    schedule: Schedule,
    t_lo: float,
    t_hi: float,
    min_b: float = 0.0,
    min_a: float = 0.0,
) -> None:
    """Raise a ValueError if the loss is undefined at an end of the time sampler's support [t_lo, t_hi].

    Checked at both ends (the schedules are monotone, so trouble sits there): the coefficient that
    maps the prediction error into ``loss_space`` and the true prediction target must be finite.
    Typical failures: eps-prediction read as x or v where a = 0 (pure noise, flow t = 0),
    x-prediction read as eps/v/score where b = 0 (data, t = 1) without ``min_b``, and anything
    involving v where VP's db is infinite (t = 1).
    """
    check_space("method.prediction", prediction)
    check_space("method.loss_space", loss_space)
    for t in (t_lo, t_hi):
        tt = torch.tensor([t], dtype=torch.float64)
        one = torch.ones(1, dtype=torch.float64)
        coefficient = convert(one, prediction, loss_space, torch.zeros_like(one), tt, schedule, min_b, min_a)
        truth = true_value(prediction, one, one, tt, schedule)
        if not (torch.isfinite(coefficient).all() and torch.isfinite(truth).all()):
            raise ValueError(_undefined_message(prediction, loss_space, schedule, t, min_b, min_a))


def _undefined_message(
    prediction: str, loss_space: str, schedule: Schedule, t: float, min_b: float, min_a: float
) -> str:
    tt = torch.tensor(t, dtype=torch.float64)
    head = (
        f"method.prediction={prediction!r} with method.loss_space={loss_space!r} is undefined at t={t} "
        f"on {type(schedule).__name__}, which the time sampler can reach: "
    )
    if "v" in (prediction, loss_space) and not bool(
        torch.isfinite(schedule.da(tt)) and torch.isfinite(schedule.db(tt))
    ):
        return head + (
            "the path velocity v = da x + db eps is infinite there; "
            "use a time sampler that stays inside (0, 1) away from t, or a loss space other than 'v'"
        )
    if float(schedule.a(tt).clamp_min(min_a)) == 0.0:
        return head + (
            "a(t) = 0 (pure noise), so x cannot be recovered from eps; "
            "set method.min_a > 0, use a time sampler that stays away from t (e.g. Uniform(lo=0.05)), "
            "or predict 'x' or 'v'"
        )
    return head + (
        "b(t) = 0 (clean data), so eps, v and the score divide by zero; "
        "set method.min_b > 0 (JiT clamps 1 - t at 0.05), or use a time sampler that stays away from t"
    )


def cosine_velocity_loss(v_hat: Tensor, v: Tensor) -> Tensor:
    """LightningDiT's ``1 - cos(v_hat, v)`` (Yao et al. 2025), cosine over dim 1, mean over the rest: [B].

    For images [B, C, H, W] the cosine is over channels at each position; for vectors [B, D] over D.
    """
    return (1 - F.cosine_similarity(v_hat, v, dim=1)).reshape(v.shape[0], -1).mean(1)
