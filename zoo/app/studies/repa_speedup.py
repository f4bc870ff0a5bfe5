"""REPA's speed-up in small (Yu et al. 2024; specs: alignment.md §1, small-scale check), offline end to end.

The study trains (or takes, ``encoder_ckpt``) a MoCo encoder, then the same DiT for the same steps in each
arm of ``arms`` (label -> overrides) at each seed of ``seeds``: ``vanilla`` (lambda = 0), ``repa`` (lambda =
0.5 on the MoCo encoder's tokens) and controls, e.g. ``random_encoder`` (an untrained encoder of the same
architecture: a gain there is not the learned features') and ``method.terms.align.layout=permuted`` /
``pooled`` (the trained encoder's features without their spatial structure, iREPA's question).
``{encoder_ckpt}`` in an arm's overrides is replaced by the MoCo checkpoint. Each run logs the reference
classifier's Fréchet distance (``gen/fd_classifier``, ``callbacks.metrics.reference_net``) every
``callbacks.generative.every_n_epochs`` epochs to its ``metrics.csv`` (``logger=csv``), ``val/align`` (L_proj
on the val split) and the linear-probe accuracy of the pooled hidden tokens at the aligned block.

Reported per arm, as means over seeds: ``fd`` (final; ``fd_min``/``fd_max`` over seeds), ``fd_curve`` ({step:
mean fd}), ``steps_to_target`` (the steps the mean curve needs to reach vanilla's mean final FD, linearly
interpolated; null if it never does), ``speedup`` over vanilla (vanilla's steps to its own final FD over the
arm's) with a percentile interval from resampling the seeds, ``l_proj`` and ``l_proj_centred`` (the cosine after
subtracting the mean tokens, which the positive mean of ReLU features does not inflate), ``probe``, and every
seed's own figures; ``repa_over``: REPA's speed-up over every other arm, the same way."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from callbacks.metrics.hierarchical_bootstrap import percentile_interval
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


def mean_curve(curves: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """The pointwise mean of FD curves evaluated at the same steps."""
    steps = sorted(curves[0])
    if any(sorted(curve) != steps for curve in curves):
        raise ValueError(f"the seeds' FD curves are evaluated at different steps: {[sorted(c) for c in curves]}")
    return {step: sum(curve[step] for curve in curves) / len(curves) for step in steps}


def speedup_over(curves: Sequence[Mapping[int, float]], base: Sequence[Mapping[int, float]]) -> float | None:
    """How many times fewer steps the mean of ``curves`` needs than the mean of ``base`` to reach ``base``'s
    final FD (None: never within the budget)."""
    base_curve = mean_curve(base)
    target = base_curve[max(base_curve)]
    return speedup(steps_to_target(base_curve, target), steps_to_target(mean_curve(curves), target))


def speedup_interval(
    curves: Sequence[Mapping[int, float]],
    base: Sequence[Mapping[int, float]],
    n_bootstrap: int,
    alpha: float,
    seed: int,
) -> tuple[float, float]:
    """The ``1 - alpha`` percentile interval of ``speedup_over`` under resampling the seeds (the same draw in
    both arms: seed ``i`` of one arm shares encoder, data order and initial weights with seed ``i`` of the other);
    a replicate that never reaches the target counts as speed-up 0."""
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n_bootstrap):
        pick = torch.randint(len(curves), (len(curves),), generator=generator).tolist()
        value = speedup_over([curves[i] for i in pick], [base[i] for i in pick])
        values.append(0.0 if value is None else value)
    return percentile_interval(torch.tensor(values, dtype=torch.float64), alpha)


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
    seeds: Sequence[int] = (0,),
    n_bootstrap: int = 2000,
    alpha: float = 0.1,
) -> dict[str, float]:
    """Train or take the encoder, fit every arm at every seed (``arm_run``, the alignment after ``block``
    (1-indexed), ``epochs`` epochs with the FD of ``n_samples`` every ``eval_every``, then the arm's own
    overrides), write ``<name>.json``/``.md``; returns the flat figures."""
    if not {"vanilla", "repa"} <= set(arms):
        raise ValueError(
            f"study.arms={list(arms)} needs a 'vanilla' and a 'repa' arm (speed-up of one over the other)"
        )
    if not seeds:
        raise ValueError("study.seeds is empty: give at least one training seed, e.g. [0, 1, 2]")
    if epochs % eval_every:
        raise ValueError(
            f"study.epochs={epochs} is not a multiple of study.eval_every={eval_every}: the final FD would be "
            "missing from the curve"
        )
    root = Path(cfg.paths.output_dir)
    if encoder_ckpt is None:
        encoder_ckpt = str(fit_checkpoints(cfg, f"{name}/encoder", {"moco": encoder_run})["moco"])
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
    labels = {(arm, seed): f"{arm}/seed{seed}" for arm in arms for seed in seeds}
    runs = {
        labels[arm, seed]: [
            o.replace("{encoder_ckpt}", encoder_ckpt) for o in [*arm_run, *schedule, *overrides, f"seed={seed}"]
        ]
        for arm, overrides in arms.items()
        for seed in seeds
    }
    finals = fit_runs(cfg, name, runs, COLUMNS)
    per_seed = {
        arm: {
            seed: {
                **finals[labels[arm, seed]],
                "fd_curve": fd_curve(run_folder(root, labels[arm, seed]) / "metrics.csv"),
                "l_proj_centred": centred_alignment(last_checkpoint(cfg, labels[arm, seed]), seed),
            }
            for seed in seeds
        }
        for arm in arms
    }
    curves = {arm: [per_seed[arm][seed]["fd_curve"] for seed in seeds] for arm in arms}
    vanilla_curve = mean_curve(curves["vanilla"])
    target = vanilla_curve[max(vanilla_curve)]
    results: dict[str, Any] = {}
    for arm in arms:
        curve = mean_curve(curves[arm])
        finals_fd = [float(per_seed[arm][seed]["fd"]) for seed in seeds]
        lo, hi = speedup_interval(curves[arm], curves["vanilla"], n_bootstrap, alpha, int(cfg.seed))
        results[arm] = {
            **{key: mean_of(per_seed[arm], key) for key in ("fd", "l_proj", "l_proj_centred", "probe")},
            "fd_min": min(finals_fd),
            "fd_max": max(finals_fd),
            "fd_curve": curve,
            "steps_to_target": steps_to_target(curve, target),
            "speedup": speedup_over(curves[arm], curves["vanilla"]),
            "speedup_lo": lo,
            "speedup_hi": hi,
            "seeds": {str(seed): per_seed[arm][seed] for seed in seeds},
        }
    results["repa_over"] = {}
    for arm in arms:
        if arm != "repa":
            lo, hi = speedup_interval(curves["repa"], curves[arm], n_bootstrap, alpha, int(cfg.seed))
            results["repa_over"][arm] = {"speedup": speedup_over(curves["repa"], curves[arm]), "lo": lo, "hi": hi}
    results["speedup"] = results["repa"]["speedup"]
    results["encoder_ckpt"] = encoder_ckpt
    results["seeds"] = [int(seed) for seed in seeds]
    results["level"] = 1 - alpha
    if rank_zero_only.rank == 0:
        write(root, name, results, list(arms))
    flat = {f"{arm}/{key}": results[arm][key] for arm in arms for key in ("fd", "steps_to_target", "speedup")}
    flat.update({f"repa_over/{arm}": entry["speedup"] for arm, entry in results["repa_over"].items()})
    return {**flat, "speedup": results["speedup"]}


def mean_of(rows: Mapping[int, Mapping[str, Any]], key: str) -> float | None:
    """The mean over seeds of a per-seed figure (None where a seed lacks it)."""
    values = [row.get(key) for row in rows.values()]
    return None if any(v is None for v in values) else sum(float(v) for v in values) / len(values)


def write(root: Path, name: str, results: Mapping[str, Any], arms: Sequence[str]) -> None:
    """``<name>.json`` and ``<name>.md``: the figures per arm (means over seeds, intervals over seeds), then the
    mean FD against steps."""
    (root / f"{name}.json").write_text(json.dumps(results, indent=2))
    columns = ("fd", "fd_min", "fd_max", "steps_to_target", "speedup", "speedup_lo", "speedup_hi")
    scalars = {
        arm: {
            key: float("nan") if results[arm][key] is None else results[arm][key]
            for key in (*columns, "l_proj", "l_proj_centred", "probe")
        }
        for arm in arms
    }
    over = {
        f"repa over {arm}": {k: float("nan") if v is None else v for k, v in entry.items()}
        for arm, entry in results["repa_over"].items()
    }
    steps = sorted({step for arm in arms for step in results[arm]["fd_curve"]})
    curve = {
        f"step {step}": {arm: results[arm]["fd_curve"].get(step, float("nan")) for arm in arms}
        for step in steps
    }
    level = round(100 * results["level"])
    text = (
        f"# {name}\n\nseeds {results['seeds']}; encoder {results['encoder_ckpt']}. Means over seeds; fd_min/fd_max "
        f"the range over seeds; speed-ups from the mean FD curves (steps to the base arm's final FD), {level}% "
        "intervals from resampling the seeds (0: a replicate never reaching the target).\n\n"
        f"{markdown_table(scalars)}\n## REPA's speed-up over each arm\n\n{markdown_table(over)}"
        f"\n## Mean FD against steps\n\n{markdown_table(curve)}"
    )
    (root / f"{name}.md").write_text(text)
