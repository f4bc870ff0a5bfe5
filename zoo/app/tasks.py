"""The command-line tasks on a trained checkpoint: ``task=sample`` and ``task=eval``.

``python run.py task=sample ckpt=<path> n=64`` rebuilds the method from the checkpoint alone
(``load_method``), draws ``n`` samples (a progress bar counts the batches, unless ``~callbacks.progress``
or ``trainer.enable_progress_bar=false``) and writes ``samples.png`` (a grid; a scatter for vectors) and
``samples.npz`` into the run folder: ``arr_0`` the samples (images as uint8 ``N, H, W, C``, the ADM
evaluator's layout; vectors as float32 ``N, D``) and ``arr_1`` their labels (-1 when unconditional).
Every ``method.sampler.*`` given on the command line (steps, name, eta, CFG scale and interval,
predict-and-perturb) and ``guidance=...`` apply to this sampling.

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
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor
from torchvision.utils import save_image

from callbacks.probe_map import probe_cell
from callbacks.progress import progress_shown, track
from zoo.app.configs import overridden_keys
from zoo.loading import Has, check_file, load_method


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


def sample_task(cfg: DictConfig) -> dict[str, float]:
    """Draw ``cfg.n`` samples from ``cfg.ckpt`` in batches of ``cfg.sample_batch_size``; write png and npz."""
    path = checkpoint_path(cfg)
    n = int(cfg.n)
    method = load_method(
        path, expect=Has("sample"), expected="the checkpoint of a method that samples (method=diffusion, method=jit, ...)"
    )
    overrides = sampler_overrides(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    if cfg.get("guidance") is not None:
        datamodule = instantiate(cfg.data)
        with open_dict(cfg):
            cfg.shape, cfg.num_classes = list(datamodule.shape), datamodule.num_classes
        method.guidance = instantiate(cfg.guidance)
        datamodule.setup("fit")
        method.guidance.fit_to(datamodule)
    generator = torch.Generator(device=method.device).manual_seed(int(cfg.seed))
    samples, labels = [], []
    batch = int(cfg.sample_batch_size)
    num_classes = int(getattr(method, "num_classes", 0))
    starts = range(0, n, batch)
    with torch.no_grad(), progress_shown("task=sample", progress_bar_on(cfg)):
        for start in track(starts, len(starts), f"sampling {n:,}"):
            size = min(batch, n - start)
            y = (torch.arange(start, start + size) % num_classes) if num_classes else None
            samples.append(method.sample(size, y=y, generator=generator, **overrides).float().cpu())
            labels.append(y if y is not None else torch.full((size,), -1))
    x, y = torch.cat(samples), torch.cat(labels)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_samples(x, y, out)
    summary = {"n": float(n), "finite_fraction": float(torch.isfinite(x).flatten(1).all(1).float().mean())}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


def progress_bar_on(cfg: DictConfig) -> bool:
    """Whether the config shows a progress bar, as a trainer built from it would: a ``callbacks.progress`` and
    ``trainer.enable_progress_bar`` not false."""
    progress = (cfg.get("callbacks") or {}).get("progress")
    return progress is not None and cfg.trainer.get("enable_progress_bar", True) is not False


def write_samples(x: Tensor, y: Tensor, folder: Path) -> None:
    """``samples.npz`` (uint8 NHWC images or float32 vectors, and labels) and ``samples.png``."""
    if x.dim() == 4:
        images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        np.savez(folder / "samples.npz", images.permute(0, 2, 3, 1).numpy(), y.numpy())
        save_image((x.clamp(-1, 1) + 1) / 2, folder / "samples.png", nrow=int(len(x) ** 0.5) or 1)
        return
    np.savez(folder / "samples.npz", x.numpy().astype(np.float32), y.numpy())
    import matplotlib  # here, not at the top: only vector samples need it, and it costs start-up time

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4, 4))
    axes.scatter(x[:, 0], x[:, 1], s=3)
    axes.set_aspect("equal")
    figure.savefig(folder / "samples.png", dpi=100)
    plt.close(figure)


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
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary
