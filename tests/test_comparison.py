"""Comparison that survives bad runs, run.json with every override, hyperparameters a person can read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from zoo import compare
from zoo.app.hparams import hyperparameters
from zoo.app.train import fit

TINY = ["method=dae", "trainer=debug", "+test=false"]


def logged_hparams(folder: Path) -> dict:
    """The HParams columns TensorBoard shows for a run: its session start info in the event file."""
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = HParamsPluginData.FromString(content).session_start_info
    return {key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind")) for key, value in info.hparams.items()}


def test_hparams_name_the_choices_and_the_override_not_the_plumbing(tmp_path: Path, make_config) -> None:
    for name, hidden in (("a", 100), ("b", 20)):
        fit(make_config(*TINY, f"method.hidden={hidden}", "trainer.max_epochs=1", output_dir=tmp_path / name))
    a, b = logged_hparams(tmp_path / "a"), logged_hparams(tmp_path / "b")
    assert a["method.hidden"] == 100 and b["method.hidden"] == 20
    assert a["method"] == "dae" and a["data"] == "digits" and a["trainer.max_epochs"] == 1
    assert {key for key in a if a[key] != b.get(key)} == {"method.hidden"}
    plumbing = [key for key in a if "_target_" in key or key.startswith(("callbacks.", "paths.", "hydra", "logger."))]
    assert not plumbing and not any(str(tmp_path) in str(value) for value in a.values())
    assert yaml.safe_load((tmp_path / "a" / "hparams.yaml").read_text()) == a


def test_run_json_records_every_override(tmp_path: Path, make_config) -> None:
    fit(make_config(*TINY, "trainer.limit_train_batches=2", output_dir=tmp_path / "a"))
    overrides = json.loads((tmp_path / "a" / "run.json").read_text())["overrides"]
    assert "trainer.limit_train_batches=2" in overrides and "method=dae" in overrides


def test_compare_prints_the_good_runs_and_names_the_broken_folder(tmp_path: Path, make_config, capsys) -> None:
    fit(make_config(*TINY, output_dir=tmp_path / "good"))
    fit(make_config(*TINY, output_dir=tmp_path / "bad"))
    (tmp_path / "bad" / "metrics.json").write_text("{not json")
    compare.main([str(tmp_path)])
    printed = capsys.readouterr().out
    assert "│ good " in printed
    [line] = [line for line in printed.splitlines() if line.startswith("broken run")]
    assert line.startswith("broken run bad:") and "metrics.json is not readable JSON" in line


def test_compare_survives_anything_in_a_run_folder(tmp_path: Path, capsys) -> None:
    """A 401-digit integer, text, markup and terminal escapes from files: shown as text, escaped, no traceback."""
    (tmp_path / "a").mkdir()
    # A ranked name (higher is better): as a number the 401-digit integer would be the best.
    (tmp_path / "a" / "metrics.json").write_text(json.dumps({"val/loss": 1.5, "probe/knn_top1": 10**400, "note": "[bold]x[/]"}))
    (tmp_path / "a" / "run.json").write_text(json.dumps({"method": "evil\x1b[31mred", "data": "[red]x", "overrides": 3}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text(json.dumps({"val/loss": 1.2, "probe/knn_top1": 3.0}))
    compare.main([str(tmp_path), "--markdown", str(tmp_path / "table.md")])
    out = capsys.readouterr().out
    assert "\x1b[31m" not in out and "\\x1b[31" in out and "[red]x" in out and "[bold]x[/]" in out
    assert "broken run" not in out
    table = (tmp_path / "table.md").read_text()
    assert "**1.2**" in table and "**3**" in table and "10000000" in table


def test_compare_on_a_missing_folder_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        compare.main([str(tmp_path / "nope")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tmp_path / 'nope'}: no such folder; pass the logs root, e.g. `python -m zoo.compare logs`"
    ]


def test_compare_ends_on_ctrl_c_with_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "scan", interrupted)
    with pytest.raises(SystemExit) as stop:
        compare.main([str(tmp_path)])
    assert stop.value.code == 130 and capsys.readouterr().err == "interrupted by SIGINT\n"


def test_logger_settings_and_the_config_dump_are_no_hyperparameters(make_config) -> None:
    overrides = ["method=dae", "logger.tensorboard.default_hp_metric=true", "print_config=true", "method.hidden=20"]
    params = hyperparameters(make_config(*overrides), overrides)
    assert params["method.hidden"] == 20
    assert not [key for key in params if key.startswith(("logger", "print_config"))], params
