"""Paths Hydra can parse: the zoo quotes path values, and every command it prints pastes back as meant.

Also: Ctrl-C while ``run.py`` is still importing ends with one line and exit 130.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from hydra.core.override_parser.overrides_parser import OverridesParser

from zoo.app.command_line import pasteable, quote_paths

VALUES = ["/runs/plain_1.ckpt", "/runs/epoch=0-step=4.ckpt", "/runs/a b/last.ckpt", "/runs/é t/ü.ckpt",
          "/runs/it's,[x]/last.ckpt", "C:\\runs\\x'y", "C:\\end\\"]


@pytest.mark.parametrize("value", VALUES)
def test_a_printed_path_pastes_back_through_the_shell_and_hydra(value: str) -> None:
    [word] = shlex.split(pasteable("hydra.run.dir", value))
    override = OverridesParser.create().parse_override(word)
    assert override.key_or_group == "hydra.run.dir" and override.value() == value


@pytest.mark.parametrize("value", VALUES)
def test_path_values_on_the_command_line_are_quoted_for_hydra(value: str) -> None:
    [quoted] = quote_paths([f"ckpt={value}"])
    assert OverridesParser.create().parse_override(quoted).value() == value
    assert quote_paths(["method.hidden=3", "data=digits"]) == ["method.hidden=3", "data=digits"]


def test_a_list_value_is_quoted_item_by_item() -> None:
    [word] = shlex.split(pasteable("study.runs.a", "[method.hidden=3, seed=1]"))
    assert OverridesParser.create().parse_override(word).value() == ["method.hidden=3", "seed=1"]


def test_a_checkpoint_path_holding_equals_spaces_and_accents_is_read_as_given(tmp_path: Path) -> None:
    """Lightning's own name for a checkpoint (``epoch=0-step=4.ckpt``) in a folder named by a person."""
    folder = tmp_path / "é x"
    folder.mkdir()
    ckpt = folder / "epoch=0-step=4.ckpt"
    ckpt.write_bytes(b"not a checkpoint")
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "task=sample", f"ckpt={ckpt}", f"hydra.run.dir={folder / 'out'}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert result.returncode == 1 and f"ckpt={ckpt} is not a PyTorch checkpoint archive" in result.stderr


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={tmp_path / 'run'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(0.7)  # inside the imports of torch and Lightning (several seconds here)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines() == [
        "interrupted by SIGINT outside training (nothing to resume from this step)"
    ]
