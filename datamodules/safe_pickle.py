"""A pickle reader for data files that can build numpy arrays and plain containers, and nothing else.

``pickle.load`` calls whatever a file names (``os.system``, ``builtins.eval``, a class's
``__reduce__``), so a crafted data file runs code when it is read. The official CIFAR-10 batches
(Krizhevsky 2009, "the python version") hold only a dict of strings, lists, numbers and uint8
numpy arrays; ``SafeUnpickler`` resolves just the globals those need (numpy's array reconstructors,
``ndarray``, ``dtype`` and scalar, and ``_codecs.encode`` for bytes written by Python 3) and refuses
any other by name. Dicts, lists, tuples, strings, bytes and numbers need no global, and
the elements of any array are built by the same restricted reader.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
"""The ``(module, name)`` globals a pickle of numpy arrays, dtypes and scalars refers to."""


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only ``ALLOWED``; the rest is an ``UnpicklingError``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(
                f"refused to load the global {module}.{name}: a data file may hold only numpy arrays, "
                "dicts, lists, strings, bytes and numbers"
            )
        return super().find_class(module, name)


def safe_load(path: str | Path, encoding: str = "ASCII") -> Any:
    """The object pickled in ``path``, read by ``SafeUnpickler`` (``encoding`` as in ``pickle.load``)."""
    with open(path, "rb") as file:
        return SafeUnpickler(file, encoding=encoding).load()
