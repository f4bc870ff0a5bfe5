"""Diffusion features against SSL features on the same images, with one probe protocol, at two data sizes.

The seed's claim (alignment.md §6): a diffusion model's features are good representations, but below
those of SSL when there is enough data. DDAE (Xiang et al., ICCV 2023) reads the diffusion features at
the best (block, noise level) of a grid search; here that cell comes from the diffusion run's
``ProbeMap`` (selected on the probe val split of its own run), and every row is then scored the same
way: features of the whole training split (all of it, whatever the learner trained on) fit the kNN
(k 20, T 0.07) and linear probes, which are scored on the test split, never used for selection. Rows:
each learner of ``learners`` (MoCo v2/v3, the diffusion model at its cell, features averaged over
``draws`` noise draws, the DAE), the learners of ``random_init`` as built before training (the
diffusion net at the trained model's cell), and the raw pixels. Each size of ``sizes`` trains every
learner on ``n_train`` images, each pass repeated ``repeats`` times more, so a learner takes about
as many steps at every size. Every row comes with a percentile interval over the test images, and so do
the claim's contrasts (``gap_contrasts``, paired over the images): each SSL learner minus the diffusion
features and the diffusion features minus the pixels per size, and the change of the gap between sizes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch import Tensor, nn

from callbacks.features import EmbedFn
from zoo.app.studies.probe_baselines import interval_rows, probe_correct, raw_pixels
from zoo.app.study import (
    base_overrides,
    compose_run,
    fit_all,
    flatten_results,
    last_checkpoint,
    markdown_table,
    nest,
    pick,
    write_report,
)
from zoo.app.train import build
from zoo.loading import load_method


def at_cell(layer: int, t: float, draws: int) -> EmbedFn:
    """An ``embed_fn``: ``embed(x, t=t, layer=layer)`` averaged over ``draws`` fresh noise draws."""

    def embed(module: nn.Module, x: Tensor, **kw) -> Tensor:
        return torch.stack([module.embed(x, t=t, layer=layer) for _ in range(draws)]).mean(0)

    return embed


def size_overrides(overrides: Sequence[str], size: Mapping) -> list[str]:
    """A learner's overrides at one size: ``data.n_train`` and its own ``data.train_repeats`` times ``repeats``."""
    n_train = "null" if size["n_train"] is None else int(size["n_train"])
    sized = [*overrides, f"data.n_train={n_train}"]
    repeats = int(compose_run([*base_overrides(), *sized, "study=null"]).data.train_repeats)
    return [*sized, f"data.train_repeats={repeats * int(size['repeats'])}"]


def check_study(
    learners: Mapping[str, Sequence[str]],
    sizes: Mapping[str, Mapping],
    map_learner: str,
    ssl: Sequence[str],
    random_init: Sequence[str],
) -> None:
    """Every name the study refers to exists, before anything trains."""
    if map_learner not in learners:
        raise ValueError(f"study.map_learner={map_learner!r} is not one of the learners {list(learners)}")
    for key, names in (("ssl", ssl), ("random_init", random_init)):
        unknown = [name for name in names if name not in learners]
        if unknown or (key == "ssl" and not names):
            raise ValueError(f"study.{key}={list(names)} must name learners among {list(learners)}")
    for size, entry in sizes.items():
        if set(entry) != {"n_train", "repeats"} or int(entry["repeats"]) < 1:
            raise ValueError(
                f"study.sizes.{size} must be {{n_train: <int or null>, repeats: <int >= 1>}}, got {dict(entry)}"
            )


def run(
    cfg: DictConfig,
    name: str,
    learners: Mapping[str, Sequence[str]],
    sizes: Mapping[str, Mapping],
    map_learner: str,
    ssl: Sequence[str],
    random_init: Sequence[str],
    draws: int,
    knn: Mapping,
    linear: Mapping,
    n_bootstrap: int = 2000,
    alpha: float = 0.1,
) -> dict[str, float]:
    """Fit every learner at every size, score every row, write ``<name>.json``/``.md``; ``{"<size>/<row>/<probe>": ...}``."""
    check_study(learners, sizes, map_learner, ssl, random_init)
    root = Path(cfg.paths.output_dir)
    probe_data = instantiate(cfg.data, n_train=None, probe_size=None)
    loaders = (probe_data.probe_dataloaders()[0], probe_data.test_dataloader())
    correct: dict[str, dict[str, Tensor]] = {}
    cells: dict[str, dict[str, float]] = {}
    for size, entry in sizes.items():
        runs = {
            learner: size_overrides(learner_overrides, entry)
            for learner, learner_overrides in learners.items()
        }

        def features(learner: str, cell: Mapping[str, float] | None) -> EmbedFn | None:
            """The map learner's features at its cell (known once it has trained), the others' plain ``embed``."""
            return (
                at_cell(int(cell["layer"]), float(cell["t"]), draws)
                if learner == map_learner and cell
                else None
            )

        fitted = fit_all(cfg, name, {f"{size}/{learner}": overrides for learner, overrides in runs.items()})
        label = f"{size}/{map_learner}"
        picked = pick(name, label, fitted[label], {"layer": "probe_map/best_layer", "t": "probe_map/best_t"})
        cells[size] = {"layer": int(picked["layer"]), "t": round(float(picked["t"]), 6)}
        for learner in runs:
            label = f"{size}/{learner}"
            module = load_method(last_checkpoint(cfg, label))
            correct[label] = probe_correct(module, loaders, knn, linear, features(learner, cells.get(size)))
        for learner in random_init:
            untrained = compose_run(
                [*base_overrides(), *runs[learner], "study=null", f"paths.output_dir={root / 'random_init'}"]
            )
            correct[f"{size}/random_init_{learner}"] = probe_correct(
                build(untrained).method, loaders, knn, linear, features(learner, cells.get(size))
            )
        correct[f"{size}/raw_pixels"] = probe_correct(nn.Identity(), loaders, knn, linear, embed_fn=raw_pixels)
    contrasts = gap_contrasts(list(sizes), ssl, map_learner)
    table = interval_rows([correct], contrasts, n_bootstrap, alpha, int(cfg.seed))
    results = {label: row for label, row in table.items() if label in correct}
    gaps = {label: row for label, row in table.items() if label in contrasts}
    if rank_zero_only.rank == 0:
        write_report(root, name, results, single=False)
        report_cells(root, name, cells, gaps, map_learner, 1 - alpha)
    return {**flatten_results(results), **flatten_results(gaps)}


def gap_contrasts(sizes: Sequence[str], ssl: Sequence[str], map_learner: str) -> dict[str, dict[str, float]]:
    """The contrasts the claim is about, per size: every SSL learner minus the diffusion features
    (``<size>/<ssl>-<map_learner>``) and the diffusion features minus raw pixels; across sizes, how the gap
    changes from each later size to the first (``<first>-<size>/<ssl>-<map_learner>``: positive when the
    gap is larger at the first size)."""
    contrasts: dict[str, dict[str, float]] = {}
    for size in sizes:
        for learner in ssl:
            contrasts[f"{size}/{learner}-{map_learner}"] = {f"{size}/{learner}": 1.0, f"{size}/{map_learner}": -1.0}
        contrasts[f"{size}/{map_learner}-raw_pixels"] = {f"{size}/{map_learner}": 1.0, f"{size}/raw_pixels": -1.0}
    first = sizes[0]
    for size in sizes[1:]:
        for learner in ssl:
            contrasts[f"{first}-{size}/{learner}-{map_learner}"] = {
                f"{first}/{learner}": 1.0,
                f"{first}/{map_learner}": -1.0,
                f"{size}/{learner}": -1.0,
                f"{size}/{map_learner}": 1.0,
            }
    return contrasts


def report_cells(
    root: Path,
    name: str,
    cells: Mapping[str, Mapping[str, float]],
    gaps: Mapping[str, Mapping[str, float]],
    map_learner: str,
    level: float,
) -> None:
    """Add the diffusion cell per size and the gap contrasts with their intervals to ``<name>.json`` and ``.md``."""
    path = root / f"{name}.json"
    table = json.loads(path.read_text())
    table["cells"] = {size: dict(cell) for size, cell in cells.items()}
    table["gap"] = nest(gaps, single=False)
    path.write_text(json.dumps(table, indent=2))
    lines = [
        f"\n{map_learner} read at (block, t) from its ProbeMap: "
        + ", ".join(f"{size}: ({cell['layer']}, {cell['t']:g})" for size, cell in cells.items()),
        f"\nthe claim's contrasts (top-1 on the test split, {round(100 * level)}% intervals over test images):\n",
        markdown_table({label: dict(gap) for label, gap in gaps.items()}),
    ]
    with (root / f"{name}.md").open("a") as handle:
        handle.write("\n".join(lines))
