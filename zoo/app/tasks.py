"""What the tasks on a trained checkpoint share, and ``task=probe``.

``task=sample`` is ``zoo/app/sample_task.py``, ``task=fid`` and ``task=fid_reference`` ``zoo/app/fid_task.py``.
``python run.py task=eval ckpt=<path>`` runs every validation callback, probe and metric of the
configured callbacks once on the checkpoint's weights, then the test loop, and writes ``metrics.json``.

``python run.py task=probe ckpt=<path> probe.layer=2 probe.t=0.8`` fits the linear and kNN probes of the
checkpoint's features at one block and noise level (one cell of ``callbacks.ProbeMap``, with its code) on the
probe train split and scores them on ``probe.split``; ``metrics.json`` holds ``probe/linear_top1`` and
``probe/knn_top1``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from callbacks.probe_map import probe_cell
from zoo.app.configs import overridden_keys
from zoo.loading import check_file, load_method


def checkpoint_path(cfg: DictConfig) -> Path:
    """``cfg.ckpt`` as an existing file, or a message naming the fix."""
    if not cfg.get("ckpt"):
        raise ValueError(f"task={cfg.task} works on a checkpoint: pass ckpt=<path to a .ckpt>, e.g. a run's checkpoints/last.ckpt")
    path = Path(cfg.ckpt)
    check_file(path, f"ckpt={cfg.ckpt}", "a run's checkpoints/last.ckpt")
    return path


def sampler_overrides(cfg: DictConfig) -> dict[str, Any]:
    """The ``method.sampler.<key>`` values given on the command line (the checkpoint's own stay otherwise)."""
    keys = [key.removeprefix("method.sampler.") for key in overridden_keys("method.sampler.")]
    return {key: OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
            for key in keys if (value := OmegaConf.select(cfg, f"method.sampler.{key}")) is not None}


def progress_bar_on(cfg: DictConfig) -> bool:
    """Whether the config shows a progress bar, as a trainer built from it would: a ``callbacks.progress`` and
    ``trainer.enable_progress_bar`` not false."""
    progress = (cfg.get("callbacks") or {}).get("progress")
    return progress is not None and cfg.trainer.get("enable_progress_bar", True) is not False


def write_metrics(metrics: dict[str, float], folder: Path) -> None:
    """A task's figures as ``<folder>/metrics.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))


def method_to_evaluate(cfg: DictConfig, datamodule: L.LightningDataModule) -> L.LightningModule:
    """``task=eval``: the checkpoint's method, rebuilt from the checkpoint alone, checked against the data."""
    path = checkpoint_path(cfg)
    method = load_method(path)
    shape = getattr(method, "data_shape", getattr(method, "shape", None))
    if shape is not None and tuple(shape) != tuple(datamodule.shape):
        raise ValueError(
            f"ckpt={path} was trained on data of shape {list(shape)} but data= gives {list(datamodule.shape)}; "
            "pass the data settings of the training run (e.g. data.image_size=...)"
        )
    return method


PROBE_SPLITS = ("val", "test")
"""Where ``task=probe`` scores its probes: the probe val split (``ProbeMap``'s cells), or the test split."""


def probe_task(cfg: DictConfig) -> dict[str, float]:
    """``task=probe``: linear-probe and kNN top-1 of ``cfg.ckpt``'s ``embed`` at ``probe.layer`` and ``probe.t``.

    DDAE (Xiang et al., ICCV 2023, Sec. 4.1): the features of a noised image at one block, averaged over
    ``probe.draws`` noise draws, probed linearly and by kNN. The extraction and probes are ``callbacks.ProbeMap``'s
    own (``callbacks.probe_map.probe_cell``), seeded by ``seed``, so with the
    training run's seed, data and settings the figures equal that run's ``probe_map/linear_b<layer>_t<t>`` cell.
    ``probe.layer`` and ``probe.t`` null leave them to ``embed`` (a MoCo encoder takes neither; one draw then).
    """
    settings = cfg.probe
    if settings.split not in PROBE_SPLITS:
        raise ValueError(f"probe.split={settings.split}: choose one of {', '.join(PROBE_SPLITS)}")
    datamodule = instantiate(cfg.data)
    method = method_to_evaluate(cfg, datamodule)
    embed_kwargs = {key: settings[key] for key in ("layer", "t") if settings.get(key) is not None}
    draws = int(settings.draws) if "t" in embed_kwargs else 1
    train, val = datamodule.probe_dataloaders()
    scored = val if settings.split == "val" else datamodule.test_dataloader()
    cell = probe_cell(
        method, (train, scored), draws, embed_kwargs, int(cfg.seed),
        settings.k, settings.temperature, settings.weight_decay, settings.max_iter,
    )
    summary = {f"probe/{probe}_top1": value for probe, value in cell.items()}
    write_metrics(summary, Path(cfg.paths.output_dir))
    return summary
