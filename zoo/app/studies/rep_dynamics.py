"""Representation dynamics over noise levels, with confidence: arms of data size x model size, several seeds.

Li et al. (NeurIPS 2025, arXiv 2502.05743; alignment.md §5): the linear-probe accuracy of a diffusion
model's features over noise level is unimodal when the model generalizes and decreases monotonically
when it memorizes (small data, large capacity). Each arm (a data size of ``runs`` x a model of
``models``) is fitted once per seed of ``seeds``; every fit keeps the experiment's per-run table
(``report``: the ``NoiseLevelProbe`` curve on the probe split, the memorization ratio of its samples,
the detector AUCs). Then each arm's curve is measured again with confidence: per seed, the features at
each level of ``levels`` (averaged over ``draws`` noise draws) of every labelled image of the train,
val and test splits, probed by ``folds``-fold cross-validation that scores only the images the model
never trained on (``callbacks.metrics.shape_verdict.cross_validated_curve``); over the seeds, a hierarchical
bootstrap gives the band, the gap (interior peak minus data end) and the verdict of ``shape_verdict``.
The data's ``seed`` follows the run's, so a seed also redraws the split and the ``n_train`` subset and
the band covers that choice of images too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from callbacks.metrics.shape_verdict import ShapeVerdict, band_figure, cross_validated_curve, shape_verdict
from datamodules.base import BatchDictDataset
from zoo.app.study import (
    base_overrides,
    compose_run,
    fit_runs,
    flatten_results,
    last_checkpoint,
    markdown_table,
    write_report,
)
from zoo.loading import load_method


def images(dataset: Dataset) -> torch.Tensor:
    """The images of a dataset of ``(x01, y)`` pairs, stacked."""
    return torch.stack([torch.as_tensor(dataset[i][0]) for i in range(len(dataset))])


def labelled_pool(
    data_cfg: DictConfig, batch_size: int = 256, pool_size: int | None = None, seed: int = 0
) -> tuple[DataLoader, torch.Tensor]:
    """A loader over every image of the train (all of it, whatever ``n_train``), val and test splits, and
    the mask of the images to score: those equal to none of the run's training images. With ``pool_size``,
    only a random subset (seeded by ``seed``) of that many unseen images, all scored: the cross-validated
    probe is then fitted and scored among them (a large set such as Fashion-MNIST's 70,000 images)."""
    train, val, test = instantiate(data_cfg, n_train=None).splits
    pool: Dataset = ConcatDataset([train, val, test])
    seen = {image.numpy().tobytes() for image in images(instantiate(data_cfg).splits[0])}
    scored = torch.tensor([image.numpy().tobytes() not in seen for image in images(pool)])
    if pool_size is not None:
        unseen = scored.nonzero().squeeze(1)
        if pool_size < 2 or pool_size > len(unseen):
            raise ValueError(
                f"study.pool_size={pool_size}: pick 2..{len(unseen)} (the images this run never trained on)"
            )
        order = torch.randperm(len(unseen), generator=torch.Generator().manual_seed(seed))
        pool = Subset(pool, unseen[order[:pool_size]].sort().values.tolist())
        scored = torch.ones(pool_size, dtype=torch.bool)
    return DataLoader(BatchDictDataset(pool), batch_size=batch_size, shuffle=False), scored


def arm_summary(curve: ShapeVerdict, per_seed: Sequence[Mapping[str, float]]) -> dict[str, float | str]:
    """One arm's row: the verdict and its statistics, and the mean and range over seeds of the run metrics."""
    row: dict[str, float | str] = dict(curve.summary())
    for column in per_seed[0]:
        values = [float(run[column]) for run in per_seed]
        row[column] = sum(values) / len(values)
        if column == "memorization" or column.startswith("auc_"):
            row[f"{column}_min"], row[f"{column}_max"] = min(values), max(values)
    return row


def run(
    cfg: DictConfig,
    name: str,
    runs: Mapping[str, Sequence[str]],
    models: Mapping[str, Sequence[str]],
    seeds: Sequence[int],
    report: Mapping[str, str],
    levels: Sequence[float],
    draws: int = 4,
    folds: int = 5,
    n_bootstrap: int = 2000,
    alpha: float = 0.1,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
    pool_size: int | None = None,
) -> dict[str, float]:
    """Fit every arm at every seed, write ``<name>.json``/``.md`` and ``<name>.png``; returns the flat table.

    ``pool_size`` caps the images each curve scores (``labelled_pool``); null scores every unseen image."""
    if not seeds:
        raise ValueError(
            "study.seeds is empty: give at least one training seed (3 or more for a band over seeds)"
        )
    root = Path(cfg.paths.output_dir)
    plan: dict[str, tuple[str, int, list[str]]] = {}  # label -> (arm, seed, overrides)
    for model, model_overrides in models.items():
        for size, size_overrides in runs.items():
            arm = size if model == next(iter(models)) else f"{size}_{model}"
            for seed in seeds:
                plan[f"{arm}/seed{seed}"] = (arm, seed, [*size_overrides, *model_overrides, f"seed={seed}"])
    per_run = fit_runs(cfg, name, {label: overrides for label, (_, _, overrides) in plan.items()}, report)
    arms: dict[str, dict[str, float | str]] = {}
    curves: dict[str, ShapeVerdict] = {}
    for arm in dict.fromkeys(of for of, _, _ in plan.values()):
        labels = [label for label, (of, _, _) in plan.items() if of == arm]
        correct = []
        for label in labels:
            _, seed, overrides = plan[label]
            module = load_method(last_checkpoint(cfg, label))
            loader, scored = labelled_pool(
                compose_run([*base_overrides(), *overrides, "study=null"]).data, pool_size=pool_size, seed=seed
            )
            correct.append(
                cross_validated_curve(
                    module, loader, scored, levels, draws, folds, seed, weight_decay, max_iter
                )
            )
        curves[arm] = shape_verdict(levels, correct, alpha, n_bootstrap, seed=0)
        arms[arm] = arm_summary(curves[arm], [per_run[label] for label in labels])
    if rank_zero_only.rank == 0:
        write_report(root, name, per_run, single=False)
        write_arms(root, name, arms, curves)
    return {
        **flatten_results(per_run),
        **{f"{arm}/{k}": v for arm, row in arms.items() for k, v in row.items() if k != "verdict"},
    }


def write_arms(
    root: Path, name: str, arms: Mapping[str, Mapping[str, float | str]], curves: Mapping[str, ShapeVerdict]
) -> None:
    """The per-arm verdicts and curves into ``<name>.json`` (key ``arms``), a table in ``.md``, bands in ``.png``."""
    path = root / f"{name}.json"
    table = json.loads(path.read_text())
    table["arms"] = {
        arm: {
            **row,
            "levels": curves[arm].levels,
            "accuracy": curves[arm].accuracy,
            "lo": curves[arm].lo,
            "hi": curves[arm].hi,
        }
        for arm, row in arms.items()
    }
    path.write_text(json.dumps(table, indent=2))
    numeric = {arm: {k: v for k, v in row.items() if k != "verdict"} for arm, row in arms.items()}
    verdicts = ", ".join(f"{arm}: {row['verdict']}" for arm, row in arms.items())
    level = next(iter(curves.values())).level
    with (root / f"{name}.md").open("a") as handle:
        handle.write(
            f"\n## Per arm: cross-validated curves over seeds, {level:.0%} intervals\n\nverdicts: {verdicts}\n\n"
            + markdown_table(numeric)
        )
    band_figure(curves).savefig(root / f"{name}.png", dpi=120)
