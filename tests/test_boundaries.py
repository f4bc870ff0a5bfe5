"""callbacks/ and datamodules/ are reusable on their own: they import nothing from zoo."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT


def imported_modules(package: str) -> list[tuple[str, str]]:
    found = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(str(path), alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.append((str(path), node.module))
    return found


def test_callbacks_and_datamodules_import_nothing_from_zoo() -> None:
    for package in ("callbacks", "datamodules"):
        offenders = [(p, m) for p, m in imported_modules(package) if m == "zoo" or m.startswith("zoo.")]
        assert not offenders, f"{package}/ imports zoo: {offenders}"


def test_packages_import_without_zoo_loaded() -> None:
    code = (
        "import sys, callbacks, datamodules, pkgutil, importlib\n"
        "for pkg in (callbacks, datamodules):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "assert not any(n == 'zoo' or n.startswith('zoo.') for n in sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
