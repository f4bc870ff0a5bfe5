"""Progress bars for the long work that runs outside Lightning's loops: drawing samples, computing features.

A bar has the look of training's ``RichProgressBar`` (its columns, its console) and is shown only where
one is wanted: inside ``progress_shown(label, trainer)`` when that trainer shows a ``RichProgressBar`` on
this rank (rank zero, ``enable_progress_bar``, not ``~callbacks.progress``), or inside
``progress_shown(label, True)`` for work without a trainer (``task=sample``). The code that loops
(``callbacks.features.map_dataset``, ``GenerativeMetrics``) wraps its loop in ``track``, which is a
plain loop everywhere else: the loops need no trainer, and a library caller or a quiet run sees nothing.
``say`` prints a line under the same condition (``shown``).

Bars are transient (the screen and ``run.log`` keep the lines around them, not the bar), and drawn only on
an interactive console: in a file or a pipe (a batch job's log) there are the lines alone. During training
a bar appears under training's own bars: Rich (>= 14.1) nests live displays on one console.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from rich import get_console
from rich.progress import Progress

T = TypeVar("T")

_SHOWN: ContextVar[tuple[str, RichProgressBar, L.Trainer | None] | None] = ContextVar("progress_shown", default=None)
"""Inside ``progress_shown``: the label of the work, the bar whose columns a bar takes, and its trainer."""


def shows_progress(trainer: L.Trainer) -> bool:
    """Whether ``trainer`` shows Rich's progress bar on this process (rank zero, bar enabled)."""
    bar = trainer.progress_bar_callback
    return trainer.is_global_zero and isinstance(bar, RichProgressBar) and bar.is_enabled


@contextmanager
def progress_shown(label: str, where: L.Trainer | bool) -> Iterator[None]:
    """Inside, ``track`` shows bars named ``"<label>: <what>"`` when ``where`` is a trainer that shows its
    progress bar here (``shows_progress``) or is True; otherwise (False, a quiet trainer) nothing."""
    if isinstance(where, L.Trainer):
        shown = (label, where.progress_bar_callback, where) if shows_progress(where) else None
    else:
        shown = (label, RichProgressBar(), None) if where else None
    token = _SHOWN.set(shown)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def track(items: Iterable[T], total: int | None, what: str) -> Iterator[T]:
    """``items``, with a bar of ``total`` steps (None: unknown) named ``what`` while inside ``progress_shown`` on an
    interactive console, else a plain loop (a transient bar shows nothing in a file or a pipe)."""
    shown, console = _SHOWN.get(), get_console()
    if shown is None or not console.is_interactive:
        yield from items
        return
    label, bar, trainer = shown
    # Lightning's columns (description, bar, done/total, elapsed • remaining, speed); they do not read the trainer.
    with Progress(*bar.configure_columns(trainer), console=console, transient=True) as progress:
        task = progress.add_task(f"{label}: {what}", total=total)
        for item in items:
            yield item
            # A bar nested in training's live display is redrawn only when asked to.
            progress.update(task, advance=1, refresh=True)


def shown() -> bool:
    """Whether bars and ``say``'s lines are shown here: inside ``progress_shown`` where they are wanted."""
    return _SHOWN.get() is not None


def say(line: str) -> None:
    """Print ``line`` (to stderr, above any bar) where bars are shown (``shown``)."""
    if shown():
        print(line, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """A time for a line: ``"0.04 s"``, ``"12 s"``, ``"4.1 min"``, ``"1.5 h"``."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 100:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 6000 else f"{seconds / 3600:.1f} h"
