"""Short runs show what they learned: the EMA starts at step 0 when the run ends before its start."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_scale import TINY_DIFFUSION

from zoo.app.train import fit

TINY = [*TINY_DIFFUSION, "trainer=debug", "+test=false", "logger=csv", "~callbacks.samples", "~callbacks.generative"]


@pytest.mark.parametrize(("start", "used"), [(100, 0), (2, 2)])
def test_the_ema_starts_at_zero_only_in_runs_shorter_than_its_start(
    tmp_path: Path, make_config, capsys, start: int, used: int
) -> None:
    metrics = fit(make_config(*TINY, f"callbacks.ema.update_starting_at_step={start}", output_dir=tmp_path / "run"))
    assert metrics["ema/starting_at_step"] == used
    said = "the average starts at step 0" in capsys.readouterr().err
    assert said == (used == 0)
