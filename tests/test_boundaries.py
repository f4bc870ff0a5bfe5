"""The layers hold: import-linter's contracts (pyproject.toml) pass, and each fails when broken.

The contracts: the application (``zoo.app``) on top of the library, whose layers point down only;
``callbacks/`` and ``datamodules/`` import nothing from ``zoo``; no import circle among the modules of
any package. Lazy imports count (grimp reads every import statement), so none can dodge a circle.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, env=env, timeout=300)


def test_the_import_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_every_module_of_zoo_has_a_layer() -> None:
    """A new module of ``zoo`` must be placed in the layers contract, or nothing checks its imports."""
    contract = next(c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
                    if c["type"] == "layers")
    placed = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    modules = {f"zoo.{p.stem}" for p in (ROOT / "zoo").iterdir() if p.suffix == ".py" and p.stem != "__init__"}
    modules |= {f"zoo.{p.name}" for p in (ROOT / "zoo").iterdir() if (p / "__init__.py").is_file()}
    assert modules == placed, (modules - placed, placed - modules)


BREAKS = {
    "library imports the application": ({"zoo/loading.py": "import zoo.app.train"}, r"zoo\.loading -> zoo\.app\.train"),
    "a lower layer imports a higher one": ({"zoo/nets/unet.py": "import zoo.methods.diffusion"}, r"zoo\.nets\.unet -> zoo\.methods"),
    "callbacks import zoo": ({"callbacks/training/files.py": "import zoo.loading"}, r"callbacks\.training\.files -> zoo\.loading"),
    "a circle inside a package": (
        {"zoo/diffusion/samplers.py": "import zoo.diffusion.losses", "zoo/diffusion/losses.py": "import zoo.diffusion.samplers"},
        r"no import circles among the modules of any package BROKEN",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_a_broken_layer_fails_the_contracts(case: str, tmp_path: Path) -> None:
    for item in ("zoo", "callbacks", "datamodules", "conf", "pyproject.toml"):
        source = ROOT / item
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, tmp_path / item)
    lines, expected = BREAKS[case]
    for path, line in lines.items():
        target = tmp_path / path
        target.write_text(target.read_text().replace("from __future__ import annotations\n", f"from __future__ import annotations\n\n{line}\n", 1))
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert re.search(expected, result.stdout), result.stdout[-3000:]


def test_packages_import_without_zoo_loaded() -> None:
    code = (
        "import sys, callbacks, datamodules, pkgutil, importlib\n"
        "for pkg in (callbacks, datamodules):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "assert not any(n == 'zoo' or n.startswith('zoo.') for n in sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
