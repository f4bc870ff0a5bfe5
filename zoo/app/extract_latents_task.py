"""``task=extract_latents``: encode a dataset once with a frozen autoencoder into shards ``data=latents`` reads.

``python run.py task=extract_latents data=image_folder data.root=<imagenet/train> data.image_size=256
autoencoder=<sd-vae folder or a zoo vae/vavae/rae last.ckpt>`` encodes the train and val splits (the datamodule's
unaugmented images: for image folders the recipes' resize and centre crop) in batches of ``latents.batch_size``
on the GPU if there is one, and writes into the run folder, per split, shards of ``latents.shard_size`` rows
(``<split>-<i>.npy``, float32 latents, and ``<split>-<i>.labels.npy``), then ``manifest.json`` (the autoencoder
and its digest, a fingerprint of the pixels read, counts, shapes, each file's SHA-256, the train split's
per-channel latent mean and std). Every file is written atomically, the manifest last: a folder without one
is an extraction that did not finish. Train on them with ``data=latents data.root=<that run folder>`` and the same
``autoencoder=`` (``datamodules/latents.py``). One process encodes; at ImageNet scale that is one GPU pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from callbacks.progress import progress_shown, track
from callbacks.training.files import atomic_write, file_digest
from datamodules.latents import MANIFEST
from zoo.app.tasks import progress_bar_on, write_metrics
from zoo.autoencoder import ChannelMoments, FrozenAutoencoder, load_autoencoder

SPLITS = ("train", "val", "test")


def write_shard(folder: Path, split: str, index: int, latents: Tensor, labels: Tensor) -> dict:
    """``<split>-<index>.npy`` and its labels, atomically; the manifest's entry for them."""
    entry = {"file": f"{split}-{index:05d}.npy", "labels": f"{split}-{index:05d}.labels.npy", "rows": len(labels)}
    for key, array in (("file", latents.numpy().astype(np.float32)), ("labels", labels.numpy().astype(np.int64))):
        atomic_write(folder / entry[key], lambda file, array=array: np.save(file, array))
    entry["sha256"] = file_digest(folder / entry["file"])
    entry["labels_sha256"] = file_digest(folder / entry["labels"])
    return entry


def encode_split(
    autoencoder: FrozenAutoencoder,
    dataset: Dataset,
    split: str,
    cfg: DictConfig,
    folder: Path,
    fingerprint: Any,
    moments: ChannelMoments | None,
) -> dict:
    """Encode ``dataset`` (``(x01, y)`` pairs) into shards of ``latents.shard_size`` rows, updating the pixel
    ``fingerprint`` (a hashlib object) and the latent ``moments``; the split's manifest entry."""
    device = next(autoencoder.parameters()).device
    shard_size, shards, count = int(cfg.latents.shard_size), [], 0
    pending: list[tuple[Tensor, Tensor]] = []
    loader = DataLoader(dataset, batch_size=int(cfg.latents.batch_size), shuffle=False)
    for x01, y in track(loader, len(loader), f"{split} ({len(dataset):,} images)"):
        fingerprint.update(x01.float().contiguous().numpy().tobytes())
        with torch.no_grad():
            z = autoencoder.encode((x01 * 2 - 1).to(device)).float().cpu()
        if moments is not None:
            moments.add(z)
        count += len(z)
        pending.append((z, torch.as_tensor(y)))
        if count - shard_size * len(shards) < shard_size:
            continue
        # Joined only when a shard is full: the rows wait as the batches they came in.
        z_all, y_all = torch.cat([p[0] for p in pending]), torch.cat([p[1] for p in pending])
        while len(z_all) >= shard_size:
            shards.append(write_shard(folder, split, len(shards), z_all[:shard_size], y_all[:shard_size]))
            z_all, y_all = z_all[shard_size:], y_all[shard_size:]
        pending = [(z_all, y_all)]
    if count > shard_size * len(shards):
        shards.append(write_shard(
            folder, split, len(shards), torch.cat([p[0] for p in pending]), torch.cat([p[1] for p in pending])
        ))
    return {"count": count, "shards": shards}


def extract_latents_task(cfg: DictConfig) -> dict[str, float]:
    """Encode ``data``'s train, val and test splits with ``autoencoder=`` into ``<run folder>/``; return the counts."""
    if not cfg.get("autoencoder"):
        raise ValueError(
            "task=extract_latents encodes with an autoencoder: pass autoencoder=<a vae/vavae/rae last.ckpt or a "
            "diffusers AutoencoderKL folder>"
        )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    autoencoder = load_autoencoder(cfg.autoencoder, datamodule.shape)
    autoencoder.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    folder = Path(cfg.paths.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint, moments = hashlib.sha256(), ChannelMoments()
    with progress_shown("task=extract_latents", progress_bar_on(cfg)):
        splits = {
            split: encode_split(
                autoencoder, datamodule.splits[SPLITS.index(split)], split, cfg, folder, fingerprint,
                moments if split == "train" else None,
            )
            for split in SPLITS
        }
    mean, std = moments.mean_std()
    manifest = {
        "autoencoder": str(cfg.autoencoder),
        "autoencoder_digest": autoencoder.digest,
        "data_fingerprint": fingerprint.hexdigest(),
        "data_shape": list(datamodule.shape),
        "latent_shape": list(autoencoder.latent_shape),
        "num_classes": int(datamodule.num_classes),
        "statistics": {"mean": mean, "std": std},
        "splits": splits,
    }
    atomic_write(folder / MANIFEST, lambda file: file.write(json.dumps(manifest, indent=2).encode()))
    summary = {f"{split}_count": float(entry["count"]) for split, entry in splits.items()}
    write_metrics(summary, folder)
    return summary
