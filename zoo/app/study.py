"""A study: several runs of one experiment, one table.

An experiment config (``conf/experiment/*.yaml``) that sets ``study`` runs each entry of
``runs`` (label -> overrides) as its own run in a subfolder of the experiment's run folder, then
writes ``<run dir>/<name>.json`` (labels split on ``/`` into nested keys; each leaf is the
reported metric, or a dict of them), ``<name>.md`` (a markdown table), and the same table to
TensorBoard as text. The sub-runs are composed from the same config and command-line overrides
as the experiment itself, so every Hydra group can change between them.

``study_jobs=n`` fits the independent sub-runs of a study n at a time, each in its own process
of ``threads / n`` threads (joblib's loky workers, the executor of Hydra's joblib launcher). It pays
where one run cannot use every core (small token DiTs); each worker takes seconds to start. The
table is the same as sequentially: each sub-run seeds itself, and runs of equal thread count
compute the same figures.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from joblib import Parallel, delayed
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from zoo.app.config_checks import check_missing, check_override_types, check_values, processes_per_run
from zoo.app.configs import base_overrides, compose_run
from zoo.app.resume import Interrupted
from zoo.app.train import fit


def run(
    cfg: DictConfig,
    name: str,
    runs: Mapping[str, Sequence[str]],
    report: str | Mapping[str, str],
    seeds: Sequence[int] | None = None,
) -> dict[str, float]:
    """Fit every run of the study and write its table; returns ``{"<label>/<column>": value}``.

    With ``seeds``, every run is fitted once per seed (``seed=<s>``, label ``<label>/seed<s>``) and the table
    adds ``<label>/mean``, ``<label>/min`` and ``<label>/max`` over the seeds.
    """
    columns = {"value": report} if isinstance(report, str) else dict(report)
    if seeds is not None:
        if not seeds:
            raise ValueError(f"study {name}: study.seeds is empty; give at least one seed or null")
        seeded = {f"{label}/seed{seed}": [*runs[label], f"seed={seed}"] for label in runs for seed in seeds}
        results = fit_runs(cfg, name, seeded, columns)
        results.update(seed_summaries(results, runs, seeds))
    else:
        results = fit_runs(cfg, name, runs, columns)
    if rank_zero_only.rank == 0:
        write_report(Path(cfg.paths.output_dir), name, results, single=isinstance(report, str))
    return flatten_results(results)


def seed_summaries(
    results: Mapping[str, Mapping[str, float]], runs: Iterable[str], seeds: Sequence[int]
) -> dict[str, dict[str, float]]:
    """``{"<label>/mean" | "/min" | "/max": {column: ...}}`` over the seeds' rows ``<label>/seed<s>``."""
    summaries: dict[str, dict[str, float]] = {}
    for label in runs:
        rows = [results[f"{label}/seed{seed}"] for seed in seeds]
        for stat, reduce in (("mean", lambda v: sum(v) / len(v)), ("min", min), ("max", max)):
            summaries[f"{label}/{stat}"] = {column: float(reduce([row[column] for row in rows])) for column in rows[0]}
    return summaries


def fit_runs(
    cfg: DictConfig, name: str, runs: Mapping[str, Sequence[str]], columns: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """Fit every run into its subfolder; ``{label: {column: the run's final value of its metric}}``."""
    return {label: pick(name, label, metrics, columns) for label, metrics in fit_all(cfg, name, runs).items()}


def fit_all(cfg: DictConfig, name: str, runs: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Fit every run into its subfolder, ``study_jobs`` at a time; ``{label: the run's final metrics}``."""
    root = Path(cfg.paths.output_dir)
    subs = {
        label: compose_run(
            [
                *base_overrides(),
                *overrides,
                "study=null",
                f"paths.output_dir={run_folder(root, label)}",
            ]
        )
        for label, overrides in runs.items()
    }
    for label, sub in subs.items():
        check_sub_run(name, label, sub, [*base_overrides(), *runs[label]])
    infos = {
        label: {"method": name, "data": label, "overrides": list(overrides)}
        for label, overrides in runs.items()
    }
    jobs = side_by_side(cfg, subs)
    if jobs == 1:
        return {label: fit(sub, info=infos[label]) for label, sub in subs.items()}
    hydra_cfg = HydraConfig.instance().cfg
    threads = max(1, torch.get_num_threads() // jobs)
    with sigterm_stops_the_workers(name, root):
        fitted = Parallel(n_jobs=jobs, backend="loky")(
            delayed(fit_in_worker)(sub, infos[label], hydra_cfg, threads) for label, sub in subs.items()
        )
    return dict(zip(subs, fitted))


def check_sub_run(name: str, label: str, sub: DictConfig, overrides: Sequence[str]) -> None:
    """The checks ``run.py`` makes of a run, made of every sub-run before the first one trains."""
    try:
        check_override_types(sub, list(overrides))
        check_missing(sub)
        check_values(sub)
    except ValueError as error:
        raise ValueError(f"study {name}, run {label}: {error}") from None


@contextmanager
def sigterm_stops_the_workers(name: str, root: Path) -> Iterator[None]:
    """While the workers run, SIGTERM raises ``Interrupted`` in the parent, so joblib kills the workers
    instead of leaving them running when the parent ends (Python's default SIGTERM skips all cleanup)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Interrupted(
            f"interrupted by SIGTERM during study {name}: its side-by-side runs were stopped; each run's folder "
            f"under {root} keeps its last checkpoint",
            int(signal.SIGTERM),
        )

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def pick(name: str, label: str, metrics: Mapping[str, float], columns: Mapping[str, str]) -> dict[str, float]:
    """``{column: metrics[metric]}`` of study ``name``'s run ``label``; a metric it did not log is named."""
    missing = [metric for metric in columns.values() if metric not in metrics]
    if missing:
        raise KeyError(f"study {name}: run {label} logged no {missing}; it logged {sorted(metrics)}")
    return {column: metrics[metric] for column, metric in columns.items()}


def fit_checkpoints(cfg: DictConfig, name: str, runs: Mapping[str, Sequence[str]]) -> dict[str, Path]:
    """Fit every run (``study_jobs`` at a time) into its subfolder; ``{label: its last.ckpt}``."""
    fit_all(cfg, name, runs)
    return {label: last_checkpoint(cfg, label) for label in runs}


def run_folder(root: Path, label: str) -> Path:
    """The folder of the sub-run ``label`` under the study's folder ``root`` (``/`` in a label becomes ``_``)."""
    return root / label.replace("/", "_")


def last_checkpoint(cfg: DictConfig, label: str) -> Path:
    """The last checkpoint of the study's sub-run ``label``."""
    return run_folder(Path(cfg.paths.output_dir), label) / "checkpoints" / "last.ckpt"


def side_by_side(cfg: DictConfig, subs: Mapping[str, DictConfig]) -> int:
    """How many of ``subs`` run at once: ``study_jobs``, at most one per run, refused for multi-process runs."""
    jobs = min(int(cfg.get("study_jobs", 1)), len(subs))
    if jobs > 1:
        for label, sub in subs.items():
            processes = processes_per_run(sub.trainer)
            if processes != 1:
                raise ValueError(
                    f"study_jobs={jobs} runs the study's runs side by side, one process each, but run {label} "
                    f"asks for trainer.devices x trainer.num_nodes = {processes or sub.trainer.get('devices')} "
                    "processes; use study_jobs=1 for a multi-device study, or trainer.devices=1"
                )
    return jobs


def fit_in_worker(
    cfg: DictConfig, info: Mapping[str, Any], hydra_cfg: DictConfig | None, threads: int
) -> dict[str, float]:
    """``zoo.app.train.fit`` in a worker process, with ``threads`` threads and the experiment's Hydra runtime
    (``hydra_cfg``: the config ``HydraConfig`` holds in the parent, or None outside Hydra)."""
    torch.set_num_threads(threads)
    if hydra_cfg is not None:
        HydraConfig.instance().set_config(hydra_cfg)
    return fit(cfg, info=dict(info))


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
    lines += [
        f"| {label} | " + " | ".join(f"{row[c]:.4g}" for c in columns) + " |"
        for label, row in results.items()
    ]
    return "\n".join(lines) + "\n"


def write_report(root: Path, name: str, results: Mapping[str, Mapping[str, float]], single: bool) -> None:
    """``<name>.json``, ``<name>.md`` and the table as TensorBoard text in the study's folder."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.json").write_text(json.dumps(nest(results, single), indent=2))
    table = markdown_table(results)
    (root / f"{name}.md").write_text(f"# {name}\n\n{table}")
    with SummaryWriter(str(root)) as writer:
        writer.add_text(name, table)
