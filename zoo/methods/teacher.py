"""The frozen teacher of consistency distillation: a ``method=diffusion`` checkpoint, checked against the student.

The teacher must be on the student's schedule (its ODE step walks the student's grid), of the student's
shape, and in the student's space: both in pixels, or both in the latents of the same autoencoder (the
same checkpoint file, by its digest), in which case the student takes the teacher's latent statistics,
so that both see the same normalised latents.
"""

from __future__ import annotations

from collections.abc import Sequence

from zoo.diffusion import Denoiser, Schedule
from zoo.latent_space import LatentSpace
from zoo.loading import load_method
from zoo.methods.diffusion import Diffusion


def load_teacher(
    path: str | None, schedule: Schedule, shape: Sequence[int], space: LatentSpace, setting: str = "method.teacher"
) -> Denoiser:
    """The frozen denoiser of the ``method=diffusion`` checkpoint ``path``; ``space`` takes its latent statistics.
    ``setting`` is the config key that named it, for the errors (``method.init``: ECT's starting weights)."""
    if path is None:
        raise ValueError(
            "method.teacher=null: consistency distillation (method.mode=distill) needs a method=diffusion "
            "checkpoint on EDM (method.teacher=<run>/checkpoints/last.ckpt), or use method.mode=train (CT)"
        )
    teacher = load_method(path, expect=Diffusion, expected="a method=diffusion checkpoint", setting=setting)
    share_latent_space(teacher, path, space, setting)
    if tuple(teacher.shape) != tuple(shape):
        raise ValueError(
            f"{setting}={path} was trained on data of shape {list(teacher.shape)}, but the data here have "
            f"shape {list(shape)}: distil a teacher trained on this dataset"
        )
    if teacher.schedule != schedule:
        raise ValueError(
            f"{setting}={path} was trained on {teacher.schedule}, but method.schedule is {schedule}: "
            "the teacher's ODE step needs the same schedule (train it with method.schedule=EDM and these settings)"
        )
    return teacher.denoiser.requires_grad_(False).eval()


def share_latent_space(teacher: Diffusion, path: str, space: LatentSpace, setting: str = "method.teacher") -> None:
    """Refuse a teacher in another space than ``space``; in latents, copy its statistics into ``space``."""
    mine = None if space.is_pixels else space.autoencoder.digest
    theirs = None if teacher.space.is_pixels else teacher.space.autoencoder.digest
    if mine != theirs:
        given = (teacher.run_config or {}).get("autoencoder")
        where = f"the latents of autoencoder={given}" if theirs else "pixels"
        student = "denoises pixels" if mine is None else "has another autoencoder="
        fix = f"autoencoder={given}" if theirs else "no autoencoder="
        raise ValueError(
            f"{setting}={path} denoises {where}, but this run's student {student}: distil in the teacher's "
            f"space ({fix})"
        )
    if theirs is not None:
        space.norm.load_state_dict(teacher.space.norm.state_dict())
