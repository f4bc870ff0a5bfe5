"""What ``run.py`` calls: build everything from the config, fit, test, write ``metrics.json``.

``build`` instantiates datamodule, net, method, callbacks, loggers and trainer; ``fit`` runs one
training run into ``cfg.paths.output_dir``; ``main`` dispatches to an experiment's study (a
function that runs several fits and writes its table) or to one ``fit``, then prints the summary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from zoo import report


@dataclass
class Built:
    datamodule: L.LightningDataModule
    method: L.LightningModule
    trainer: L.Trainer


def build(cfg: DictConfig) -> Built:
    """Instantiate the datamodule, then the net (which reads ``shape``), the method and the trainer."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    with open_dict(cfg):
        cfg.shape = list(datamodule.shape)
        cfg.num_classes = datamodule.num_classes
    extra: dict[str, Any] = {}
    if cfg.get("net") is not None:
        extra["net"] = instantiate(cfg.net)
    if cfg.get("encoder") is not None:
        extra["encoder"] = instantiate(cfg.encoder)
    method = instantiate(cfg.method, **extra)
    method.run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return Built(datamodule, method, trainer)


def resume_path(resume: str | None, output_dir: str | Path) -> str | None:
    """``auto``: the run folder's ``checkpoints/last.ckpt`` if it exists; else a path or None."""
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        last = Path(output_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    if not Path(resume).exists():
        raise FileNotFoundError(f"resume={resume}: no such checkpoint; pass a .ckpt path or resume=auto")
    return str(resume)


def run_info(cfg: DictConfig) -> dict[str, Any]:
    """What names the run in comparisons: method and data choices and the command-line overrides."""
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        choices = hydra_cfg.runtime.choices
        return {
            "method": choices.get("method"),
            "data": choices.get("data"),
            "overrides": [o for o in hydra_cfg.overrides.task if not o.startswith(("hydra", "trainer", "paths", "resume"))],
        }
    return {"method": cfg.method.get("_target_", "?").rsplit(".", 1)[-1].lower(), "data": "?", "overrides": []}


def fit(cfg: DictConfig, info: dict[str, Any] | None = None) -> dict[str, float]:
    """One run: fit (and test), log hyperparameters with the final metrics, write ``metrics.json``.

    ``info`` (method, data, overrides) names the run for ``zoo.compare``; by default it comes from
    Hydra's runtime choices.
    """
    built = build(cfg)
    trainer, method, datamodule = built.trainer, built.method, built.datamodule
    if trainer.is_global_zero:
        report.print_config(cfg)
    trainer.fit(method, datamodule=datamodule, ckpt_path=resume_path(cfg.get("resume"), cfg.paths.output_dir))
    metrics = final_metrics(trainer)
    if cfg.get("test", True):
        trainer.test(method, datamodule=datamodule, verbose=False)
        metrics.update(final_metrics(trainer))
    if trainer.is_global_zero:
        log_hparams(trainer, cfg, metrics)
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        (out / "run.json").write_text(json.dumps(info or run_info(cfg), indent=2))
    return metrics


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The trainer's last logged scalars as a flat ``{name: float}``."""
    out = {}
    for name, value in trainer.callback_metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value)
    return out


def log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Hyperparameters with the final metrics, so TensorBoard's HParams tab compares runs.

    The metrics go in under ``hp/`` so the curves of the same names keep their own steps.
    """
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    for logger in trainer.loggers:
        logger.log_hyperparams(params, {f"hp/{k}": v for k, v in metrics.items() if math.isfinite(v)})
        logger.save()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become strings (TensorBoard takes scalars only)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    key = prefix[:-1]
    if tree is None or isinstance(tree, (list, tuple)):
        return {key: str(tree)}
    return {key: tree}


def main(cfg: DictConfig) -> float | None:
    """Run the experiment's study if it has one, else one fit; print the summary; return the metric."""
    if cfg.get("study") is not None:
        metrics = instantiate(cfg.study, _partial_=True)(cfg)
    else:
        metrics = fit(cfg)
    if L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        report.print_summary(metrics, cfg.paths.output_dir)
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None
