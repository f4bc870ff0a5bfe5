"""What ``run.py`` calls: build everything from the config, fit, test, write ``metrics.json``.

``build`` instantiates datamodule, net, method, callbacks, loggers and trainer (and compiles the
method's net with ``compile=true``); ``fit`` runs one training run into ``cfg.paths.output_dir``, or
with ``task=eval ckpt=<path>`` validates and tests a checkpoint without training; ``main``
dispatches to ``task=sample`` (``zoo.tasks``), to an experiment's study (a function that runs several
fits and writes its table) or to one ``fit``, then prints the summary. Under DDP every rank runs all of it; files are written by rank 0.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationKeyError

from zoo import report, resume, tasks
from zoo.conf_dir import conf_dir
from zoo.config_checks import check_missing, check_override_types, check_values, check_writable
from zoo.hparams import hyperparameters
from zoo.resume import resume_path  # noqa: F401  (the resume=auto rule, re-exported for callers of zoo.train)
from zoo.run_folder import check_fresh, launched_as_rank_zero, new_run_id, read_run_id, write_record
from zoo.stored_config import trusting


@dataclass
class Built:
    datamodule: L.LightningDataModule
    method: L.LightningModule
    trainer: L.Trainer


def build(cfg: DictConfig) -> Built:
    """Instantiate the datamodule, then the net (which reads ``shape``), the method and the trainer."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_data(cfg)
    with open_dict(cfg):
        cfg.shape = list(datamodule.shape)
        cfg.num_classes = datamodule.num_classes
    if cfg.get("task", "fit") == "eval":
        method = tasks.method_to_evaluate(cfg, datamodule)
    else:
        check_slots(cfg)
        latent_space(cfg)
        method = build_method(cfg)
        method.run_config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("compile"):
        compile_net(method)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    # Weight averaging swaps its average in at validation start and out at validation end: it goes
    # last, so every other callback's validation-end hook (samples, probes, metrics) sees the average.
    callbacks.sort(key=lambda callback: isinstance(callback, WeightAveraging))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return Built(datamodule, method, trainer)


def build_data(cfg: DictConfig) -> L.LightningDataModule:
    """``instantiate(cfg.data)``; vector data under views that the method (not the command line) asked
    for is refused as the method's need, so the fix named is other data, not dropping the views (every
    recipe of ``datamodules.views`` augments images)."""
    datamodule = instantiate(cfg.data)
    views = cfg.data.get("views")
    given = HydraConfig.initialized() and any(
        o.lstrip("+").startswith("data.views=")
        for o in OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)
    )
    if views is not None and not given and len(datamodule.shape) != 3:
        raise ValueError(
            f"method={method_name(cfg)} trains on augmented views of images (its config sets data.views={views}), "
            f"but data={choice(cfg, 'data')} holds samples of shape {list(datamodule.shape)}; use image data "
            "(data=digits, data=mnist, data=fashion_mnist, data=cifar10) or a method for vectors"
        )
    return datamodule


def build_method(cfg: DictConfig) -> L.LightningModule:
    """The method of a config whose ``shape`` is filled in.

    A method takes its net and frozen encoder through its own config (``net: ${net}``,
    ``encoder: ${encoder}``), so nothing is injected here; a net whose config reads a geometry the
    data do not have fails first with a message naming the nets that fit.
    """
    if cfg.get("net") is not None:
        check_net_fits(cfg)
    return instantiate(cfg.method)


def latent_space(cfg: DictConfig) -> None:
    """With ``autoencoder=<ckpt>``: ``data_shape`` the pixels' shape, ``shape`` the autoencoder's latent shape
    (what the net and the denoiser see); a checkpoint that is no autoencoder of these data fails here."""
    if not cfg.get("autoencoder"):
        return
    from zoo.autoencoder import load_autoencoder

    autoencoder = load_autoencoder(cfg.autoencoder, cfg.shape)
    with open_dict(cfg):
        cfg.data_shape = list(cfg.shape)
        cfg.shape = list(autoencoder.latent_shape)


def check_net_fits(cfg: DictConfig) -> None:
    """Resolve ``cfg.net``: a clear error when it reads a geometry (``${shape.1}``) the data do not have."""
    try:
        OmegaConf.to_container(cfg.net, resolve=True)
    except InterpolationKeyError as error:
        kind = "vectors" if len(cfg.shape) == 1 else "images"
        hint = "net=mlp" if kind == "vectors" else "an image net (net=unet, net=dit, net=jit_vit)"
        raise ValueError(
            f"net={cfg.net._target_.rsplit('.', 1)[-1]} does not fit data of shape {list(cfg.shape)} ({kind}): "
            f"{error.msg.splitlines()[0]}; use {hint}"
        ) from None


SLOTS = ("net", "encoder", "guidance", "autoencoder")
"""The config slots a method reads by interpolation (``${net}``, ``${encoder}``, ...) when it takes them."""


def check_slots(cfg: DictConfig) -> None:
    """Refuse a ``net=`` or ``encoder=`` that nothing in the run reads, naming the methods that take one.

    A slot is taken by whatever interpolates it (the method's arguments, a loss term, a guidance
    reward); a slot set but never read would otherwise be ignored silently.
    """
    tree = OmegaConf.to_container(cfg, resolve=False)
    for slot in SLOTS:
        if tree.get(slot) is None:
            continue
        rest = json.dumps({key: value for key, value in tree.items() if key != slot})
        if "${" + slot + "}" in rest or "${" + slot + "." in rest:
            continue
        takers = methods_reading(slot)
        raise ValueError(
            f"method={method_name(cfg)} takes no {slot} (nothing in its config reads ${{{slot}}}), but "
            f"{slot}={choice(cfg, slot)} was given; drop it, or use a method that takes one: "
            f"{', '.join(f'method={name}' for name in takers) or '(none in conf/method)'}"
        )


def methods_reading(slot: str) -> list[str]:
    """The methods in ``conf/method`` whose config (or a preset's parent) interpolates ``${slot}``."""
    folder = conf_dir() / "method"
    texts = {path.stem: path.read_text() for path in folder.glob("*.yaml")}

    def reads(name: str, seen: frozenset[str] = frozenset()) -> bool:
        text = texts.get(name, "")
        if "${" + slot + "}" in text or "${" + slot + "." in text:
            return True
        parents = [line.strip()[2:].strip() for line in text.splitlines() if line.strip().startswith("- ")]
        return any(parent in texts and parent not in seen and reads(parent, seen | {name}) for parent in parents)

    return sorted(name for name in texts if reads(name))


def method_name(cfg: DictConfig) -> str:
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get("method"))
    return cfg.method.get("_target_", "?").rsplit(".", 1)[-1].lower()


def choice(cfg: DictConfig, group: str) -> str:
    if not OmegaConf.is_config(cfg.get(group)):
        return str(cfg.get(group))
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group))
    return cfg[group].get("_target_", "?").rsplit(".", 1)[-1]


def compile_net(method: L.LightningModule) -> None:
    """``torch.compile`` the method's ``net`` in place (``nn.Module.compile``: the state-dict keys stay)."""
    net = getattr(method, "net", None)
    if not isinstance(net, torch.nn.Module):
        raise ValueError(
            f"compile=true compiles method.net, but {type(method).__name__} has no net; "
            "use compile=false or a method built on a net (diffusion, jit, ...)"
        )
    net.compile()


def processes_per_run(trainer_cfg: DictConfig) -> int | None:
    """``trainer.devices * trainer.num_nodes`` when ``devices`` is a count or a list; None for ``auto``."""
    devices = trainer_cfg.get("devices", 1)
    count = len(devices) if OmegaConf.is_list(devices) else devices if isinstance(devices, int) else None
    return None if count is None or count < 0 else count * int(trainer_cfg.get("num_nodes", 1))


def check_launch(cfg: DictConfig) -> None:
    """Refuse the launches that would split one run over several folders or re-run a sweep per rank.

    Processes started one by one (each node, torchrun, srun) each resolve the default folder's
    timestamp on their own, so they would write to different folders and ``resume=auto`` would find
    different checkpoints on different ranks: they must be given the same ``hydra.run.dir``. In a
    multirun (``-m``), Lightning's DDP launcher would start each child with ``-m`` again, so a job of
    several processes needs ``hydra/launcher=slurm``, where SLURM starts the ranks. Lightning's own DDP
    children and submitit's jobs get the folder of the process that started them.
    """
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        processes = processes_per_run(cfg.trainer)
        if processes is not None and processes > 1 and os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
            raise ValueError(
                f"trainer.devices x trainer.num_nodes = {processes} processes in a multirun (-m): only "
                "hydra/launcher=slurm starts several processes per job; use it, or trainer.devices=1 in a "
                "local sweep, or run the multi-device job without -m"
            )
        return
    if any(o.startswith("hydra.run.dir=") for o in hydra_cfg.overrides.hydra):
        return
    num_nodes = int(cfg.trainer.get("num_nodes", 1))
    reasons = {
        f"trainer.num_nodes={num_nodes}": num_nodes > 1,
        f"torchrun with WORLD_SIZE={os.environ.get('WORLD_SIZE')}": "TORCHELASTIC_RUN_ID" in os.environ
        and int(os.environ.get("WORLD_SIZE", 1)) > 1,
        f"srun with SLURM_NTASKS={os.environ.get('SLURM_NTASKS')}": int(os.environ.get("SLURM_NTASKS", 1)) > 1,
    }
    for reason, applies in reasons.items():
        if applies:
            raise ValueError(
                f"{reason}: the processes of this run are started separately and would each pick their own "
                "timestamped run folder; pass the same folder to all of them, e.g. "
                "hydra.run.dir=logs/<name>/<data>/<date>, or launch with -m hydra/launcher=slurm"
            )


def run_info(cfg: DictConfig) -> dict[str, Any]:
    """What names the run in comparisons: method and data choices and every command-line override but Hydra's."""
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        choices = hydra_cfg.runtime.choices
        return {
            "method": choices.get("method"),
            "data": choices.get("data"),
            "overrides": [o for o in hydra_cfg.overrides.task if not o.startswith("hydra")],
        }
    return {"method": cfg.method.get("_target_", "?").rsplit(".", 1)[-1].lower(), "data": "?", "overrides": []}


def fit(cfg: DictConfig, info: dict[str, Any] | None = None) -> dict[str, float]:
    """One run: fit (and test), log hyperparameters with the final metrics, write ``metrics.json``.

    With ``task=eval`` the method of ``ckpt`` (rebuilt from the checkpoint) is validated (every
    validation callback and probe runs once) and tested instead of trained. ``info`` (method, data, overrides) names the run for
    ``zoo.compare``; by default it comes from Hydra's runtime choices.
    """
    with trusting(bool(cfg.get("trust_checkpoint"))):
        return fit_trusting(cfg, info)


def fit_trusting(cfg: DictConfig, info: dict[str, Any] | None) -> dict[str, float]:
    """``fit`` within the run's ``trust_checkpoint`` decision (set per process: a study's workers call ``fit``)."""
    check_launch(cfg)
    train = cfg.get("task", "fit") == "fit"
    out = Path(cfg.paths.output_dir)
    path = None
    if train:
        if launched_as_rank_zero():
            check_fresh(out, cfg.get("resume"), key="paths.output_dir")
        path = resume.resume_path(cfg.get("resume"), out)
    else:
        tasks.checkpoint_path(cfg)
    with open_dict(cfg):
        cfg.run_id = resume.stored_run_id(path) or read_run_id(out) or new_run_id()
    record = {"run_id": cfg.run_id, **(info or run_info(cfg))}
    built = build(cfg)
    trainer, method, datamodule = built.trainer, built.method, built.datamodule
    if path is not None:
        resume.check_resume(path, method, f"resume={cfg.resume}", folder_run_id=read_run_id(out))
    if trainer.is_global_zero:
        report.print_config(cfg)
        if train:
            write_record(out, record)
    if train:
        resume.fit(trainer, method, datamodule, cfg, path)
    else:
        trainer.validate(method, datamodule=datamodule, verbose=False)
    metrics = final_metrics(trainer)
    if cfg.get("test", True):
        trainer.test(method, datamodule=datamodule, verbose=False)
        metrics.update(final_metrics(trainer))
    if trainer.is_global_zero:
        log_hparams(trainer, cfg, metrics)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        write_record(out, record)
    return metrics


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The trainer's last logged scalars as a flat ``{name: float}``."""
    out = {}
    for name, value in trainer.callback_metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value)
    return out


def log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """The run's hyperparameters (``zoo.hparams``) with the final metrics, so TensorBoard's HParams tab
    compares runs, and ``hparams.yaml`` rewritten with them.

    The metrics go in under ``hp/`` so the curves of the same names keep their own steps. Lightning
    writes ``hparams.yaml`` once, at fit start, before these are known; it is written again here.
    """
    params = hyperparameters(cfg)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, {f"hp/{k}": v for k, v in metrics.items() if math.isfinite(v)})
        else:
            logger.log_hyperparams(params)
        if logger.log_dir is not None:
            (Path(logger.log_dir) / "hparams.yaml").unlink(missing_ok=True)
        logger.save()


def main(cfg: DictConfig) -> float | None:
    """Run ``task=sample``, the experiment's study if it has one, or one fit; print the summary; return
    the metric."""
    check_override_types(cfg)
    check_missing(cfg)
    check_values(cfg)
    check_writable(cfg)
    task = cfg.get("task", "fit")
    if task not in tasks.TASKS:
        raise ValueError(f"task={task}: choose one of {', '.join(tasks.TASKS)}")
    with trusting(bool(cfg.get("trust_checkpoint"))):
        if task == "sample":
            metrics = tasks.sample_task(cfg)
        elif cfg.get("study") is not None:
            metrics = instantiate(cfg.study, _partial_=True)(cfg)
        else:
            metrics = fit(cfg)
    if L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        report.print_summary(metrics, cfg.paths.output_dir)
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None
