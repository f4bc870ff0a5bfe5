"""A study's runs side by side (``study_jobs=2``: two worker processes) give the table of the sequential study."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from zoo.app.train import main

DAE_WIDTH = ["experiment=dae_width", "trainer.max_epochs=2", "callbacks=none", "logger=csv"]


def table(make_config, folder: Path, *overrides: str) -> dict:
    main(make_config(*DAE_WIDTH, *overrides, output_dir=folder))
    return json.loads((folder / "dae_width.json").read_text())


def test_side_by_side_runs_give_the_sequential_table(make_config, tmp_path: Path) -> None:
    sequential = table(make_config, tmp_path / "sequential")
    parallel = table(make_config, tmp_path / "parallel", "study_jobs=2")
    assert parallel == sequential and set(sequential) == {"25", "100"}
    assert all((tmp_path / "parallel" / label / "metrics.json").is_file() for label in sequential)
    run = json.loads((tmp_path / "parallel" / "100" / "run.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{32}", run.pop("run_id"))
    assert run == {"method": "dae_width", "data": "100", "overrides": ["method.hidden=100"]}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["study_jobs=0"], r"study_jobs=0: .* an integer >= 1"),
        (
            ["study_jobs=2", "trainer=ddp"],
            r"run 25 asks for trainer.devices x trainer.num_nodes = 2 .*study_jobs=1",
        ),
    ],
)
def test_bad_study_jobs_are_refused_before_training(make_config, tmp_path: Path, overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        main(make_config(*DAE_WIDTH, *overrides, output_dir=tmp_path))
    assert not (tmp_path / "25").exists()


def test_a_users_own_experiment_runs_its_study_from_their_search_path(tmp_path: Path) -> None:
    """A study composes its runs with the experiment's ``hydra.searchpath``, so a user's experiment works."""
    confs = tmp_path / "my_confs" / "experiment"
    confs.mkdir(parents=True)
    (confs / "my_width.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /method: dae\nname: my_width\nstudy:\n  _target_: zoo.app.study.run\n"
        "  name: my_width\n  runs: {'10': [method.hidden=10], '20': [method.hidden=20]}\n  report: val/loss\n"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), f"hydra.searchpath=[file://{tmp_path / 'my_confs'}]",
         "experiment=my_width", "trainer=debug", "callbacks=none", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(json.loads((tmp_path / "run" / "my_width.json").read_text())) == {"10", "20"}


def processes_with(marker: str) -> list[int]:
    """PIDs of the live processes whose environment holds ``marker`` (Linux /proc)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_sigterm_during_side_by_side_runs_stops_the_workers_and_exits_non_zero(tmp_path: Path) -> None:
    marker = f"ZOO_TEST_MARKER={tmp_path.name}"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *DAE_WIDTH, "trainer.max_epochs=100000", "study_jobs=2",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "ZOO_TEST_MARKER": tmp_path.name},
    )
    deadline = time.monotonic() + 120
    while len(processes_with(marker)) < 3 and time.monotonic() < deadline:  # the parent and its two workers
        time.sleep(0.5)
    while not all((tmp_path / "run" / label).is_dir() for label in ("25", "100")) and time.monotonic() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "interrupted by SIGTERM during study dae_width" in " ".join(stderr.split())
    deadline = time.monotonic() + 30
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_with(marker) == []
