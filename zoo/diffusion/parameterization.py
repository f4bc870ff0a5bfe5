"""Conversions between the five things a denoiser can output: x, eps, v, the score and EDM's F.

For ``z = a x + b eps`` and the path velocity ``v = da x + db eps`` the pair (x, eps) solves the
2x2 system ``[a b; da db] [x; eps] = [z; v]``, and the score is ``-eps / b = (a x - z) / b^2``
(Song et al. 2021; Kingma et al. 2021). For the linear flow these are JiT's closed forms
(Li & He 2025, Sec. 2): from x, ``eps = (z - t x)/(1-t)``, ``v = (x - z)/(1-t)``; from eps,
``x = (z - (1-t) eps)/t``, ``v = (z - eps)/t``; from v, ``x = z + (1-t) v``, ``eps = z - t v``.
``edm`` is the raw output F of EDM's preconditioning (Karras et al. 2022, Eq. 7): ``x = c_skip z + c_out F``, so
F-prediction with the loss in F space is EDM's loss ``lambda(sigma) ||D - x||^2`` with ``lambda = 1 / c_out^2``
(Eq. 8 and Table 1: ``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2``).
"""

from __future__ import annotations

from torch import Tensor

from zoo.diffusion.schedules import Schedule, append_dims

SPACES = ("x", "eps", "v", "score", "edm")


def check_space(key: str, space: str) -> None:
    """Raise a ValueError naming ``key`` when ``space`` is not one of ``SPACES``."""
    if space not in SPACES:
        raise ValueError(f"{key}={space!r} is not a parameterization; choose one of {', '.join(SPACES)}")


def convert(
    pred: Tensor,
    source: str,
    target: str,
    z: Tensor,
    t: Tensor,
    schedule: Schedule,
    min_b: float = 0.0,
    min_a: float = 0.0,
) -> Tensor:
    """``pred`` (interpreted as ``source``) re-expressed as ``target`` at the noisy input ``z`` and time t [B].

    Every division by b is by ``max(b, min_b)`` and every division by a by ``max(a, min_a)``, each
    written as one fraction: from x, ``v = ((da b - a db) x + db z) / max(b, min_b)``, which for the
    linear flow is JiT's clamped ``(x - z) / max(1 - t, 0.05)`` (Li & He 2025, Sec. 2); from eps,
    ``v = (da z + (a db - b da) eps) / max(a, min_a)``. With both at 0 the conversion is exact.
    """
    check_space("source", source)
    check_space("target", target)
    if min_b < 0 or min_a < 0:
        raise ValueError(f"min_b={min_b}, min_a={min_a}: the clamps must be >= 0")
    if source == target:
        return pred
    if source == "edm":
        x = append_dims(schedule.c_skip(t), z.ndim) * z + append_dims(schedule.c_out(t), z.ndim) * pred
        return convert(x, "x", target, z, t, schedule, min_b, min_a)
    if target == "edm":
        x = convert(pred, source, "x", z, t, schedule, min_b, min_a)
        return edm_output(x, z, t, schedule)
    a, b, da, db = (append_dims(fn(t), z.ndim) for fn in (schedule.a, schedule.b, schedule.da, schedule.db))
    b_div, a_div = b.clamp_min(min_b), a.clamp_min(min_a)
    if source == "x":
        x = pred
        eps = (z - a * x) / b_div
        if target == "v":
            return ((da * b - a * db) * x + db * z) / b_div
    elif source in ("eps", "score"):
        eps = pred if source == "eps" else -b * pred
        x = (z - b * eps) / a_div
        if target == "v":
            return (da * z + (a * db - b * da) * eps) / a_div
    else:
        det = a * db - b * da
        x = (db * z - b * pred) / det
        eps = (a * pred - da * z) / det
    if target == "x":
        return x
    if target == "eps":
        return eps
    return -eps / b_div


def edm_output(x: Tensor, z: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
    """EDM's F for the clean estimate ``x`` at ``z``: ``(x - c_skip z) / c_out`` (Karras et al. 2022, Eq. 7)."""
    return (x - append_dims(schedule.c_skip(t), z.ndim) * z) / append_dims(schedule.c_out(t), z.ndim)


def true_value(space: str, x: Tensor, eps: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
    """The exact ``space`` quantity of a clean ``x`` noised with ``eps`` at t [B]: x, eps, ``da x + db eps``,
    ``-eps/b`` or EDM's F."""
    check_space("space", space)
    if space == "edm":
        return edm_output(x, schedule.noise(x, t, eps), t, schedule)
    if space == "x":
        return x
    if space == "eps":
        return eps
    if space == "score":
        return -eps / append_dims(schedule.b(t), x.ndim)
    return append_dims(schedule.da(t), x.ndim) * x + append_dims(schedule.db(t), x.ndim) * eps
