"""Guidance with SSL information: an unconditional diffusion model steered toward one class by a
frozen MoCo encoder's reward, plainly, by best-of-N and by gradient guidance.

The study trains (or takes) a MoCo encoder and an unconditional diffusion model on the same data,
then samples ``n_samples`` images three ways from the same seed: ``plain``; ``best_of_n`` (the best
of ``best_of`` draws per slot by the reward); ``gradient`` (reward-gradient guidance on x̂ with
``scale``). The reward is ``zoo.rewards.PrototypeReward``: the cosine of the MoCo feature to the mean
feature of ``target_class``. Each arm is scored by the dataset's reference classifier, which the
guidance never sees: ``class_rate`` (the fraction classified as ``target_class``) and ``fd`` (the
Fréchet distance in its features to the training images) with its bootstrap interval.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from zoo.app.studies.reference_fd import ReferenceFD
from zoo.app.study import fit_checkpoints, flatten_results, write_report
from zoo.encoders import zoo as zoo_encoder
from zoo.loading import Has, load_method
from zoo.rewards import PrototypeReward, RewardGuidance


def run(
    cfg: DictConfig,
    name: str,
    encoder_run: Sequence[str],
    diffusion_run: Sequence[str],
    target_class: int,
    n_samples: int,
    best_of: int,
    scale: float,
    encoder_ckpt: str | None = None,
    diffusion_ckpt: str | None = None,
) -> dict[str, float]:
    """Train or load the encoder and the model, sample the three arms, write ``<name>.json``/``.md``."""
    root = Path(cfg.paths.output_dir)
    given = {"moco": encoder_ckpt, "diffusion": diffusion_ckpt}
    runs = {"moco": encoder_run, "diffusion": diffusion_run}
    paths = {
        **fit_checkpoints(cfg, name, {label: runs[label] for label, path in given.items() if path is None}),
        **{label: Path(path) for label, path in given.items() if path is not None},
    }
    encoder_path, model_path = paths["moco"], paths["diffusion"]
    model = load_method(
        model_path, expect=Has("sample"), expected="a diffusion checkpoint", setting="study.diffusion_ckpt"
    )
    reference = ReferenceFD(cfg)
    datamodule = reference.datamodule
    reward = PrototypeReward(zoo_encoder(encoder_path), target_class)
    reward.fit_to(datamodule)
    arms = {
        "plain": None,
        "best_of_n": RewardGuidance(reward, scale=0.0, best_of=best_of),
        "gradient": RewardGuidance(reward, scale=scale, best_of=1),
    }
    results = {}
    for arm, guidance in arms.items():
        model.guidance = guidance
        start = time.perf_counter()
        x = model.sample(n_samples, generator=torch.Generator().manual_seed(int(cfg.seed)))
        seconds = time.perf_counter() - start
        fd, lo, hi = reference.fd(x)
        with torch.no_grad():
            logits = reference.net.logits(x)
        results[arm] = {
            "class_rate": float((logits.argmax(dim=1) == target_class).double().mean()),
            "fd": fd,
            "fd_lo": lo,
            "fd_hi": hi,
            "seconds": seconds,
        }
    if rank_zero_only.rank == 0:
        write_report(root, name, results, single=False)
    return flatten_results(results)
