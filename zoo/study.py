"""A study: several runs of one experiment, one table.

An experiment config (``conf/experiment/*.yaml``) that sets ``study`` runs each entry of
``runs`` (label -> overrides) as its own run in a subfolder of the experiment's run folder, then
writes ``<run dir>/<name>.json`` (labels split on ``/`` into nested keys; each leaf is the
reported metric, or a dict of them), ``<name>.md`` (a markdown table), and the same table to
TensorBoard as text. The sub-runs are composed from the same config and command-line overrides
as the experiment itself, so every Hydra group can change between them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

from zoo.conf_dir import conf_dir

CONF_DIR = conf_dir()


def compose_run(overrides: Sequence[str]) -> DictConfig:
    """The run config for ``overrides``, composed like ``run.py`` composes it (no ``hydra`` node)."""
    overrides = list(overrides)
    if GlobalHydra.instance().is_initialized():
        cfg = compose("config", overrides=overrides)
    else:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    return cfg


def compose_as_run_py(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """The config ``run.py`` gets for ``overrides`` with its run folder at ``output_dir``, with Hydra's
    runtime (``${hydra:...}``, choices, overrides) set as under ``run.py``: for tests and benchmarks."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"hydra.run.dir={output_dir}", f"paths.output_dir={output_dir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def base_overrides() -> list[str]:
    """The overrides the experiment was started with, less Hydra's own."""
    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.")]


def run(
    cfg: DictConfig,
    name: str,
    runs: Mapping[str, Sequence[str]],
    report: str | Mapping[str, str],
) -> dict[str, float]:
    """Fit every run of the study and write its table; returns ``{"<label>/<column>": value}``."""
    columns = {"value": report} if isinstance(report, str) else dict(report)
    results = fit_runs(cfg, name, runs, columns)
    if rank_zero_only.rank == 0:
        write_report(Path(cfg.paths.output_dir), name, results, single=isinstance(report, str))
    return flatten_results(results)


def fit_runs(
    cfg: DictConfig, name: str, runs: Mapping[str, Sequence[str]], columns: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """Fit every run into its subfolder; ``{label: {column: the run's final value of its metric}}``."""
    from zoo.train import fit

    root = Path(cfg.paths.output_dir)
    results: dict[str, dict[str, float]] = {}
    for label, overrides in runs.items():
        out = root / label.replace("/", "_")
        sub = compose_run([*base_overrides(), *overrides, "study=null", f"paths.output_dir={out}"])
        metrics = fit(sub, info={"method": name, "data": label, "overrides": list(overrides)})
        missing = [metric for metric in columns.values() if metric not in metrics]
        if missing:
            raise KeyError(f"study {name}: run {label} logged no {missing}; it logged {sorted(metrics)}")
        results[label] = {column: metrics[metric] for column, metric in columns.items()}
    return results


def flatten_results(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{"5": {"x": 0.1}}`` -> ``{"5/x": 0.1}``."""
    return {f"{label}/{column}": value for label, row in results.items() for column, value in row.items()}


def nest(results: Mapping[str, Mapping[str, float]], single: bool) -> dict[str, Any]:
    """``{"512/x": {"value": 0.1}}`` -> ``{"512": {"x": 0.1}}``."""
    tree: dict[str, Any] = {}
    for label, row in results.items():
        *parents, leaf = label.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = row["value"] if single else dict(row)
    return tree


def markdown_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """One row per run label, one column per reported metric."""
    columns = list(next(iter(results.values())))
    lines = ["| run | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(f"{row[c]:.4g}" for c in columns) + " |" for label, row in results.items()]
    return "\n".join(lines) + "\n"


def write_report(root: Path, name: str, results: Mapping[str, Mapping[str, float]], single: bool) -> None:
    """``<name>.json``, ``<name>.md`` and the table as TensorBoard text in the study's folder."""
    from torch.utils.tensorboard import SummaryWriter

    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.json").write_text(json.dumps(nest(results, single), indent=2))
    table = markdown_table(results)
    (root / f"{name}.md").write_text(f"# {name}\n\n{table}")
    with SummaryWriter(str(root)) as writer:
        writer.add_text(name, table)
