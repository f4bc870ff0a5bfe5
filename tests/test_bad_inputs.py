"""Bad inputs on the command line: each fails before any optimizer step, in one paragraph naming the key or file.

One case per input of the reliability trial (issue 16) and of the earlier error tests. Each case runs
``run.py`` in a subprocess and asserts: exit code 1, no traceback but the hint to get one, the key or file named
(``expect``, a regular expression on stderr), and no step taken (no checkpoint, no ``metrics.json``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import ROOT


class Crafted:
    """Pickles as a call of ``os.system``: loading it unsafely would run a command."""

    def __reduce__(self) -> tuple:
        return (os.system, ("touch /tmp/zoo-crafted-checkpoint-ran",))


def run_py(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def dae_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real dae checkpoint from a debug run."""
    from conftest import compose_config

    from zoo.train import fit

    out = tmp_path_factory.mktemp("dae")
    fit(compose_config(["method=dae", "trainer=debug", "+test=false", "logger=csv"], out))
    return out / "checkpoints" / "last.ckpt"


def readonly_folder(tmp_path: Path) -> Path:
    """A folder no run can be written into (root writes through file modes, not into /sys)."""
    if os.geteuid() == 0:
        return Path("/sys/zoo-readonly-run")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "run"


def garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"\x00not a checkpoint" * 100)
    return path


def crafted(tmp_path: Path) -> Path:
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": Crafted()}, path)
    assert zipfile.is_zipfile(path)
    return path


CASES = {
    # The trial's list (issue 16).
    "encoder_zoo_without_ckpt": (lambda t, d: ["method=repa", "encoder=zoo"], r"encoder\.ckpt"),
    "read_only_run_folder": (lambda t, d: [f"hydra.run.dir={readonly_folder(t)}"], r"zoo-readonly-run|readonly"),
    "garbage_checkpoint": (lambda t, d: [f"resume={garbage(t)}"], r"garbage\.ckpt"),
    "crafted_checkpoint": (lambda t, d: [f"resume={crafted(t)}"], r"crafted\.ckpt.*(refused|could run code)"),
    "dae_checkpoint_as_diffusion": (lambda t, d: ["method=diffusion", f"resume={d}"], r"resume=.*last\.ckpt.*DAE.*Diffusion"),
    "max_steps_not_a_number": (lambda t, d: ["trainer.max_steps=abc"], r"trainer\.max_steps=abc.*int"),
    "seed_not_a_number": (lambda t, d: ["seed=abc"], r"seed=abc.*int"),
    "mlp_on_images": (lambda t, d: ["net=mlp"], r"net.*MLP.*images.*net=unet"),
    "moco_on_vectors": (lambda t, d: ["method=moco", "data=manifold"], r"method=moco trains on augmented views of images.*data=manifold.*data=digits"),
    "misspelt_key": (lambda t, d: ["trainer.max_step=3"], r"trainer\.max_step\b.*did you mean trainer\.max_steps"),
    "misspelt_key_with_plus": (lambda t, d: ["+trainer.max_step=3"], r"trainer\.max_step\b.*did you mean trainer\.max_steps"),
    # Earlier error tests (tests/test_run.py and the first trial).
    "unknown_group_choice": (lambda t, d: ["method=mocoo"], r"method/mocoo.*dae"),
    "misspelt_method_argument": (lambda t, d: ["method=dae", "+method.hiden=3"], r"method\.hiden.*did you mean method\.hidden"),
    "image_net_on_vectors": (lambda t, d: ["data=manifold", "net=unet"], r"net=UNet.*vectors.*net=mlp"),
    "missing_resume_file": (lambda t, d: [f"resume={t / 'nope.ckpt'}"], r"resume=.*nope\.ckpt"),
    "sample_without_ckpt": (lambda t, d: ["task=sample"], r"ckpt=<path"),
    "unknown_task": (lambda t, d: ["task=train"], r"task=train.*fit"),
    "n_train_larger_than_data": (lambda t, d: ["data.n_train=5000"], r"n_train=5000"),
}


@pytest.fixture(scope="module")
def results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, dae_checkpoint: Path
) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The run folder and the finished ``run.py`` of every selected case, two at a time: each spends its
    seconds importing torch and Lightning on one core, so two side by side take the time of one."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module and "case" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    commands = {}
    for case in selected:
        folder = tmp_path_factory.mktemp(case)
        args = CASES[case][0](folder, dae_checkpoint)
        if not any(a.startswith("hydra.run.dir=") for a in args):
            args = [*args, f"hydra.run.dir={folder / 'run'}"]
        commands[case] = (folder / "run", ["trainer=debug", *args])
    with ThreadPoolExecutor(max_workers=2) as pool:
        finished = dict(zip(commands, pool.map(lambda command: run_py(*command[1]), commands.values())))
    return {case: (commands[case][0], finished[case]) for case in commands}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_in_one_paragraph_before_training(
    case: str, results: dict[str, tuple[Path, subprocess.CompletedProcess]]
) -> None:
    out, result = results[case]
    expect = CASES[case][1]
    assert result.returncode == 1, result.stdout[-2000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert "(set HYDRA_FULL_ERROR=1 for the traceback)" in result.stderr, result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr[-3000:]
    assert re.search(expect, error[0]), error[0]
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists()
    assert not Path("/tmp/zoo-crafted-checkpoint-ran").exists()
