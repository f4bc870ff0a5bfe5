"""A wheel built from a copy of the checkout, installed in a fresh venv, runs from another folder with a user's configs.

The venv reuses this interpreter's installed dependencies (torch, lightning, ...) through a ``.pth``
file listing its site-packages, so nothing is downloaded; the directories listed are not scanned for
``.pth`` files, so an editable install of the zoo there does not shadow the wheel.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT

USER_METHOD = '''
from zoo.methods.dae import DAE


class MyDAE(DAE):
    """A user's method: the zoo's DAE under another name."""
'''

USER_CONFIG = """
defaults:
  - dae
  - _self_
_target_: my_methods.MyDAE
"""


def sh(*args: str | Path, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result


@pytest.mark.slow
def test_the_wheel_runs_from_another_folder_with_a_users_config(tmp_path: Path) -> None:
    source, wheels = tmp_path / "source", tmp_path / "wheels"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".venv*",
                                                                "logs", ".cache", "outputs", "multirun"))
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source, cwd=tmp_path)
    [wheel] = wheels.glob("diffrep_zoo-*.whl")
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(sh(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path).stdout.strip())
    dependencies = {*site.getsitepackages(), sysconfig.get_path("purelib")} - {str(purelib)}
    (purelib / "dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    sh(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    project = tmp_path / "my_project"
    (project / "my_confs" / "method").mkdir(parents=True)
    (project / "my_confs" / "method" / "my_dae.yaml").write_text(USER_CONFIG)
    (project / "my_methods.py").write_text(USER_METHOD)
    env = {**os.environ, "PYTHONPATH": str(project), "HYDRA_FULL_ERROR": "0"}
    run = [venv / "bin" / "zoo-run", "trainer=debug", "logger=csv", "+test=false"]
    where = sh(python, "-c", "import zoo, conf; print(zoo.__file__, conf.__file__)", cwd=project, env=env).stdout
    assert str(ROOT) not in where and str(purelib) in where
    sh(*run, "method=dae", f"hydra.run.dir={project / 'runs' / 'dae'}", cwd=project, env=env)
    assert (project / "runs" / "dae" / "metrics.json").is_file()
    sh(*run, "hydra.searchpath=[file://my_confs]", "method=my_dae", f"hydra.run.dir={project / 'runs' / 'mine'}",
       cwd=project, env=env)
    config = (project / "runs" / "mine" / ".hydra" / "config.yaml").read_text()
    assert "my_methods.MyDAE" in config and (project / "runs" / "mine" / "metrics.json").is_file()


def shell_commands(text: str) -> list[str]:
    """The ``pip``/``pytest`` command lines of a shell script or README, comments dropped."""
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [line for line in lines if line.startswith(("pip ", "pytest"))]


def test_ci_runs_the_readmes_install_and_test_commands_and_nothing_else() -> None:
    """On a fresh machine: one install (torch and torchvision resolve from pyproject's ranges), then pytest."""
    ci = shell_commands((ROOT / ".ci" / "run").read_text())
    assert ci == ['pip install -e ".[dev,wandb,mlflow]"', "pytest"]
    readme = shell_commands((ROOT / "README.md").read_text())
    assert set(ci) <= set(readme) and not [line for line in readme if "torch==" in line]
