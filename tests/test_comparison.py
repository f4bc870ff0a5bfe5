"""Comparison that survives bad runs, run.json with every override, hyperparameters a person can read."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from zoo import compare
from zoo.train import fit

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
