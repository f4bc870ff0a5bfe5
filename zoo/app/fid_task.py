"""``task=fid`` and ``task=fid_reference``: Inception metrics of sample files, in the conventions papers use.

``python run.py task=fid fid.samples=<samples.npz> fid.reference=<reference.npz> fid.weights=<inception .pth>``
reads ADM-layout npz files (``arr_0`` uint8 ``N,H,W,C``, C 3 or 1, as ``task=sample`` and the ADM reference
batches write them), runs the FID Inception (``callbacks.metrics.inception``) in ``fid.convention`` (``adm`` or
``clean``: ``callbacks.metrics.image_resize``) and writes ``metrics.json``: ``fid_<convention>`` (Heusel et al.
2017), ``is_<convention>`` (Salimans et al. 2016, parts of 5,000) and, against a reference of images,
``precision_<convention>`` and ``recall_<convention>`` (Kynkäänniemi et al. 2019, k = 3, as the ADM evaluator).
The reference may instead be a statistics npz (``mu``, ``sigma``: the ADM reference batches carry them, and
``task=fid_reference`` writes them): FID alone then.

``python run.py task=fid_reference data=cifar10 fid.split=train`` writes ``fid_reference_<convention>.npz``
(``mu``, ``sigma``, ``n``, ``convention``) of a dataset split into the run folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader

from callbacks.metrics.frechet_distance import GaussianAccumulator, frechet_distance_of_stats, gaussian_stats
from callbacks.metrics.image_resize import CONVENTIONS, to_inception_input
from callbacks.metrics.inception import FIDInceptionV3, load_inception
from callbacks.metrics.inception_score import inception_score
from callbacks.metrics.precision_recall import precision_recall
from callbacks.progress import progress_shown, track
from zoo.app.tasks import progress_bar_on, write_metrics

FID_SPLITS = ("train", "val", "test")


def read_image_npz(path: str | Path, key: str) -> Tensor:
    """``arr_0`` of an ADM-layout npz as uint8 ``N,C,H,W``; anything else is refused naming the layout."""
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(f"{key}={path} is not a file: pass an npz of uint8 images N,H,W,3 (task=sample writes one)")
    with np.load(path) as stored:
        if "arr_0" not in stored:
            raise ValueError(f"{key}={path} has no arr_0 (keys {sorted(stored)}): the ADM layout keeps the images in arr_0")
        images = stored["arr_0"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{key}={path}: arr_0 is {images.dtype} {images.shape}, the ADM layout is uint8 N,H,W,3 (or N,H,W,1)"
        )
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def inception_outputs(
    images: Tensor, net: FIDInceptionV3, convention: str, batch_size: int, device: torch.device, shown: bool
) -> tuple[Tensor, Tensor]:
    """Pool features ``N,2048`` and logits ``N,1008`` of uint8 ``images``, ``batch_size`` at a time, on the host."""
    pools, logits = [], []
    batches = images.split(batch_size)
    with torch.no_grad(), progress_shown(f"task=fid ({convention})", shown):
        for batch in track(batches, len(batches), f"Inception of {len(images):,} images"):
            pool, logit = net(to_inception_input(batch, convention).to(device))
            pools.append(pool.cpu())
            logits.append(logit.cpu())
    return torch.cat(pools), torch.cat(logits)


def _settings(cfg: DictConfig) -> tuple[str, int, torch.device]:
    settings = cfg.fid
    if settings.convention not in CONVENTIONS:
        raise ValueError(f"fid.convention={settings.convention}: choose one of {', '.join(CONVENTIONS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return settings.convention, int(settings.batch_size), device


def fid_task(cfg: DictConfig) -> dict[str, float]:
    """FID, IS and (against images) precision/recall of ``fid.samples`` against ``fid.reference``."""
    convention, batch_size, device = _settings(cfg)
    samples = read_image_npz(cfg.fid.samples, "fid.samples")
    reference_path = cfg.fid.reference
    if reference_path is None or not Path(reference_path).is_file():
        raise FileNotFoundError(
            f"fid.reference={reference_path} is not a file: pass an npz of reference images (arr_0) or of statistics "
            "(mu, sigma: task=fid_reference writes one)"
        )
    with np.load(reference_path) as stored:
        stats = (torch.from_numpy(stored["mu"]), torch.from_numpy(stored["sigma"])) if "mu" in stored else None
        stored_convention = str(stored["convention"]) if "convention" in stored else None
        has_images = "arr_0" in stored
    if stored_convention is not None and stored_convention != convention:
        raise ValueError(
            f"fid.reference={reference_path} holds {stored_convention} statistics but fid.convention={convention}: "
            f"pass fid.convention={stored_convention} or statistics of the {convention} convention"
        )
    if stats is None and not has_images:
        raise ValueError(f"fid.reference={reference_path} has neither images (arr_0) nor statistics (mu, sigma)")
    net = load_inception(cfg.fid.weights).to(device)
    shown = progress_bar_on(cfg)
    pool, logits = inception_outputs(samples, net, convention, batch_size, device, shown)
    metrics = {f"is_{convention}": inception_score(logits)}
    if has_images:
        # As the ADM evaluator: the reference's stored statistics (when it has them) for FID, its images for P/R.
        reference = read_image_npz(reference_path, "fid.reference")
        reference_pool, _ = inception_outputs(reference, net, convention, batch_size, device, shown)
        if stats is None:
            stats = gaussian_stats(reference_pool)
        precision, recall = precision_recall(reference_pool.to(device), pool.to(device), k=3)
        metrics |= {f"precision_{convention}": float(precision), f"recall_{convention}": float(recall)}
    metrics[f"fid_{convention}"] = float(frechet_distance_of_stats(stats, gaussian_stats(pool)))
    write_metrics(metrics, Path(cfg.paths.output_dir))
    return metrics


def fid_reference_task(cfg: DictConfig) -> dict[str, float]:
    """``fid_reference_<convention>.npz``: the Inception statistics of ``data``'s ``fid.split``."""
    convention, batch_size, device = _settings(cfg)
    if cfg.fid.split not in FID_SPLITS:
        raise ValueError(f"fid.split={cfg.fid.split}: choose one of {', '.join(FID_SPLITS)}")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    split = datamodule.splits[FID_SPLITS.index(cfg.fid.split)]
    net = load_inception(cfg.fid.weights).to(device)
    loader = DataLoader(split, batch_size=batch_size, shuffle=False, num_workers=int(cfg.data.get("num_workers") or 0))
    gaussian = GaussianAccumulator()
    # The split streams through the net: only the F x F sums stay, whatever its size (ImageNet's 1.28M images).
    with torch.no_grad(), progress_shown(f"task=fid_reference ({convention})", progress_bar_on(cfg)):
        for x01, _ in track(loader, len(loader), f"Inception of {len(split):,} images"):
            if x01.ndim != 4:
                raise ValueError(f"task=fid_reference needs images N,C,H,W; data gives {tuple(x01.shape)}")
            images = (x01 * 255).round().clamp(0, 255).to(torch.uint8)
            gaussian.add(net(to_inception_input(images, convention).to(device))[0].cpu())
    mean, covariance = gaussian.stats()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(
        out / f"fid_reference_{convention}.npz", mu=mean.numpy(), sigma=covariance.numpy(), n=gaussian.count,
        convention=convention,
    )
    metrics = {"n": float(gaussian.count)}
    write_metrics(metrics, Path(cfg.paths.output_dir))
    return metrics
