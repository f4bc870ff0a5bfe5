"""``experiment=cd_digits`` (zoo/app/studies/cd_digits.py): CD against its EDM teacher and CT at equal budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.app.studies.cd_digits import counted, paired_ratio
from zoo.app.train import main

ROWS = ("teacher_35nfe", "teacher_1step", "cd_1", "cd_2", "cd_4", "ct_1", "ct_2")


def test_paired_ratio_by_hand() -> None:
    mean, lo, hi = paired_ratio([2.0, 3.0, 4.0], [1.0, 1.0, 2.0])  # ratios 2, 3, 2: mean 7/3, sd 1/sqrt(3)
    half = 2.920 * (1 / math.sqrt(3)) / math.sqrt(3)
    assert (
        mean == pytest.approx(7 / 3)
        and lo == pytest.approx(7 / 3 - half)
        and hi == pytest.approx(7 / 3 + half)
    )


def test_counted_counts_forward_passes_inside_the_block_only() -> None:
    net = nn.Linear(2, 2)
    with counted(net) as calls:
        net(torch.zeros(1, 2))
        net(torch.zeros(3, 2))
    net(torch.zeros(1, 2))
    assert calls == [2]


@pytest.mark.parametrize(
    "override, message",
    [
        ("study.taus=[0.8]", "cd_4 needs three intermediate sigmas"),
        ("study.sample_seeds=[0]", "at least two seeds"),
    ],
)
def test_bad_study_settings_are_refused_before_training(
    make_config, tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        main(make_config("experiment=cd_digits", override, output_dir=tmp_path / "run"))
    assert not (tmp_path / "run" / "teacher").exists()


@pytest.mark.slow
def test_reduced_cd_digits_keeps_the_ordering(make_config, tmp_path: Path) -> None:
    """A reduced run (small net, short budgets, 2 x 300 samples) keeps the orderings that hold at its budget:
    two CD steps beat one and beat the teacher's one step by far, and CT is worse than CD at equal budget.
    CD's one-step map from sigma_max needs the experiment's budget (600 steps: FD 1.99 against the teacher's
    one step 33.4); at 150 steps it is not learned yet (34.6 against 30.9), so it is not asserted here."""
    cfg = make_config(
        "experiment=cd_digits",
        "study_jobs=2",
        "net.block_out_channels=[16,32]",
        "study.teacher_budget=300",
        "study.budget=150",
        "study.n_samples=300",
        "study.sample_seeds=[0,1]",
        output_dir=tmp_path / "cd_digits",
    )
    main(cfg)
    table = json.loads((tmp_path / "cd_digits" / "cd_digits.json").read_text())
    assert set(table) == set(ROWS)
    assert all({"fd", "fd_lo", "fd_hi", "fd_floor", "nfe", "seconds"} <= set(row) for row in table.values())
    assert table["teacher_35nfe"]["nfe"] == 35 and table["cd_1"]["nfe"] == 1 and table["cd_4"]["nfe"] == 4
    assert table["cd_2"]["fd"] * 3 < table["teacher_1step"]["fd"]
    assert table["cd_2"]["fd"] < table["cd_1"]["fd"]
    assert table["ct_1"]["fd"] > table["cd_1"]["fd"]
