"""A study's runs side by side (``study_jobs=2``: two worker processes) give the table of the sequential study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.train import main

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
