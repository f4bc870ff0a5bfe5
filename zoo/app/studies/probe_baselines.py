"""A study of representation learners against the two baselines every SSL table needs, with intervals.

Each run of ``runs`` is fitted once per seed of ``seeds`` (as in ``zoo.app.study``), then every row is
scored by the same kNN and linear probes (``knn``: ``k``, ``temperature``; ``linear``: ``weight_decay``,
``max_iter``; the settings of the probe callbacks), fitted on the features of the whole training split and scored on the
test split, which nothing selects on. Two rows are added: ``random_init``, the encoder of the run
``baseline_run`` as built before any training (per seed, the very weights that run started from), and
``raw_pixels``, the flattened images. A learner is worth its compute only by its margin over these (MoCo,
He et al. 2020, Sec. 4.1, reports the same protocol against random init): every row and every margin
``<run>-raw_pixels``, ``<run>-random_init`` comes with a percentile interval of a hierarchical bootstrap
over the seeds and the test images (``callbacks.metrics.hierarchical_bootstrap``), paired over images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader

from callbacks.features import EmbedFn, probe_split_features
from callbacks.metrics.hierarchical_bootstrap import accuracy_intervals
from callbacks.metrics.knn import knn_correct
from callbacks.metrics.linear import linear_probe_correct
from zoo.app.configs import base_overrides, compose_run
from zoo.app.study import fit_all, flatten_results, last_checkpoint, write_report
from zoo.app.train import build
from zoo.loading import load_method

PROBES = ("knn", "linear")


def raw_pixels(module: nn.Module, x: Tensor, **kw) -> Tensor:
    """The flattened input ``[B, C*H*W]``: the no-learning baseline's features."""
    return x.flatten(1)


def probe_correct(
    module: nn.Module,
    loaders: tuple[DataLoader, DataLoader],
    knn: Mapping,
    linear: Mapping,
    embed_fn: EmbedFn | None = None,
) -> dict[str, Tensor]:
    """``{"knn": ..., "linear": ...}``: per image of the second loader, whether each probe is right.

    Both probes are fitted on the first loader's features (``module.embed`` or ``embed_fn``) with the probe
    callbacks' settings: ``knn`` the ``KNNProbe`` config (``k``, ``temperature``), ``linear`` the
    ``LinearProbe`` config (``weight_decay``, ``max_iter``).
    """
    train_feats, train_y, test_feats, test_y = probe_split_features(module, loaders, "probe_baselines", embed_fn)
    return {
        "knn": knn_correct(train_feats, train_y, test_feats, test_y, k=knn["k"], temperature=knn["temperature"]),
        "linear": linear_probe_correct(
            train_feats, train_y, test_feats, test_y, weight_decay=linear["weight_decay"], max_iter=linear["max_iter"]
        ),
    }


def interval_rows(
    correct: Sequence[Mapping[str, Mapping[str, Tensor]]],
    contrasts: Mapping[str, Mapping[str, float]],
    n_bootstrap: int,
    alpha: float,
    seed: int,
) -> dict[str, dict[str, float]]:
    """``{row or contrast: {"knn", "knn_lo", "knn_hi", "linear", ...}}`` from per-seed ``{row: {probe: correct}}``
    (``accuracy_intervals`` per probe)."""
    table: dict[str, dict[str, float]] = {}
    for probe in PROBES:
        per_seed = [{row: scores[probe] for row, scores in rows.items()} for rows in correct]
        for row, entry in accuracy_intervals(per_seed, contrasts, n_bootstrap, alpha, seed).items():
            table.setdefault(row, {}).update(
                {probe: entry["acc"], f"{probe}_lo": entry["lo"], f"{probe}_hi": entry["hi"]}
            )
    return table


def run(
    cfg: DictConfig,
    name: str,
    runs: Mapping[str, Sequence[str]],
    baseline_run: str,
    knn: Mapping,
    linear: Mapping,
    seeds: Sequence[int] = (0,),
    n_bootstrap: int = 2000,
    alpha: float = 0.1,
) -> dict[str, float]:
    """Fit the runs at every seed, score them and the baselines on the test split, write ``<name>.json``/``.md``."""
    if baseline_run not in runs:
        raise ValueError(f"study.baseline_run={baseline_run!r} is not one of the runs {list(runs)}")
    if not seeds:
        raise ValueError("study.seeds is empty: give at least one training seed, e.g. [0, 1, 2]")
    root = Path(cfg.paths.output_dir)
    labels = {(label, seed): f"{label}/seed{seed}" for seed in seeds for label in runs}
    fit_all(cfg, name, {sub: [*runs[label], f"seed={seed}"] for (label, seed), sub in labels.items()})
    probe_data = instantiate(cfg.data, n_train=None, probe_size=None)
    loaders = (probe_data.probe_dataloaders()[0], probe_data.test_dataloader())
    pixels = probe_correct(nn.Identity(), loaders, knn, linear, embed_fn=raw_pixels)
    correct = []
    for seed in seeds:
        rows = {
            label: probe_correct(load_method(last_checkpoint(cfg, labels[label, seed])), loaders, knn, linear)
            for label in runs
        }
        untrained = compose_run(
            [*base_overrides(), *runs[baseline_run], f"seed={seed}", "study=null",
             f"paths.output_dir={root / 'random_init'}"]
        )
        rows["random_init"] = probe_correct(build(untrained).method, loaders, knn, linear)
        rows["raw_pixels"] = pixels
        correct.append(rows)
    margins = {
        f"{label}-{baseline}": {label: 1.0, baseline: -1.0}
        for label in runs
        for baseline in ("raw_pixels", "random_init")
    }
    results = interval_rows(correct, margins, n_bootstrap, alpha, int(cfg.seed))
    if rank_zero_only.rank == 0:
        write_report(root, name, results, single=False)
    return flatten_results(results)
