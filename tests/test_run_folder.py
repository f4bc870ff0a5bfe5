"""One run, one folder: a second run is refused, a resumed run keeps its id, another run's checkpoint is refused.

A second run started with ``run.py`` into a finished run's folder is a case of ``tests/test_bad_inputs.py``
(refused, the first run's files byte-identical), and so is ``resume=auto`` with another seed's command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zoo.app.resume import check_resume
from zoo.app.run_folder import RunFolderTaken, run_records
from zoo.app.train import fit

TINY = ["method=dae", "trainer=debug", "+test=false", "logger=csv", "callbacks=none",
        "+callbacks.checkpoint={_target_: lightning.pytorch.callbacks.ModelCheckpoint, "
        "dirpath: '${paths.output_dir}/checkpoints', filename: 'step{step}', save_last: true}"]


def stored(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_run_keeps_its_id_in_run_json_and_every_checkpoint_when_resumed(tmp_path: Path, make_config) -> None:
    run = tmp_path / "run"
    fit(make_config(*TINY, output_dir=run))
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert stored(run / "checkpoints" / "last.ckpt")["zoo_config"]["run_id"] == run_id
    fit(make_config(*TINY, "trainer.max_epochs=2", "resume=auto", output_dir=run))
    assert json.loads((run / "run.json").read_text())["run_id"] == run_id
    assert stored(run / "checkpoints" / "last.ckpt")["global_step"] == 8
    assert {stored(p)["zoo_config"]["run_id"] for p in (run / "checkpoints").glob("*.ckpt")} == {run_id}


def test_a_sub_run_into_a_folder_that_holds_a_run_is_refused(tmp_path: Path, make_config) -> None:
    """``fit`` (what a study's sub-runs call) refuses too, before building anything."""
    run = tmp_path / "run"
    fit(make_config(*TINY, output_dir=run))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RunFolderTaken, match=r"already holds a run \(run\.json, metrics\.json, checkpoints/.*resume=auto"):
        fit(make_config(*TINY, "seed=1", output_dir=run))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_checkpoint_of_another_run_is_refused_even_with_the_same_config(tmp_path: Path, make_config) -> None:
    """Two runs of one command have different ids: the folder's run continues only its own checkpoints."""
    fit(make_config(*TINY, output_dir=tmp_path / "a"))
    fit(make_config(*TINY, output_dir=tmp_path / "b"))
    from zoo.loading import load_method

    method = load_method(tmp_path / "b" / "checkpoints" / "last.ckpt")
    folder_id = json.loads((tmp_path / "b" / "run.json").read_text())["run_id"]
    other = tmp_path / "a" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=r"belongs to run [0-9a-f]{32}, but this run folder is run [0-9a-f]{32}"):
        check_resume(str(other), method, f"resume={other}", folder_run_id=folder_id)
    check_resume(str(tmp_path / "b" / "checkpoints" / "last.ckpt"), method, "resume=auto", folder_run_id=folder_id)


def test_what_marks_a_folder_as_holding_a_run(tmp_path: Path) -> None:
    assert run_records(tmp_path / "missing") == []
    (tmp_path / ".hydra").mkdir()
    assert run_records(tmp_path) == []  # a run that failed before training leaves only .hydra/
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run.json").write_text("{}")
    assert run_records(tmp_path) == ["sub-run sub"]
