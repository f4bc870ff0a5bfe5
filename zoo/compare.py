"""Compare runs: ``python -m zoo.compare LOGDIR [--markdown FILE]``.

Every folder under LOGDIR holding ``metrics.json`` (written by ``zoo.train.fit``) or TensorBoard
event files is a run. One row per run: method, data, the overrides that set it apart, and its
final metrics; the best value of each column is highlighted (lower is better for losses,
distances, FID/KID and memorization, higher for everything else). A folder whose files cannot be
read (a corrupt ``metrics.json`` or ``run.json``, unreadable events) does not stop the table: it is
listed below it with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

LOWER_IS_BETTER = ("loss", "fd_", "fid", "kid", "distance", "memorization", "error")


@dataclass
class Run:
    path: Path
    method: str = "?"
    data: str = "?"
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def find_runs(logdir: str | Path) -> list[Run]:
    """Every readable run under ``logdir``, sorted by path (``scan`` also gives the broken folders)."""
    return scan(logdir)[0]


def scan(logdir: str | Path) -> tuple[list[Run], dict[Path, str]]:
    """The readable runs under ``logdir`` sorted by path, and ``{folder: reason}`` for those that are not."""
    root = Path(logdir)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder; pass the logs root, e.g. `python -m zoo.compare logs`")
    folders = {p.parent for p in root.rglob("metrics.json")}
    folders |= {p.parent for p in root.rglob("events.out.tfevents.*") if not (p.parent / "metrics.json").exists()}
    runs, broken = [], {}
    for folder in sorted(folders):
        try:
            runs.append(read_run(folder))
        except Exception as error:  # any unreadable file: the folder is reported, the rest still compared
            broken[folder] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return runs, broken


def read_run(folder: Path) -> Run:
    """A run's identity from ``run.json`` and its metrics from ``metrics.json`` or its events."""
    run = Run(folder)
    info = folder / "run.json"
    if info.exists():
        meta = _json(info, dict)
        run.method, run.data = meta.get("method", "?"), meta.get("data", "?")
        run.overrides = list(meta.get("overrides", []))
    metrics = folder / "metrics.json"
    run.metrics = _json(metrics, dict) if metrics.exists() else last_scalars(folder)
    if not all(isinstance(v, (int, float)) for v in run.metrics.values()):
        raise ValueError(f"{metrics.name} holds values that are not numbers")
    return run


def _json(path: Path, kind: type) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path.name} is not readable JSON ({error})") from None
    if not isinstance(value, kind):
        raise ValueError(f"{path.name} holds a {type(value).__name__}, not an object")
    return value


def last_scalars(folder: Path) -> dict[str, float]:
    """The last value of every scalar in the folder's TensorBoard events (runs without metrics.json)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags().get("scalars", [])}


def columns(runs: list[Run]) -> list[str]:
    """Metric columns shared by the runs: epoch/step aggregates and learning rates left out."""
    names = {name for run in runs for name in run.metrics}
    return sorted(n for n in names if not n.startswith("lr-") and not n.endswith(("_step", "_epoch")))


def best(runs: list[Run], name: str) -> float | None:
    values = [run.metrics[name] for run in runs if name in run.metrics and math.isfinite(run.metrics[name])]
    if not values:
        return None
    return min(values) if any(key in name for key in LOWER_IS_BETTER) else max(values)


def label(run: Run, root: Path) -> str:
    return str(run.path.relative_to(root)) if run.path.is_relative_to(root) else str(run.path)


def rows(runs: list[Run], root: Path, mark: str) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison; the best value per column wrapped as ``mark`` says."""
    names = columns(runs)
    tops = {name: best(runs, name) for name in names}
    body = []
    for run in runs:
        cells = [label(run, root), run.method, run.data, " ".join(run.overrides)]
        for name in names:
            value = run.metrics.get(name)
            text = "" if value is None else f"{value:.4g}"
            cells.append(mark.format(text) if value is not None and value == tops[name] else text)
        body.append(cells)
    return ["run", "method", "data", "overrides", *names], body


def table(runs: list[Run], root: Path) -> Table:
    """The comparison as a rich table, the best value per column in bold green."""
    header, body = rows(runs, root, "[bold green]{}[/]")
    out = Table(title=f"runs under {root}")
    for i, name in enumerate(header):
        out.add_column(name, justify="right" if i >= 4 else "left", overflow="fold")
    for cells in body:
        out.add_row(*cells)
    return out


def markdown(runs: list[Run], root: Path) -> str:
    """The comparison as a markdown table, the best value per column in bold."""
    header, body = rows(runs, root, "**{}**")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.compare", description=__doc__.splitlines()[0])
    parser.add_argument("logdir", nargs="?", default="logs")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as markdown to FILE")
    args = parser.parse_args(argv)
    root = Path(args.logdir)
    runs, broken = scan(root)
    console = Console()
    if not runs:
        console.print(f"no readable runs under {root} (a run folder holds metrics.json or TensorBoard events)")
    else:
        console.print(table(runs, root))
        if args.markdown:
            Path(args.markdown).write_text(markdown(runs, root))
            console.print(f"markdown written to {args.markdown}")
    for folder, reason in broken.items():
        console.print(f"broken run {label(Run(folder), root)}: {reason}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
