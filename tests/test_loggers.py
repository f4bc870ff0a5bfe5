"""W&B and MLflow as the zoo's loggers (``logger=wandb``, ``logger=mlflow``, or several at once): a run logs the
same hyperparameters and final metrics to them as to TensorBoard, and its figures reach them. All offline.

W&B runs offline (``WANDB_MODE=offline``); it then writes no ``config.yaml`` or ``wandb-summary.json``, only
its transaction log ``run-<id>.wandb``, which ``wandb_run`` reads. MLflow's store is the run folder's
``mlflow.db`` and ``mlartifacts/``. The working directory and W&B's own folders are under ``tmp_path``, and
the working directory stays empty: nothing is written outside the run folder. The tests need the extras
(``pip install -e ".[dev,wandb,mlflow]"``) and are skipped only where a package is not installed.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, compose_config
from hydra.utils import instantiate
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from callbacks.figures import show
from zoo.app.config_checks import check_run
from zoo.app.train import fit

TINY = ["method=dae", "trainer=debug", "callbacks=none", "method.hidden=20"]
"""A run of a few seconds, with an override among its hyperparameters."""


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """W&B offline and silent with its own folders under ``tmp_path``, no MLflow server, and an empty working
    directory under ``tmp_path`` that must stay empty; a W&B run a failed test left open is finished."""
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_API_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].finish()
    assert not list((tmp_path / "cwd").iterdir()), "files were written outside the run folder"


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of ``TINY`` logged to TensorBoard, the reference of the other loggers."""
    out = tmp_path_factory.mktemp("tensorboard") / "run"
    fit(compose_config([*TINY, "logger=tensorboard"], out))
    return out


def tensorboard_hparams(folder: Path) -> dict[str, Any]:
    """The hyperparameters of a TensorBoard run as logged (``hparams.yaml``), checked against those its HParams
    tab shows (the session start info, which keeps every number as a float)."""
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    shown = HParamsPluginData.FromString(content).session_start_info.hparams
    logged = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert logged == {key: getattr(value, value.WhichOneof("kind")) for key, value in shown.items()}
    return logged


def metrics_json(folder: Path) -> dict[str, float]:
    return json.loads((folder / "metrics.json").read_text())


def wandb_records(folder: Path) -> list[Any]:
    """The records of the one offline W&B run under ``folder``: its ``run-<id>.wandb`` file, a 7-byte header,
    then LevelDB's log format (32 KiB blocks of chunks, each after a header of CRC, length and type, 1 a whole
    record, 2 3 4 its first, middle and last part) of ``wandb_internal_pb2.Record`` messages. W&B's service
    process writes the file and may still hold its records after ``finish()`` returns (found as a file of only
    its header); ``wandb.teardown()`` ends the service, as the process's exit does for a user's run."""
    import wandb
    from wandb.proto.wandb_internal_pb2 import Record

    wandb.teardown()

    [path] = folder.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, chunks, at = [], b"", 7
    while at + 7 <= len(data):
        left = 32768 - at % 32768
        _, length, kind = struct.unpack("<IHB", data[at : at + 7])
        if left < 7 or (length, kind) == (0, 0):  # the rest of a block is padding
            at += left
            continue
        chunks += data[at + 7 : at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            records.append(Record.FromString(chunks))
            chunks = b""
    return records


def wandb_run(folder: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The offline W&B run under ``folder``: its run record, its config and its summary (their top-level keys,
    without W&B's own ``_*``)."""
    records = wandb_records(folder)
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind in ("config", "summary"):
            for item in getattr(record, kind).update:
                keys = [item.key] if item.key else list(item.nested_key)
                if len(keys) == 1 and not keys[0].startswith("_"):
                    (config if kind == "config" else summary)[keys[0]] = json.loads(item.value_json)
    [run] = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    return run, config, summary


def mlflow_run(folder: Path) -> Any:
    """The one MLflow run in the store of the run folder ``folder``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    [run] = client.search_runs([experiment.experiment_id for experiment in client.search_experiments()])
    return run


def run_id(folder: Path) -> str:
    return json.loads((folder / "run.json").read_text())["run_id"]


def test_wandb_run_holds_the_hyperparameters_and_final_metrics_of_tensorboard(
    tensorboard_run: Path, make_config, tmp_path: Path, offline: None
) -> None:
    pytest.importorskip("wandb")
    out = tmp_path / "wandb_run"
    fit(make_config(*TINY, "logger=wandb", output_dir=out))
    run, config, summary = wandb_run(out)
    assert config == tensorboard_hparams(tensorboard_run) and config["method.hidden"] == 20
    metrics = metrics_json(out)
    assert {"train/loss", "val/loss", "test/loss"} <= set(metrics)
    assert {name: summary[name] for name in metrics} == metrics
    assert metrics == pytest.approx(metrics_json(tensorboard_run), rel=1e-5)
    assert (run.run_id, run.display_name, run.project) == (run_id(out), "dae", "diffrep-zoo")
    assert not (out / "figures").exists()


def test_mlflow_run_holds_the_hyperparameters_and_final_metrics_of_tensorboard(
    tensorboard_run: Path, make_config, tmp_path: Path, offline: None
) -> None:
    pytest.importorskip("mlflow")
    out = tmp_path / "mlflow_run"
    fit(make_config(*TINY, "logger=mlflow", output_dir=out))
    run = mlflow_run(out)
    # MLflow keeps parameters as text.
    assert run.data.params == {key: str(value) for key, value in tensorboard_hparams(tensorboard_run).items()}
    assert run.data.params["method.hidden"] == "20"
    metrics = metrics_json(out)
    assert {"train/loss", "val/loss", "test/loss"} <= set(metrics)
    assert {name: run.data.metrics[name] for name in metrics} == metrics
    assert metrics == pytest.approx(metrics_json(tensorboard_run), rel=1e-5)
    assert (run.info.run_name, run.data.tags["zoo_run_id"], run.info.status) == ("dae", run_id(out), "FINISHED")


def test_tensorboard_wandb_and_mlflow_at_once_log_the_same(make_config, tmp_path: Path, offline: None) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    out = tmp_path / "run"
    fit(make_config(*TINY, "logger=[tensorboard,wandb,mlflow]", "+test=false", output_dir=out))
    hparams, metrics = tensorboard_hparams(out), metrics_json(out)
    _, config, summary = wandb_run(out)
    run = mlflow_run(out)
    assert config == hparams and run.data.params == {key: str(value) for key, value in hparams.items()}
    assert {name: summary[name] for name in metrics} == metrics == {name: run.data.metrics[name] for name in metrics}


def test_figures_reach_wandb_and_mlflow(tmp_path: Path, offline: None) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    out = tmp_path / "run"
    cfg = compose_config(["logger=[wandb,mlflow]", "logger.wandb.offline=true", "run_id=figures"], out)
    trainer = L.Trainer(logger=[instantiate(node) for node in cfg.logger.values()], default_root_dir=out)
    wandb_logger, mlflow_logger = trainer.loggers
    grid = torch.linspace(0, 1, 3 * 10 * 12).reshape(3, 10, 12)
    pixels = (grid * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    figure = Figure(figsize=(2, 1))
    figure.add_subplot().plot([0, 1], [1, 0])
    show(trainer, "samples/grid", grid, "test")
    show(trainer, "probe/acc(t)", figure, "test")
    run_folder = Path(wandb_logger.experiment.dir).parent
    wandb_logger.experiment.finish()

    # W&B's media files: files/media/images/<tag>_<step>_<hash>.png.
    pngs = run_folder.glob("files/media/images/*/*.png")
    images = {f"{path.parent.name}/{path.name.split('_')[0]}": path for path in pngs}
    assert sorted(images) == ["probe/acc(t)", "samples/grid"]
    with Image.open(images["samples/grid"]) as image:
        assert (np.asarray(image) == pixels).all()
    with Image.open(images["probe/acc(t)"]) as image:
        assert image.size == (200, 100)

    run = mlflow_logger.experiment.get_run(mlflow_logger.run_id)
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / "images"
    assert stored.is_relative_to(out)
    # The full-size images (MLflow adds .webp thumbnails), named after the key: `_` for the characters MLflow refuses.
    pngs = sorted(stored.glob("*.png"))
    [grid_png] = [path for path in pngs if path.name.startswith("samples") and "grid" in path.name]
    assert len(pngs) == 2 and any(path.name.startswith("probe") and "acc_t_" in path.name for path in pngs)
    with Image.open(grid_png) as image:
        assert (np.asarray(image) == pixels).all()
    assert not (out / "figures").exists()


def test_figures_import_neither_wandb_nor_mlflow() -> None:
    code = "import sys, callbacks.figures; print(sorted({'wandb', 'mlflow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("extra", ["wandb", "mlflow"])
def test_a_missing_logger_package_names_its_extra_before_anything_is_built(
    make_config, monkeypatch: pytest.MonkeyPatch, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, extra, None)
    with pytest.raises(ValueError, match=rf'logger.{extra} .*pip install -e "\.\[{extra}\]"'):
        check_run(make_config(f"logger=[tensorboard,{extra}]"))


def test_a_logger_written_as_a_string_in_a_config_names_the_group_override() -> None:
    from omegaconf import OmegaConf

    from zoo.app.config_checks import check_logger_packages

    with pytest.raises(ValueError, match=r"pass logger=csv on the command line.*'- override /logger: csv'"):
        check_logger_packages(OmegaConf.create({"logger": "csv"}))
