"""A study of representation learners against the two baselines every SSL table needs.

Each run of ``runs`` is fitted as in ``zoo.app.study`` and scored by its kNN and linear probes (the
``knn`` and ``linear_probe`` callbacks of ``conf/callbacks/probes.yaml``). Two rows are added with the
same probes, the same settings and the same probe data: ``random_init``, the encoder of the run
``baseline_run`` as built before any training (same seed, so the very weights that run started
from), and ``raw_pixels``, the flattened images. A learner is worth its compute only by its margin
over these (MoCo, He et al. 2020, Sec. 4.1, reports the same protocol against random init).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader

from callbacks import knn_accuracy, linear_probe_accuracy
from callbacks.features import EmbedFn, probe_split_features
from zoo.app.configs import base_overrides, compose_run
from zoo.app.study import fit_runs, flatten_results, write_report
from zoo.app.train import build


def raw_pixels(module: nn.Module, x: Tensor, **kw) -> Tensor:
    """The flattened input ``[B, C*H*W]``: the no-learning baseline's features."""
    return x.flatten(1)


def probe_scores(
    module: nn.Module,
    loaders: tuple[DataLoader, DataLoader],
    knn: Mapping,
    linear: Mapping,
    embed_fn: EmbedFn | None = None,
) -> dict[str, float]:
    """``{"knn": ..., "linear": ...}`` top-1 on the probe val split, with the probe callbacks' settings.

    ``knn`` and ``linear`` are the ``KNNProbe`` and ``LinearProbe`` configs (``k``, ``temperature``;
    ``weight_decay``, ``max_iter``); features come from ``module.embed`` or ``embed_fn``.
    """
    train_feats, train_y, val_feats, val_y = probe_split_features(module, loaders, "probe_baselines", embed_fn)
    return {
        "knn": knn_accuracy(train_feats, train_y, val_feats, val_y, k=knn["k"], temperature=knn["temperature"]),
        "linear": linear_probe_accuracy(
            train_feats, train_y, val_feats, val_y, weight_decay=linear["weight_decay"], max_iter=linear["max_iter"]
        ),
    }


def run(cfg: DictConfig, name: str, runs: Mapping[str, Sequence[str]], baseline_run: str) -> dict[str, float]:
    """Fit the runs, score the baselines, write ``<name>.json``/``.md``; ``{"<row>/knn": ..., ...}``."""
    if baseline_run not in runs:
        raise ValueError(f"study.baseline_run={baseline_run!r} is not one of the runs {list(runs)}")
    knn, linear = cfg.callbacks.get("knn"), cfg.callbacks.get("linear_probe")
    if knn is None or linear is None:
        raise ValueError(
            f"study {name} reports the knn and linear_probe callbacks; use callbacks=probes (or add both)"
        )
    columns = {"knn": f"{knn.prefix}/knn_top1", "linear": f"{linear.prefix}/linear_top1"}
    results = fit_runs(cfg, name, runs, columns)
    root = Path(cfg.paths.output_dir)
    untrained = compose_run(
        [*base_overrides(), *runs[baseline_run], "study=null", f"paths.output_dir={root / 'random_init'}"]
    )
    built = build(untrained)
    loaders = built.datamodule.probe_dataloaders()
    results["random_init"] = probe_scores(built.method, loaders, knn, linear)
    results["raw_pixels"] = probe_scores(built.method, loaders, knn, linear, embed_fn=raw_pixels)
    if rank_zero_only.rank == 0:
        write_report(root, name, results, single=False)
    return flatten_results(results)
