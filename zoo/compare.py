"""Compare the runs under a logs folder: what sets them apart, in a table that fits the terminal.

``python -m zoo.compare LOGDIR [--all] [--csv FILE] [--markdown FILE]``. Every folder under LOGDIR
holding ``metrics.json`` (written by ``zoo.app.train.fit``) or TensorBoard event files is a run,
named by its path relative to LOGDIR.

Columns. A run's settings are ``method``, ``data`` (from ``run.json``) and one column per override key
(``key=value`` as given on the command line; ``method=jit`` is the ``method`` column, an override without
``=`` such as ``~key`` shows ``✓``; an empty cell is the config's default). Its metrics are the final
values in ``metrics.json``. By default the table leaves out

- bookkeeping metrics (``is_bookkeeping``): sample counts ``*_n``, intervals ``*_lo``/``*_hi``/``*_std``,
  reference floors ``*_floor``, Lightning's ``epoch``/``step`` and ``*_step``/``*_epoch`` aggregates,
  learning rates ``lr-*``;
- with two runs or more, every setting and metric whose cell reads the same in all runs: it sets no run
  apart (a single run shows all its settings and metrics).

``--all`` shows every column; ``--csv FILE`` writes every run and every column with full-precision values;
``--markdown FILE`` writes the complete table (every metric, the overrides as given).

Best values. A metric is ranked only when a word of its name says which way is better (``DIRECTIONS``):
lower for losses, errors, distances and FD/FID/KID, higher for accuracies, top-1, k-NN and linear probes,
precision and recall. Its name ends in ↓ or ↑ and its best value is marked ``*`` (bold green in a terminal,
bold in markdown) unless every run holds it (a lone run, a tie of all runs). Bookkeeping, memorization
ratios and unknown names are never ranked.

Layout. The width is the terminal's (``COLUMNS`` first, 80 when piped). When one row per run fits, that
is the table. Otherwise it is transposed: a legend ``#1 -> run name``, then settings and metrics as rows
and runs as columns, in as many tables as the runs need. A run's name is never wrapped unless it is
wider than the terminal, and no line is wider than the terminal.

Robustness. A folder whose files cannot be read (a corrupt ``metrics.json`` or ``run.json``, unreadable
events) does not stop the table: it is listed below it with the reason. Whatever a file holds reaches the
terminal as text: a value that is no finite float (a 400-digit integer, a string) is shown as written and
never marked best, and control characters and Rich markup are shown as written, never interpreted. A
missing folder is one line (exit 2), Ctrl-C one line (exit 130).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

BOOKKEEPING_SUFFIXES = ("_n", "_lo", "_hi", "_std", "_floor", "_step", "_epoch")
"""Metric name endings of counts, intervals, reference floors and Lightning's per-step/per-epoch copies."""

BOOKKEEPING_NAMES = ("epoch", "step")
"""Last parts of metric names (after the last ``/``) that count training progress."""

BOOKKEEPING_PREFIXES = ("lr-",)
"""Metric name beginnings of ``LearningRateMonitor``'s learning rates."""

DIRECTIONS = {
    "lower": ("loss", "error", "distance", "fd", "fid", "kid"),
    "higher": ("acc", "accuracy", "top1", "top5", "knn", "linear", "precision", "recall"),
}
"""Which way is better, by a whole word of the metric's name (words split at ``/ _ . -``); ``lower`` is
tried first, so ``probe/knn_loss`` is a loss. A name with none of these words is not ranked."""

ARROWS = {"lower": " ↓", "higher": " ↑"}

MARKS_NOTE = "* best · ↓ lower is better · ↑ higher is better · no arrow: not ranked"

UNLIMITED = 1_000_000
"""A width no table reaches: measuring a table with it gives the width it takes with no cell wrapped."""


@dataclass
class Run:
    path: Path
    method: str = "?"
    data: str = "?"
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


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
        run.method, run.data = str(meta.get("method", "?")), str(meta.get("data", "?"))
        overrides = meta.get("overrides", [])
        run.overrides = [str(o) for o in overrides] if isinstance(overrides, list) else [str(overrides)]
    metrics = folder / "metrics.json"
    run.metrics = {str(k): v for k, v in (_json(metrics, dict) if metrics.exists() else last_scalars(folder)).items()}
    return run


def _json(path: Path, kind: type) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError(f"{path.name} is not readable JSON ({error})") from None
    if not isinstance(value, kind):
        raise ValueError(f"{path.name} holds a {type(value).__name__}, not an object")
    return value


def last_scalars(folder: Path) -> dict[str, float]:
    """The last value of every scalar in the folder's TensorBoard events (runs without metrics.json)."""
    # Here, not at the top: only runs without metrics.json need it, and it costs a second of start-up.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {logged_name(tag): events.Scalars(tag)[-1].value for tag in events.Tags().get("scalars", [])}


def logged_name(tag: str) -> str:
    """The name a TensorBoard tag was logged under: the zoo's TensorBoard logger writes ``<stage>/loss<rest>``
    as ``Loss/<stage><rest>`` (``zoo/app/tensorboard_logger.py``), so ``Loss/val`` is ``val/loss`` again."""
    group, _, rest = tag.partition("/")
    if group != "Loss" or not rest:
        return tag
    stage, underscore, suffix = rest.partition("_")
    return f"{stage}/loss{underscore}{suffix}"


def settings(run: Run) -> dict[str, str]:
    """``method``, ``data`` and ``{key: value}`` of the run's overrides (``✓`` for one without ``=``)."""
    given = {}
    for override in run.overrides:
        key, has_value, value = override.partition("=")
        given[key] = value if has_value else "✓"
    return {"method": run.method, "data": run.data, **given}


def is_bookkeeping(name: str) -> bool:
    """Whether a metric counts, bounds or schedules rather than measures a run (see ``BOOKKEEPING_*``)."""
    return (name.endswith(BOOKKEEPING_SUFFIXES) or name.startswith(BOOKKEEPING_PREFIXES)
            or name.rsplit("/", 1)[-1] in BOOKKEEPING_NAMES)


def direction(name: str) -> str | None:
    """``"lower"`` or ``"higher"`` where ``DIRECTIONS`` knows which way a metric is better, else None."""
    if is_bookkeeping(name):
        return None
    words = set(re.split(r"[/_.\-\s]+", name.lower()))
    return next((way for way, keys in DIRECTIONS.items() if words.intersection(keys)), None)


def sets_runs_apart(texts: list[str]) -> bool:
    """Whether a column with these cells (one per run) tells the runs apart; a lone run's columns all do."""
    return len(texts) < 2 or len(set(texts)) > 1


def setting_columns(runs: list[Run], everything: bool) -> list[str]:
    """The setting keys in the order first given: all of them, or those that set the runs apart."""
    keys = list(dict.fromkeys(key for run in runs for key in settings(run)))
    if everything:
        return keys
    return [key for key in keys if sets_runs_apart([settings(run).get(key, "") for run in runs])]


def metric_columns(runs: list[Run], everything: bool) -> list[str]:
    """The metric names in order: all of them, or those that measure and set the runs apart."""
    names = sorted({name for run in runs for name in run.metrics})
    if everything:
        return names
    return [name for name in names
            if not is_bookkeeping(name) and sets_runs_apart([metric_text(run, name) for run in runs])]


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None (text, a bool, an integer too large for a float, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def cell(value: Any) -> str:
    """A metric as table text: ``.4g`` for a number, else its text with control characters made visible."""
    as_number = number(value)
    if as_number is not None:
        return f"{as_number:.4g}"
    return printable(value if isinstance(value, str) else json.dumps(value))


def metric_text(run: Run, name: str) -> str:
    """The run's metric ``name`` as table text, empty where the run has none."""
    value = run.metrics.get(name)
    return "" if value is None else cell(value)


def printable(text: str, limit: int = 60) -> str:
    """``text`` with control characters escaped (``\\x1b``) and cut to ``limit`` characters."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def best(runs: list[Run], name: str) -> float | None:
    """The best value of metric ``name`` among the runs; None when the metric is not ranked, has no number,
    or every run holds that value (a lone run, a tie of all runs): then it sets no run apart."""
    way = direction(name)
    values = [number(run.metrics.get(name)) for run in runs]
    numbers = [value for value in values if value is not None]
    if way is None or not numbers:
        return None
    top = min(numbers) if way == "lower" else max(numbers)
    return None if values.count(top) == len(values) else top


def is_best(run: Run, name: str, top: float | None) -> bool:
    """Whether the run's metric ``name`` is ``top``, the best value ``best`` found."""
    return top is not None and number(run.metrics.get(name)) == top


def label(run: Run, root: Path) -> str:
    """The run's name: its folder relative to ``root``."""
    return str(run.path.relative_to(root)) if run.path.is_relative_to(root) else str(run.path)


@dataclass
class Grid:
    """The terminal's comparison as text: a name per run, the column labels (settings first, then
    metrics with their direction's arrow) and one row of cells per run, best values marked."""

    title: str
    names: list[str]
    labels: list[str]
    rows: list[list[Text]]
    n_settings: int
    ranked: bool


def grid(runs: list[Run], root: Path, everything: bool) -> Grid:
    """The columns chosen by ``everything`` (see the module's docstring), every text made printable."""
    keys, metrics = setting_columns(runs, everything), metric_columns(runs, everything)
    tops = {name: best(runs, name) for name in metrics}
    rows = []
    for run in runs:
        given = settings(run)
        row = [Text(printable(given.get(key, ""))) for key in keys]
        for name in metrics:
            text = metric_text(run, name)
            row.append(Text(f"*{text}", style="bold green") if is_best(run, name, tops[name]) else Text(text))
        rows.append(row)
    labels = [printable(key) for key in keys]
    labels += [printable(name) + ARROWS.get(direction(name) or "", "") for name in metrics]
    return Grid(
        title=f"runs under {printable(str(root), 200)}",
        names=[printable(label(run, root), 200) for run in runs],
        labels=labels,
        rows=rows,
        n_settings=len(keys),
        ranked=any(direction(name) for name in metrics),
    )


def stacked(name: str) -> str:
    """A metric's header over two lines, split after its last ``/`` (``gen/`` above ``fd_classifier``)."""
    group, slash, rest = name.rpartition("/")
    return f"{group}/\n{rest}" if slash else name


def wide_table(grid: Grid) -> Table:
    """One row per run: its name, then its settings and metrics."""
    out = Table()
    out.add_column("run", no_wrap=True)
    for i, name in enumerate(grid.labels):
        is_metric = i >= grid.n_settings
        out.add_column(Text(stacked(name) if is_metric else name), justify="right" if is_metric else "left")
    for name, row in zip(grid.names, grid.rows):
        out.add_row(Text(name), *row)
    return out


def legend(grid: Grid) -> Table:
    """The short id of each run (``#1``) beside its name."""
    out = Table()
    out.add_column("id")
    out.add_column("run", overflow="fold")
    for i, name in enumerate(grid.names, start=1):
        out.add_row(f"#{i}", Text(name))
    return out


def transposed_table(grid: Grid, members: list[int]) -> Table:
    """Settings and metrics as rows, one column per run in ``members`` (headed by its id)."""
    out = Table()
    out.add_column("", overflow="fold")
    for i in members:
        out.add_column(f"#{i + 1}", justify="right", overflow="fold")
    for c, name in enumerate(grid.labels):
        if c == grid.n_settings:
            out.add_section()
        out.add_row(Text(name), *(grid.rows[i][c] for i in members))
    return out


def natural_width(table: Table, console: Console) -> int:
    """The width ``table`` takes with no cell wrapped."""
    return console.measure(table, options=console.options.update_width(UNLIMITED)).maximum


def run_groups(grid: Grid, console: Console) -> list[list[int]]:
    """The runs, in order, in groups whose transposed table fits the console (at least one run each)."""
    groups: list[list[int]] = [[]]
    for i in range(len(grid.names)):
        if groups[-1] and natural_width(transposed_table(grid, [*groups[-1], i]), console) > console.width:
            groups.append([])
        groups[-1].append(i)
    return groups


def tables(grid: Grid, console: Console) -> list[Table]:
    """The wide table when it fits the console, else the legend and the transposed tables."""
    wide = wide_table(grid)
    if natural_width(wide, console) <= console.width:
        return [wide]
    return [legend(grid), *(transposed_table(grid, group) for group in run_groups(grid, console))]


def markdown_cell(text: str, top: bool) -> str:
    """A cell of a markdown table: pipes escaped, the best value of its column in bold."""
    text = text.replace("|", "\\|")
    return f"**{text}**" if top else text


def markdown(runs: list[Run], root: Path) -> str:
    """The complete comparison as a markdown table: every metric, the overrides as given, best values in bold."""
    names = metric_columns(runs, everything=True)
    tops = {name: best(runs, name) for name in names}
    header = ["run", "method", "data", "overrides", *names]
    lines = ["| " + " | ".join(markdown_cell(printable(text), False) for text in header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        cells = [printable(label(run, root), 200), printable(run.method), printable(run.data),
                 printable(" ".join(run.overrides), 200)]
        cells = [markdown_cell(text, False) for text in cells]
        cells += [markdown_cell(metric_text(run, name), is_best(run, name, tops[name])) for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_value(value: Any) -> str:
    """A value as written in the CSV: text as is, anything else as JSON (floats in full), empty when missing."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def write_csv(runs: list[Run], root: Path, path: Path) -> None:
    """Every run and every column (``run``, the settings, every metric) as CSV in ``path``."""
    keys, names = setting_columns(runs, everything=True), metric_columns(runs, everything=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["run", *keys, *names])
        for run in runs:
            given = settings(run)
            writer.writerow([label(run, root), *(given.get(key, "") for key in keys),
                             *(csv_value(run.metrics.get(name)) for name in names)])


def main(argv: list[str] | None = None) -> None:
    """``compare`` with a missing folder (exit 2) and Ctrl-C (exit 130) said in one line."""
    try:
        compare(argv)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted by SIGINT", file=sys.stderr)
        sys.exit(130)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m zoo.compare", description=__doc__.splitlines()[0])
    parser.add_argument("logdir", nargs="?", default="logs", help="the folder holding the runs (default: logs)")
    parser.add_argument("--all", dest="everything", action="store_true",
                        help="show every override and every metric, also those equal in all runs and bookkeeping "
                             "(*_n, *_lo, *_hi, *_std, *_floor, epoch, lr-*, *_step, *_epoch)")
    parser.add_argument("--csv", metavar="FILE", type=Path, help="also write every run and every column as CSV to FILE")
    parser.add_argument("--markdown", metavar="FILE", type=Path,
                        help="also write the complete table (every metric) as markdown to FILE")
    return parser.parse_args(argv)


def compare(argv: list[str] | None = None) -> None:
    """Print the runs under LOGDIR in tables as wide as the terminal, then the broken folders; write the exports."""
    args = arguments(argv)
    root = Path(args.logdir)
    runs, broken = scan(root)
    console = Console(width=shutil.get_terminal_size().columns)
    if not runs:
        console.print(Text(f"no readable runs under {printable(str(root), 200)} (a run folder holds metrics.json or "
                           "TensorBoard events)"))
    else:
        view = grid(runs, root, args.everything)
        console.print(Text(view.title))
        for table in tables(view, console):
            console.print(table)
        if view.ranked:
            console.print(Text(MARKS_NOTE))
        if args.markdown:
            args.markdown.write_text(markdown(runs, root))
            console.print(Text(f"markdown written to {args.markdown}"))
        if args.csv:
            write_csv(runs, root, args.csv)
            console.print(Text(f"csv written to {args.csv}"))
    for folder, reason in broken.items():
        console.print(Text(f"broken run {printable(label(Run(folder), root), 200)}: {printable(reason, 200)}"))


if __name__ == "__main__":
    main()
