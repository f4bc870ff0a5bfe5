"""What ``run.py`` calls: build everything from the config, fit, test, write ``metrics.json``.

``build`` instantiates datamodule, net, method, callbacks, loggers and trainer (and compiles the
method's net with ``compile=true``); ``fit`` runs one training run into ``cfg.paths.output_dir``, or
with ``task=eval ckpt=<path>`` validates and tests a checkpoint without training; ``main``
dispatches to ``task=sample`` and ``task=probe`` (``zoo.app.tasks``), to an experiment's study (a function that runs several
fits and writes its table) or to one ``fit``, then prints the summary; what it prints is kept in the run
folder's ``run.log`` (``zoo.app.terminal_log``). The resolved config is printed only with
``print_config=true``; otherwise one line says where Hydra wrote it. Under DDP every rank runs all of it;
files are written by rank 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import WeightAveraging
from omegaconf import DictConfig, OmegaConf, open_dict

from zoo.app import extract_latents_task, fid_task, report, resume, sample_task, tasks, terminal_log
from zoo.app.config_checks import check_launch, check_run, check_slots, check_views
from zoo.app.hparams import final_metrics, log_hparams
from zoo.app.run_folder import (
    check_fresh,
    launched_as_rank_zero,
    new_run_id,
    read_run_id,
    run_info,
    write_record,
)
from zoo.autoencoder import load_autoencoder
from zoo.loading import build_method
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
    """``instantiate(cfg.data)``, checked against the views the method asks for."""
    datamodule = instantiate(cfg.data)
    check_views(cfg, datamodule.shape)
    return datamodule


def latent_space(cfg: DictConfig) -> None:
    """With ``autoencoder=<ckpt>``: ``data_shape`` the pixels' shape, ``shape`` the autoencoder's latent shape
    (what the net and the denoiser see); a checkpoint that is no autoencoder of these data fails here."""
    if not cfg.get("autoencoder"):
        return
    autoencoder = load_autoencoder(cfg.autoencoder, cfg.shape)
    with open_dict(cfg):
        cfg.data_shape = list(cfg.shape)
        cfg.shape = list(autoencoder.latent_shape)


def compile_net(method: L.LightningModule) -> None:
    """``torch.compile`` the method's ``net`` in place (``nn.Module.compile``: the state-dict keys stay)."""
    net = getattr(method, "net", None)
    if not isinstance(net, torch.nn.Module):
        raise ValueError(
            f"compile=true compiles method.net, but {type(method).__name__} has no net; "
            "use compile=false or a method built on a net (diffusion, jit, ...)"
        )
    net.compile()


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
        if cfg.get("print_config"):
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


def main(cfg: DictConfig) -> float | None:
    """Run ``task=sample``, ``probe``, ``fid``, ``fid_reference`` or ``extract_latents``, the experiment's study if it has one, or one
    fit; print the summary; return the metric. Rank zero keeps what the process prints in ``<run folder>/run.log``, to the end of a run that
    ends well (of a failed one, ``run.py`` stops it once it has printed the error)."""
    check_run(cfg)
    if launched_as_rank_zero():
        terminal_log.keep_in(Path(cfg.paths.output_dir) / "run.log")
        report.print_config_file()
    task = cfg.get("task", "fit")
    with trusting(bool(cfg.get("trust_checkpoint"))):
        if task == "sample":
            metrics = sample_task.sample_task(cfg)
        elif task == "probe":
            metrics = tasks.probe_task(cfg)
        elif task == "fid":
            metrics = fid_task.fid_task(cfg)
        elif task == "fid_reference":
            metrics = fid_task.fid_reference_task(cfg)
        elif task == "extract_latents":
            metrics = extract_latents_task.extract_latents_task(cfg)
        elif cfg.get("study") is not None:
            metrics = instantiate(cfg.study, _partial_=True)(cfg)
        else:
            metrics = fit(cfg)
    if L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        report.print_summary(metrics, cfg.paths.output_dir)
    terminal_log.stop()
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None
