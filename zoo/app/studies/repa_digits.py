"""REPA's speed-up in small (Yu et al. 2024; specs: alignment.md §1, small-scale check), offline end to end.

The study trains (or takes, ``encoder_ckpt``) a MoCo encoder on the digits, then the same DiT for the same
steps in each arm of ``arms`` (label -> overrides): ``vanilla`` (lambda = 0), ``repa`` (lambda = 0.5 on the
MoCo encoder's tokens) and ``random_encoder`` (lambda = 0.5 on an untrained encoder of the same
architecture: a gain there would be a regulariser, not alignment). ``{encoder_ckpt}`` in an arm's overrides
is replaced by the MoCo checkpoint. Each arm logs the reference classifier's Fréchet distance
(``gen/fd_classifier``, ``callbacks.metrics.reference_net``) every ``callbacks.generative.every_n_epochs`` epochs
to its ``metrics.csv`` (``logger=csv``), ``val/align`` (L_proj on the val split) and, with
``callbacks.linear_probe``, the linear-probe accuracy of the pooled hidden tokens at the aligned block.

Reported per arm: ``fd`` (final), ``fd_curve`` ({step: fd}), ``steps_to_target`` (the steps the arm needs
to reach the vanilla arm's final FD, linearly interpolated on its curve; null if it never does),
``l_proj`` and ``l_proj_centred`` (the cosine after subtracting the mean tokens, which the positive mean
of ReLU features does not inflate), ``probe``; and ``speedup`` = vanilla's steps_to_target / repa's.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from zoo.app.study import fit_checkpoints, fit_runs, last_checkpoint, markdown_table, run_folder
from zoo.loading import Has, load_method
from zoo.stored_config import build_stored
from zoo.terms.alignment import RepresentationAlignment, centred_cosine

FD = "gen/fd_classifier"
COLUMNS = {"fd": FD, "l_proj": "val/align", "probe": "probe/linear_top1"}


def fd_curve(metrics_csv: Path) -> dict[int, float]:
    """``{step: gen/fd_classifier}`` from a run's CSV log (every evaluation along training)."""
    curve = {}
    with metrics_csv.open() as table:
        for row in csv.DictReader(table):
            if row.get(FD):
                # An epoch-end value is logged at the index of the epoch's last step: global_step - 1.
                curve[int(row["step"]) + 1] = float(row[FD])
    if not curve:
        raise KeyError(f"{metrics_csv} has no {FD}: the arm needs callbacks.generative and logger=csv")
    return dict(sorted(curve.items()))


def steps_to_target(curve: Mapping[int, float], target: float) -> float | None:
    """The first step at which ``curve`` reaches ``target`` (linear between evaluations), or None."""
    points = sorted(curve.items())
    for i, (step, fd) in enumerate(points):
        if fd <= target:
            if i == 0:
                return float(step)
            before, fd_before = points[i - 1]
            return before + (fd_before - target) / (fd_before - fd) * (step - before)
    return None


def speedup(vanilla_steps: float | None, repa_steps: float | None) -> float | None:
    """``vanilla_steps / repa_steps``: how many times fewer steps REPA needs for vanilla's final FD."""
    if vanilla_steps is None or repa_steps is None or repa_steps <= 0:
        return None
    return vanilla_steps / repa_steps


@torch.no_grad()
def centred_alignment(checkpoint: Path, seed: int) -> float:
    """The mean-centred token cosine of the trained projector on the val split, at the run's noise levels."""
    method = load_method(
        checkpoint, expect=Has("denoiser"), expected="a diffusion checkpoint", setting="study"
    )
    term = method.terms["align"]
    if not isinstance(term, RepresentationAlignment):
        raise ValueError(
            f"{checkpoint}: method.terms.align is a {type(term).__name__}, not REPA's alignment term"
        )
    datamodule = build_stored(method.run_config, "data", f"study ({checkpoint})")
    datamodule.setup("fit")
    generator = torch.Generator().manual_seed(seed)
    targets, projected = [], []
    for batch in datamodule.probe_dataloaders()[1]:
        x = batch["x"]
        t = method.time_sampler(len(x), generator=generator).to(x.dtype)
        z = method.schedule.noise(x, t, torch.randn(x.shape, generator=generator))
        hidden = method.denoiser.output(z, t, None, term.blocks).hidden[term.blocks[0]]
        targets.append(term.targets(x))
        projected.append(term.projector(hidden))
    return float(centred_cosine(torch.cat(targets), torch.cat(projected)))


def run(
    cfg: DictConfig,
    name: str,
    encoder_run: Sequence[str],
    arm_run: Sequence[str],
    arms: Mapping[str, Sequence[str]],
    block: int,
    epochs: int,
    eval_every: int,
    n_samples: int,
    encoder_ckpt: str | None = None,
) -> dict[str, float]:
    """Train or take the encoder, fit every arm (``arm_run``, the alignment after ``block`` (1-indexed),
    ``epochs`` epochs with the FD of ``n_samples`` every ``eval_every``, then the arm's own overrides),
    write ``<name>.json``/``.md``; returns the flat figures."""
    if not {"vanilla", "repa"} <= set(arms):
        raise ValueError(
            f"study.arms={list(arms)} needs a 'vanilla' and a 'repa' arm (speed-up of one over the other)"
        )
    root = Path(cfg.paths.output_dir)
    if encoder_ckpt is None:
        encoder_ckpt = str(fit_checkpoints(cfg, f"{name}/encoder", {"moco": encoder_run})["moco"])
    if epochs % eval_every:
        raise ValueError(
            f"study.epochs={epochs} is not a multiple of study.eval_every={eval_every}: the final FD would be "
            "missing from the curve"
        )
    schedule = [
        f"method.terms.align.block={block}",
        f"trainer.max_epochs={epochs}",
        f"trainer.check_val_every_n_epoch={eval_every}",
        f"callbacks.generative.every_n_epochs={eval_every}",
        f"callbacks.generative.n_samples={n_samples}",
        # The probe reads the aligned block: Denoiser.embed's 0-based layer.
        f"+callbacks.linear_probe={{_target_: callbacks.LinearProbe, every_n_epochs: null, "
        f"embed_kwargs: {{layer: {block - 1}}}}}",
    ]
    runs = {
        arm: [o.replace("{encoder_ckpt}", encoder_ckpt) for o in [*arm_run, *schedule, *overrides]]
        for arm, overrides in arms.items()
    }
    finals = fit_runs(cfg, name, runs, COLUMNS)
    curves = {arm: fd_curve(run_folder(root, arm) / "metrics.csv") for arm in runs}
    target = finals["vanilla"]["fd"]
    results: dict[str, Any] = {}
    for arm in runs:
        results[arm] = {
            **finals[arm],
            "fd_curve": curves[arm],
            "steps_to_target": steps_to_target(curves[arm], target),
            "l_proj_centred": centred_alignment(last_checkpoint(cfg, arm), int(cfg.seed)),
        }
    results["speedup"] = speedup(results["vanilla"]["steps_to_target"], results["repa"]["steps_to_target"])
    results["encoder_ckpt"] = encoder_ckpt
    results["seed"] = int(cfg.seed)
    if rank_zero_only.rank == 0:
        write(root, name, results, list(runs))
    flat = {f"{arm}/{key}": value for arm in runs for key, value in finals[arm].items()}
    flat.update({f"{arm}/steps_to_target": results[arm]["steps_to_target"] for arm in runs})
    return {**flat, "speedup": results["speedup"]}


def write(root: Path, name: str, results: Mapping[str, Any], arms: Sequence[str]) -> None:
    """``<name>.json`` and ``<name>.md``: the figures per arm, then FD against steps."""
    (root / f"{name}.json").write_text(json.dumps(results, indent=2))
    scalars = {
        arm: {
            key: float("nan") if results[arm][key] is None else results[arm][key]
            for key in ("fd", "steps_to_target", "l_proj", "l_proj_centred", "probe")
        }
        for arm in arms
    }
    steps = sorted({step for arm in arms for step in results[arm]["fd_curve"]})
    curve = {
        f"step {step}": {arm: results[arm]["fd_curve"].get(step, float("nan")) for arm in arms}
        for step in steps
    }
    text = (
        f"# {name}\n\nseed {results['seed']}; encoder {results['encoder_ckpt']}; speed-up "
        f"{results['speedup'] if results['speedup'] is None else round(results['speedup'], 3)}\n\n"
        f"{markdown_table(scalars)}\n## FD against steps\n\n{markdown_table(curve)}"
    )
    (root / f"{name}.md").write_text(text)
