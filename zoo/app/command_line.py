"""Command-line values that Hydra's override parser reads as given, and commands the zoo prints that paste back.

Hydra reads an unquoted value only from letters, digits and a few signs (``_ - + . / : @ %``); ``=``,
``,``, spaces, quotes, brackets and non-ASCII letters end the value or fail the parse. Paths hold them:
Lightning's own checkpoint names (``epoch=0-step=4.ckpt``), folders named by a person (``runs/é t``).
So ``quote_paths`` quotes the values of the keys that take a path (``PATH_KEYS``) before Hydra parses
the command line, and every command the zoo prints for pasting (``pasteable``) is quoted for Hydra and
then for the shell.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

PATH_KEYS = frozenset({
    "ckpt", "resume", "autoencoder", "encoder.ckpt", "encoder.weights_path", "method.teacher",
    "hydra.run.dir", "hydra.sweep.dir", "paths.root_dir", "paths.log_dir", "paths.data_dir", "paths.cache_dir",
    "paths.output_dir", "data.root",
})
"""The keys whose command-line values are file or folder paths."""

PLAIN = re.compile(r"[A-Za-z0-9_./+:@%-]+")
"""A value Hydra's grammar reads unquoted exactly as written."""


def hydra_quote(value: str) -> str:
    """``value`` as Hydra reads it back: unchanged when plain, else single-quoted, ``'`` escaped and the
    backslashes before a quote (or the end) doubled, as Hydra's grammar asks; other backslashes stay."""
    if PLAIN.fullmatch(value):
        return value
    doubled = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, value)
    return "'" + doubled.replace("'", "\\'") + "'"


def quote_paths(args: Sequence[str]) -> list[str]:
    """The command line with the values of ``PATH_KEYS`` quoted for Hydra (values already quoted stay)."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in PATH_KEYS and value and value[0] not in "'\"":
            arg = f"{key}={hydra_quote(value)}"
        out.append(arg)
    return out


def pasteable(key: str, value: str) -> str:
    """``key=value`` quoted for Hydra (a ``[a, b]`` list item by item), then for the shell: a command that
    pastes back as meant."""
    if value.startswith("[") and value.endswith("]"):
        items = [item.strip() for item in value[1:-1].split(",") if item.strip()]
        quoted = "[" + ",".join(item if item[0] in "'\"" else hydra_quote(item) for item in items) + "]"
    else:
        quoted = hydra_quote(value)
    return shell_quote(f"{key}={quoted}")


def shell_quote(text: str) -> str:
    """``text`` as one shell word: as is when safe, in double quotes when it holds single quotes only."""
    if "'" in text and not any(c in text for c in '"$`\\!'):
        return f'"{text}"'
    return shlex.quote(text)
