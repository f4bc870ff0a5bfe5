"""Sweep folders named by the swept values in a path-safe form; every override still in run.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from zoo.app.sweep_names import SWEPT_KEYS, path_safe, short_names, sweep_subdir, swept_keys


def test_swept_keys_are_the_ones_with_several_values() -> None:
    line = ["-m", "method.optimizer.lr=1e-3,3e-3", "trainer.max_epochs=2", "seed=range(3)", "+x=choice(a,b)",
            "hydra.run.dir=/tmp/a"]
    assert swept_keys(line) == ["method.optimizer.lr", "seed", "x"]


def test_a_job_is_named_by_its_swept_values_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SWEPT_KEYS, "method.optimizer.lr,method")
    job = ["method.optimizer.lr=0.001", "trainer.max_epochs=2", "method=jit"]
    assert sweep_subdir(0, job) == "0_lr-0.001_method-jit"


def test_keys_sharing_a_last_part_keep_enough_of_their_path() -> None:
    names = short_names(["method.optimizer.lr", "method.head.lr", "seed"])
    assert names == {"method.optimizer.lr": "optimizer.lr", "method.head.lr": "head.lr", "seed": "seed"}
    assert short_names(["method", "data.method"]) == {"method": "method", "data.method": "data.method"}


@pytest.mark.parametrize("value", ["a=b", "x,y", "/runs/ckpt dir/last.ckpt", "[1,2]", "{a:1}", "é"])
def test_values_hold_no_character_a_path_or_hydra_would_misread(value: str) -> None:
    assert set(path_safe(value)) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")


def test_without_the_recorded_keys_the_overrides_name_the_job_less_the_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SWEPT_KEYS, raising=False)
    assert sweep_subdir(3, ["seed=1", "ckpt=/a/b.ckpt", "paths.output_dir=/x"]) == "3_seed-1"


def test_a_multirun_names_its_folders_by_the_swept_values(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "-m", "method=dae", "trainer=debug", "+test=false",
         "method.hidden=50,100", "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["0_hidden-50", "1_hidden-100"]
    record = json.loads((tmp_path / "0_hidden-50" / "run.json").read_text())
    assert {"method.hidden=50", "trainer.max_epochs=1", "trainer=debug"} <= set(record["overrides"])
