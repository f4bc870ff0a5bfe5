"""The hyperparameters a run logs with its final metrics: what a person compares across runs, not the plumbing.

TensorBoard's HParams tab shows one column per logged key, in alphabetical order. The whole
flattened config would put ``callbacks.checkpoint._target_`` and temp paths first and bury what
differs among hundreds of constant columns. Logged instead: the run's choices of the config groups
(``method``, ``data``, ``net``, ``encoder``, ``guidance``, ``experiment``, ``trainer``), the
method's own values (``method.*``, without ``_target_``/``_partial_`` and without interpolated
slots such as ``${net}``, which the choices name), ``seed``, and every command-line override except
Hydra's, the run-folder paths and ``resume``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from zoo.app.configs import command_line, overridden_keys
from zoo.app.tensorboard_hparams import write_hparams
from zoo.app.tensorboard_logger import tag_in

CHOICES = ("method", "data", "net", "encoder", "guidance", "experiment", "trainer")
"""The config groups whose choice names the run."""

NOT_HYPERPARAMETERS = ("hydra", "paths", "resume", "ckpt", "logger", "print_config")
"""Overrides that say where a run goes or what it continues, not how it trains."""


def hyperparameters(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """``{key: scalar}`` of the run's choices, its method's values, ``seed`` and its overrides."""
    if overrides is None:
        overrides = command_line()
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    out: dict[str, Any] = {group: str(choices.get(group)) for group in CHOICES if group in choices}
    out.update(own_values(OmegaConf.to_container(cfg.method, resolve=False), "method", cfg))
    out["seed"] = cfg.get("seed")
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith(NOT_HYPERPARAMETERS) or key in CHOICES or key in choices:
            continue
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if OmegaConf.is_config(value):
            out.update(own_values(OmegaConf.to_container(value, resolve=False), key, cfg))
        else:
            out[key] = scalar(value)
    return out


def own_values(tree: Any, prefix: str, cfg: DictConfig) -> dict[str, Any]:
    """The leaves of an unresolved subtree, resolved, without ``_target_``, ``_partial_`` and interpolated nodes."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            if key not in ("_target_", "_partial_"):
                out.update(own_values(value, f"{prefix}.{key}", cfg))
        return out
    if isinstance(tree, str) and tree.startswith("${") and tree.endswith("}"):
        return {}
    return {prefix: scalar(OmegaConf.select(cfg, prefix, throw_on_missing=False))}


def scalar(value: Any) -> Any:
    """What TensorBoard takes: numbers, bools and strings; lists, dicts and None as their text."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The trainer's last logged scalars as a flat ``{name: float}``."""
    out = {}
    for name, value in trainer.callback_metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value)
    return out


def log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """The run's hyperparameters (``zoo.app.hparams``) with the final metrics, so TensorBoard's HParams tab
    compares runs, and ``hparams.yaml`` rewritten with them.

    TensorBoard gets the summaries of ``zoo.app.tensorboard_hparams``: its HParams tab reads the final
    metrics from the run's own scalars, so they are not logged again (``train/loss``, Lightning's alias
    of a value logged as ``train/loss_step`` and ``train/loss_epoch``, is no scalar and no column). Lightning writes ``hparams.yaml``
    once, at fit start, before these are known; it is written again here. W&B and MLflow get the final
    metrics at the last step, so that W&B's run summary and MLflow's metrics are ``metrics.json``; W&B's run
    ends here (wandb holds one run per process, which the next run's ``WandbLogger`` would continue).
    """
    params = hyperparameters(cfg)
    overridden = [key for key in overridden_keys() if key in params and key not in CHOICES]
    for logger in trainer.loggers:
        logger.log_hyperparams(params)
        if isinstance(logger, TensorBoardLogger):
            logged = [name for name in metrics if not {f"{name}_step", f"{name}_epoch"} & metrics.keys()]
            tags = [tag for name in logged if (tag := tag_in(logger, name)) is not None]
            first = tag_in(logger, cfg.get("optimized_metric") or "")
            write_hparams(logger.experiment, params, tags, overridden, first)
        if isinstance(logger, (MLFlowLogger, WandbLogger)):
            logger.log_metrics(metrics, trainer.global_step)
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()
        if logger.log_dir is not None:
            (Path(logger.log_dir) / "hparams.yaml").unlink(missing_ok=True)
        logger.save()
