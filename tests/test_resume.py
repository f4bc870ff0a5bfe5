"""Resume that never surprises, and signals that a scheduler can read.

``resume=auto`` takes the checkpoint with the highest step (a copied folder's stale ``last.ckpt``
loses to ``last-v1.ckpt``), says so when there is nothing to resume, and refuses an optimizer
override it would otherwise ignore. SIGTERM and SIGINT end a run with 143 and 130 and one line naming
the last checkpoint and the command that resumes it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from zoo.app.resume import newest_checkpoint, resume_path
from zoo.app.train import fit

TINY = ["method=dae", "trainer=debug", "+test=false", "logger=csv", "callbacks.checkpoint.every_n_epochs=1"]


def step_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def test_a_copied_folder_resumes_from_the_highest_step(tmp_path: Path, make_config) -> None:
    run = tmp_path / "run"
    fit(make_config(*TINY, output_dir=run))
    old = tmp_path / "old.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", old)
    fit(make_config(*TINY, "trainer.max_epochs=2", "resume=auto", output_dir=run))
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    # What a copy leaves: the newer state in last-v1.ckpt, a stale last.ckpt with the newest mtime.
    (copy / "checkpoints" / "last.ckpt").rename(copy / "checkpoints" / "last-v1.ckpt")
    shutil.copy(old, copy / "checkpoints" / "last.ckpt")
    assert step_of(copy / "checkpoints" / "last-v1.ckpt") == 8 and step_of(copy / "checkpoints" / "last.ckpt") == 4
    assert newest_checkpoint(copy) == (copy / "checkpoints" / "last-v1.ckpt", 8)
    fit(make_config(*TINY, "trainer.max_epochs=3", "resume=auto", output_dir=copy))
    assert max(step_of(p) for p in (copy / "checkpoints").glob("last*.ckpt")) == 12


def test_resume_auto_with_nothing_to_resume_says_so(tmp_path: Path, make_config, capsys) -> None:
    fit(make_config(*TINY, "resume=auto", output_dir=tmp_path / "fresh"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("resume=auto")]
    assert len(lines) == 1 and "no checkpoint in" in lines[0] and "starting from step 0" in lines[0]


def test_an_optimizer_override_on_resume_is_refused_naming_the_key(tmp_path: Path, make_config) -> None:
    run = tmp_path / "run"
    fit(make_config(*TINY, output_dir=run))
    with pytest.raises(ValueError, match=r"method\.optimizer\.lr=0\.05 differs from the checkpoint's method\.optimizer\.lr="):
        fit(make_config(*TINY, "trainer.max_epochs=2", "resume=auto", "method.optimizer.lr=0.05", output_dir=run))
    assert step_of(run / "checkpoints" / "last.ckpt") == 4


def test_no_resume_leaves_slurm_requeue_to_lightning(tmp_path: Path) -> None:
    torch.save({"global_step": 3}, tmp_path / "hpc_ckpt_1.ckpt")
    assert resume_path(None, tmp_path) is None  # Lightning finds hpc_ckpt_*.ckpt itself under SLURM
    assert resume_path("auto", tmp_path) == str(tmp_path / "hpc_ckpt_1.ckpt")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_run_non_zero_naming_the_last_checkpoint(tmp_path: Path, signum: signal.Signals) -> None:
    out = tmp_path / "run"
    args = [sys.executable, str(ROOT / "run.py"), "method=dae", "trainer=debug", "trainer.max_epochs=100000",
            "logger=csv", "+test=false", f"hydra.run.dir={out}"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    deadline = time.time() + 300
    while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("interrupted by")]
    # The checkpoint with the highest step, the one resume=auto takes: last.ckpt, or a step file when the
    # signal came between writing that and updating last.ckpt.
    newest, step = newest_checkpoint(out)
    assert newest.parent == out / "checkpoints" and f"last checkpoint {newest} (step {step})" in line, line
    assert signum.name in line and "resume=auto" in line and f"hydra.run.dir={out}" in line
    assert "Traceback" not in stderr
    assert line in (out / "run.log").read_text(), "run.py's last line is kept in run.log too"
