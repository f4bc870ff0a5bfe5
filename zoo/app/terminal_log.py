"""The terminal's output kept in the run folder: ``<run folder>/run.log``.

``run.py`` wraps ``sys.stdout`` and ``sys.stderr`` first thing (``install``), before Hydra's and
Lightning's log handlers and Rich's consoles take hold of the streams, and stops the log when it ends
(``stop``). ``zoo.app.train.main`` points the wrap at the run's ``run.log`` on rank zero (``keep_in``,
which wraps the streams itself where ``run.py`` did not start the process: a submitit job, a test) and
stops it when the run has ended well. A run that fails keeps the file open until ``run.py`` has printed
the error paragraph into it too. A resumed run appends to its folder's ``run.log``.

The file gets what a terminal finally shows, as plain text: colours and styles are dropped and cursor
moves are carried out (``Screen``), so a progress bar redrawn hundreds of times leaves its last state
(a transient bar, nothing). A line is written once no cursor can reach it any more, a screen's height
above the cursor (``shutil.get_terminal_size``; 24 rows off a terminal), and the rest when the log
stops: while a run goes on, ``run.log`` trails the screen by one screen.
"""

from __future__ import annotations

import re
import shutil
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

CONTROL = re.compile(r"\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|[\r\n\b]")
"""What a terminal does rather than shows: CSI sequences (colours, cursor moves, erasing; groups: the
parameters and the final letter), OSC sequences (links, titles), other escapes, carriage return,
newline, backspace."""

UNFINISHED = re.compile(r"\x1b(\[[0-9;?]*|\][^\x07\x1b]*)?$")
"""An escape sequence cut off at the end of a write: held back until the next write completes it."""


class Screen:
    """The text of a terminal's lines under the writes it gets; the ``height`` rows up to the cursor's can still
    change (a cursor moves up at most to the top of the screen), the rows above them are final."""

    def __init__(self, height: int) -> None:
        self.height = max(1, height)
        self.rows = [""]
        self.row = 0
        self.col = 0
        self.held = ""

    def feed(self, text: str) -> list[str]:
        """Apply ``text``; return the rows that became final, oldest first."""
        text = self.held + text
        unfinished = UNFINISHED.search(text)
        self.held = unfinished.group(0) if unfinished else ""
        text = text[: len(text) - len(self.held)]
        start = 0
        for match in CONTROL.finditer(text):
            self._put(text[start : match.start()])
            self._control(match)
            start = match.end()
        self._put(text[start:])
        cut = self.row - self.height + 1
        if cut <= 0:
            return []
        final, self.rows, self.row = self.rows[:cut], self.rows[cut:], self.row - cut
        return [row.rstrip() for row in final]

    def rest(self) -> list[str]:
        """Every row not yet final (without the empty one a last newline leaves), and the screen emptied."""
        rows = self.rows[:-1] if self.rows[-1] == "" else self.rows
        self.rows, self.row, self.col, self.held = [""], 0, 0, ""
        return [row.rstrip() for row in rows]

    def _put(self, text: str) -> None:
        if text:
            row = self.rows[self.row].ljust(self.col)
            self.rows[self.row] = row[: self.col] + text + row[self.col + len(text) :]
            self.col += len(text)

    def _move_to(self, row: int) -> None:
        self.row = max(0, row)
        self.rows.extend("" for _ in range(self.row + 1 - len(self.rows)))

    def _control(self, match: re.Match[str]) -> None:
        code, parameters, final = match.group(0), match.group(1) or "", match.group(2)
        if code == "\n":
            self._move_to(self.row + 1)
            self.col = 0
        elif code == "\r":
            self.col = 0
        elif code == "\b":
            self.col = max(0, self.col - 1)
        elif final is not None:
            count = int(parameters) if parameters.isdigit() else None
            if final == "A":
                self._move_to(self.row - (count or 1))
            elif final == "B":
                self._move_to(self.row + (count or 1))
            elif final == "C":
                self.col += count or 1
            elif final == "D":
                self.col = max(0, self.col - (count or 1))
            elif final == "G":
                self.col = (count or 1) - 1
            elif final == "K":  # erase in line: to its end (0), up to the cursor (1), all of it (2)
                row = self.rows[self.row]
                if count == 2:
                    self.rows[self.row] = ""
                elif count == 1:
                    self.rows[self.row] = " " * self.col + row[self.col :]
                else:
                    self.rows[self.row] = row[: self.col]
        # Colours and styles (CSI ... m), modes (CSI ? ... h/l), OSC links and titles change no text.


class TerminalLog:
    """The ``run.log`` this process writes, if any: its file and the screen whose final rows go there."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # re-entrant: a signal handler may print while the main thread writes
        self.file: TextIO | None = None
        self.screen = Screen(1)

    def open(self, path: Path) -> None:
        self.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.file = path.open("a", encoding="utf-8")
            self.screen = Screen(shutil.get_terminal_size().lines)

    def write(self, stream: TextIO, text: str) -> int:
        """``text`` to ``stream`` and, while a file is open, to the screen; one writer at a time, so the file has
        the order the terminal got."""
        with self.lock:
            written = stream.write(text)
            if self.file is not None:
                self._write(self.screen.feed(text))
            return written

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                self._write(self.screen.rest())
                self.file.close()
                self.file = None

    def _write(self, rows: Iterable[str]) -> None:
        text = "".join(f"{row}\n" for row in rows)
        if text:
            self.file.write(text)
            self.file.flush()


class Tee:
    """A text stream that writes to ``stream`` and hands the same text to ``log``; the rest is ``stream``'s
    (``isatty``, ``fileno``, ``encoding``, ...), so Rich still sees the terminal it writes to."""

    def __init__(self, stream: TextIO, log: TerminalLog) -> None:
        self.stream = stream
        self.log = log

    def write(self, text: str) -> int:
        return self.log.write(self.stream, text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


LOG = TerminalLog()
"""This process's log: every ``Tee`` hands its text to it."""


def install() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in a ``Tee`` (once): nothing is kept until ``keep_in``."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, Tee):
            setattr(sys, name, Tee(stream, LOG))


def keep_in(path: Path) -> None:
    """From now on, what the process prints also goes to ``path`` (appended), the previous file closed."""
    install()
    LOG.open(path)


def stop() -> None:
    """Write the rows still on screen to the file and close it; printing goes on, unkept."""
    LOG.close()
