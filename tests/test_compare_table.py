"""``python -m zoo.compare`` readable anywhere: what differs, within the terminal's width, best only where it means something."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from zoo import compare

SWEEP = "multirun/2026-12-04_10-00-00"
RUNS = {  # run name: (method, overrides)
    f"{SWEEP}/0_method.optimizer.lr-0.001": ("diffusion", ["method.optimizer.lr=0.001", "trainer.max_epochs=2"]),
    f"{SWEEP}/1_method.optimizer.lr-0.003": ("diffusion", ["method.optimizer.lr=0.003", "trainer.max_epochs=2"]),
    f"{SWEEP}/2_method-jit": ("jit", ["method=jit", "trainer.max_epochs=2"]),
}
METRICS = {  # name: one value per run
    "gen/fd_classifier": [12.5, 9.75, 20.1],
    "gen/fd_classifier_n": [1000, 1000, 1000],
    "gen/fd_classifier_lo": [11.9, 9.1, 19.0],
    "gen/fd_classifier_hi": [13.2, 10.4, 21.3],
    "gen/fd_classifier_floor": [0.8, 0.9, 0.7],
    "gen/memorization": [0.0, 0.01, 0.0],
    "gen/kid_classifier": [0.011, 0.009, 0.02],
    "gen/precision_classifier": [0.61, 0.66, 0.52],
    "gen/recall_classifier": [0.45, 0.5, 0.41],
    "val/loss": [0.0312, 0.0298, 0.0405],
    "train/loss": [0.033, 0.031, 0.041],
    "train/loss_epoch": [0.034, 0.032, 0.042],
    "probe/knn_top1": [0.912, 0.934, 0.871],
    "probe/linear_top1": [0.95, 0.96, 0.9],
    "epoch": [1, 1, 1],
    "lr-Adam": [0.001, 0.003, 0.0002],
    "data/n_train": [1437, 1437, 1437],
}
BOOKKEEPING = ["gen/fd_classifier_n", "gen/fd_classifier_lo", "gen/fd_classifier_hi", "gen/fd_classifier_floor",
               "train/loss_epoch", "epoch", "lr-Adam"]


def make_sweep(root: Path, metrics: dict[str, list] = METRICS) -> Path:
    """Three run folders as ``fit`` leaves them (``run.json``, ``metrics.json``) under ``root``."""
    for i, (name, (method, overrides)) in enumerate(RUNS.items()):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"method": method, "data": "digits", "overrides": overrides}))
        (folder / "metrics.json").write_text(json.dumps({key: values[i] for key, values in metrics.items()}))
    return root


def printed(argv: list[str], columns: int, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    compare.main(argv)
    return capsys.readouterr().out


def table_rows(out: str) -> dict[str, list[str]]:
    """Each body row of the printed tables by its first cell, with its other cells (across split tables)."""
    rows: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("│"):
            first, *cells = [text.strip() for text in line.strip("│").split("│")]
            rows.setdefault(first, []).extend(cells)
    return rows


def assert_fits(out: str, width: int) -> None:
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    for name in RUNS:
        assert any(name in line for line in lines), f"{name} is not whole on one line"


def test_an_80_column_terminal_gets_lines_of_80_and_whole_run_names(tmp_path: Path, capsys, monkeypatch) -> None:
    root = make_sweep(tmp_path)
    for everything in ([], ["--all"]):
        out = printed([str(root), *everything], 80, capsys, monkeypatch)
        assert_fits(out, 80)
        rows = table_rows(out)
        assert [rows[f"#{i}"] for i in (1, 2, 3)] == [[name] for name in RUNS]
        assert rows["gen/fd_classifier ↓"] == ["12.5", "*9.75", "20.1"]


def test_by_default_only_what_differs_and_measures(tmp_path: Path, capsys, monkeypatch) -> None:
    rows = table_rows(printed([str(make_sweep(tmp_path))], 80, capsys, monkeypatch))
    assert rows["method.optimizer.lr"] == ["0.001", "0.003", ""] and rows["method"] == ["diffusion", "diffusion", "jit"]
    assert "trainer.max_epochs" not in rows and "data" not in rows
    assert rows["gen/memorization"] == ["0", "0.01", "0"]
    shown = {label.split(" ")[0] for label in rows}
    assert not shown & {*BOOKKEEPING, "data/n_train"}


def test_all_shows_every_override_and_metric(tmp_path: Path, capsys, monkeypatch) -> None:
    rows = table_rows(printed([str(make_sweep(tmp_path)), "--all"], 80, capsys, monkeypatch))
    assert rows["trainer.max_epochs"] == ["2", "2", "2"] and rows["data"] == ["digits"] * 3
    assert {label.split(" ")[0] for label in rows} >= set(METRICS)


def test_best_is_marked_only_where_the_name_says_which_way_is_better(tmp_path: Path, capsys, monkeypatch) -> None:
    rows = table_rows(printed([str(make_sweep(tmp_path)), "--all"], 80, capsys, monkeypatch))
    by_name = {label.split(" ")[0]: cells for label, cells in rows.items()}
    for name in [*BOOKKEEPING, "gen/memorization", "data/n_train"]:
        assert not any(cell.startswith("*") for cell in by_name[name]), name
    assert by_name["val/loss"] == ["0.0312", "*0.0298", "0.0405"]
    assert by_name["probe/knn_top1"] == ["0.912", "*0.934", "0.871"]
    assert by_name["gen/precision_classifier"][1] == "*0.66"
    lone = table_rows(printed([str(tmp_path / list(RUNS)[0])], 80, capsys, monkeypatch))
    assert lone["val/loss ↓"] == ["0.0312"] and not any("*" in cell for cells in lone.values() for cell in cells)


@pytest.mark.parametrize(("name", "way"), [
    ("val/loss", "lower"), ("gen/fd_classifier", "lower"), ("gen/fd_inception", "lower"),
    ("gen/kid_classifier", "lower"), ("gen/manifold_distance", "lower"), ("probe/knn_loss", "lower"),
    ("probe/knn_top1", "higher"), ("probe/linear_top1", "higher"), ("gen/class_acc", "higher"),
    ("gen/precision_classifier", "higher"), ("gen/recall_classifier", "higher"),
    ("gen/memorization", None), ("gen/fd_classifier_n", None), ("gen/fd_classifier_floor", None),
    ("gen/fd_classifier_lo", None), ("gen/fd_classifier_hi", None), ("gen/kid_classifier_std", None),
    ("lr-Adam", None), ("epoch", None), ("train/loss_step", None), ("probe_map/best_t", None), ("huge", None),
])
def test_direction_by_name(name: str, way: str | None) -> None:
    assert compare.direction(name) == way


def test_csv_holds_every_run_and_every_column(tmp_path: Path, capsys, monkeypatch) -> None:
    root = make_sweep(tmp_path / "logs")
    printed([str(root), "--csv", str(tmp_path / "runs.csv")], 80, capsys, monkeypatch)
    with (tmp_path / "runs.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["run"] for row in rows] == list(RUNS)
    assert [row["method.optimizer.lr"] for row in rows] == ["0.001", "0.003", ""]
    assert [row["trainer.max_epochs"] for row in rows] == ["2"] * 3 and [row["method"] for row in rows][2] == "jit"
    for name, values in METRICS.items():
        assert [float(row[name]) for row in rows] == values


def test_markdown_stays_complete(tmp_path: Path, capsys, monkeypatch) -> None:
    root = make_sweep(tmp_path / "logs")
    printed([str(root), "--markdown", str(tmp_path / "runs.md")], 80, capsys, monkeypatch)
    header, _, *body = (tmp_path / "runs.md").read_text().splitlines()
    assert header.split(" | ")[:4] == ["| run", "method", "data", "overrides"] and all(name in header for name in METRICS)
    assert "method.optimizer.lr=0.001 trainer.max_epochs=2" in body[0] and "**9.75**" in body[1]
    assert "**0**" not in "".join(body) and "**1000**" not in "".join(body)


def test_a_wide_terminal_gets_one_table_with_a_row_per_run(tmp_path: Path, capsys, monkeypatch) -> None:
    metrics = {name: METRICS[name] for name in ("gen/fd_classifier", "gen/memorization", "val/loss", "probe/knn_top1")}
    out = printed([str(make_sweep(tmp_path, metrics))], 200, capsys, monkeypatch)
    assert_fits(out, 200)
    assert out.count("┏") == 1 and "#1" not in out
    rows = table_rows(out)
    assert rows[list(RUNS)[1]] == ["diffusion", "0.003", "*9.75", "0.01", "*0.934", "*0.0298"]


def test_help_lists_the_options(capsys) -> None:
    with pytest.raises(SystemExit):
        compare.main(["--help"])
    out = capsys.readouterr().out
    assert all(option in out for option in ("logdir", "--all", "--csv FILE", "--markdown FILE"))


@pytest.mark.parametrize("columns", ["80", None])
def test_the_command_piped_fits_80_columns(tmp_path: Path, columns: str | None) -> None:
    root = make_sweep(tmp_path)
    (root / "broken").mkdir()
    (root / "broken" / "metrics.json").write_text("{not json")
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    if columns:
        env["COLUMNS"] = columns
    result = subprocess.run([sys.executable, "-m", "zoo.compare", str(root)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout, 80)
    assert "broken run broken: ValueError: metrics.json is not readable JSON" in result.stdout
