"""run.py end to end: the run folder, metrics.json, comparison, and the errors a user meets first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from zoo import compare
from zoo.app.train import fit


def run_py(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )


def test_debug_run_leaves_one_complete_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "x"
    # trainer=debug: 500 samples for the end-of-run FD (n_samples=auto), not the default run's 5,000.
    result = run_py(f"hydra.run.dir={out}", "trainer=debug")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"train/loss", "val/loss", "test/loss"} <= set(metrics)
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert list(out.glob("events.out.tfevents.*"))
    assert (out / ".hydra" / "config.yaml").exists()
    assert "tensorboard --logdir" in result.stdout


def test_compare_prints_every_run(tmp_path: Path, make_config, capsys) -> None:
    for name, hidden in (("a", 100), ("b", 20)):
        fit(make_config("method=dae", "trainer=debug", f"method.hidden={hidden}", output_dir=tmp_path / name))
    compare.main([str(tmp_path), "--markdown", str(tmp_path / "table.md")])
    printed = capsys.readouterr().out.split("runs under")[-1]
    assert "│ a " in printed and "│ b " in printed
    table = (tmp_path / "table.md").read_text().splitlines()
    assert "method.hidden=100" in table[2] and "method.hidden=20" in table[3]
    assert len(table) == 4 and table[2].startswith("| a |") and table[3].startswith("| b |")
    assert "**" in "".join(table[2:])


def test_compare_reads_event_files_without_metrics_json(tmp_path: Path, make_config) -> None:
    fit(make_config("method=dae", "trainer=debug", output_dir=tmp_path / "a"))
    (tmp_path / "a" / "metrics.json").unlink()
    [run] = compare.find_runs(tmp_path)
    assert {"val/loss", "train/loss_step", "train/loss_epoch"} <= run.metrics.keys()
    assert not [name for name in run.metrics if name.startswith("Loss/")]


def test_misspelt_key_is_named_before_training(tmp_path: Path) -> None:
    result = run_py("trainer.max_step=3", f"hydra.run.dir={tmp_path / 'r'}")
    assert result.returncode != 0
    assert "trainer.max_step is not a key" in result.stderr and "did you mean trainer.max_steps" in result.stderr
    assert not (tmp_path / "r").exists()


def test_n_train_larger_than_the_data_fails_before_training(make_config) -> None:
    with pytest.raises(ValueError, match=r"n_train=5000 .* 1437 training samples"):
        fit(make_config("trainer=debug", "data.n_train=5000"))


def test_image_net_on_vector_data_names_the_fix(make_config) -> None:
    from zoo.app.train import build

    with pytest.raises(ValueError, match=r"net=UNet does not fit data of shape \[2\] \(vectors\).*net=mlp"):
        build(make_config("data=manifold", "method=diffusion", "net=unet"))


def test_csv_logger_run_writes_metrics(make_config, tmp_path: Path) -> None:
    metrics = fit(make_config("method=dae", "trainer=debug", "logger=csv", output_dir=tmp_path / "csv"))
    assert "val/loss" in metrics and list((tmp_path / "csv").glob("metrics.csv"))


def test_weight_averaging_runs_last_so_validation_callbacks_see_the_average(make_config) -> None:
    from lightning.pytorch.callbacks import WeightAveraging

    from zoo.app.train import build

    callbacks = build(make_config("method=diffusion", "callbacks=generative")).trainer.callbacks
    averaging = [i for i, c in enumerate(callbacks) if isinstance(c, WeightAveraging)]
    others = [i for i, c in enumerate(callbacks) if type(c).__name__ in ("SampleGrid", "GenerativeMetrics")]
    assert averaging and others and max(others) < min(averaging)
