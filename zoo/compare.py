"""Compare runs: ``python -m zoo.compare LOGDIR [--markdown FILE]``.

Every folder under LOGDIR holding ``metrics.json`` (written by ``zoo.app.train.fit``) or TensorBoard
event files is a run. One row per run: method, data, the overrides that set it apart, and its
final metrics; the best value of each column is highlighted (lower is better for losses,
distances, FID/KID and memorization, higher for everything else). A folder whose files cannot be
read (a corrupt ``metrics.json`` or ``run.json``, unreadable events) does not stop the table: it is
listed below it with the reason. Whatever a file holds reaches the terminal as text: a value that is no
finite float (a 400-digit integer, a string) is shown as written and never marked best, and control
characters and Rich markup are escaped. A missing folder is one line (exit 2), Ctrl-C one line (exit 130).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

LOWER_IS_BETTER = ("loss", "fd_", "fid", "kid", "distance", "memorization", "error")


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
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags().get("scalars", [])}


def columns(runs: list[Run]) -> list[str]:
    """Metric columns shared by the runs: epoch/step aggregates and learning rates left out."""
    names = {name for run in runs for name in run.metrics}
    return sorted(n for n in names if not n.startswith("lr-") and not n.endswith(("_step", "_epoch")))


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


def printable(text: str, limit: int = 60) -> str:
    """``text`` with control characters escaped (``\\x1b``) and cut to ``limit`` characters."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def best(runs: list[Run], name: str) -> float | None:
    values = [v for run in runs if (v := number(run.metrics.get(name))) is not None]
    if not values:
        return None
    return min(values) if any(key in name for key in LOWER_IS_BETTER) else max(values)


def label(run: Run, root: Path) -> str:
    return str(run.path.relative_to(root)) if run.path.is_relative_to(root) else str(run.path)


def rows(runs: list[Run], root: Path, mark: Callable[[str, bool], str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison, each cell through ``mark(text, is_best)``."""
    names = columns(runs)
    tops = {name: best(runs, name) for name in names}
    body = []
    for run in runs:
        cells = [printable(label(run, root), 200), printable(run.method), printable(run.data),
                 printable(" ".join(run.overrides), 200)]
        cells = [mark(text, False) for text in cells]
        for name in names:
            value = run.metrics.get(name)
            top = tops[name] is not None and number(value) == tops[name]
            cells.append(mark("" if value is None else cell(value), top))
        body.append(cells)
    return [mark(printable(name), False) for name in ["run", "method", "data", "overrides", *names]], body


def rich_cell(text: str, top: bool) -> str:
    """A cell as Rich markup: the text escaped, the best value of its column in bold green."""
    return f"[bold green]{escape(text)}[/]" if top else escape(text)


def markdown_cell(text: str, top: bool) -> str:
    """A cell of a markdown table: pipes escaped, the best value of its column in bold."""
    text = text.replace("|", "\\|")
    return f"**{text}**" if top else text


def table(runs: list[Run], root: Path) -> Table:
    """The comparison as a rich table, the best value per column in bold green."""
    header, body = rows(runs, root, rich_cell)
    out = Table(title=escape(f"runs under {printable(str(root), 200)}"))
    for i, name in enumerate(header):
        out.add_column(name, justify="right" if i >= 4 else "left", overflow="fold")
    for cells in body:
        out.add_row(*cells)
    return out


def markdown(runs: list[Run], root: Path) -> str:
    """The comparison as a markdown table, the best value per column in bold."""
    header, body = rows(runs, root, markdown_cell)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


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


def compare(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.compare", description=__doc__.splitlines()[0])
    parser.add_argument("logdir", nargs="?", default="logs")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as markdown to FILE")
    args = parser.parse_args(argv)
    root = Path(args.logdir)
    runs, broken = scan(root)
    console = Console()
    if not runs:
        console.print(escape(f"no readable runs under {printable(str(root), 200)} (a run folder holds metrics.json or "
                             "TensorBoard events)"))
    else:
        console.print(table(runs, root))
        if args.markdown:
            Path(args.markdown).write_text(markdown(runs, root))
            console.print(escape(f"markdown written to {args.markdown}"))
    for folder, reason in broken.items():
        console.print(escape(f"broken run {printable(label(Run(folder), root), 200)}: {printable(reason, 200)}"),
                      highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
