"""``data=latents``: an autoencoder's latents of a dataset, extracted once (``task=extract_latents``), streamed.

The folder holds ``manifest.json`` and, per split, shards ``<split>-<i>.npy`` (latents ``rows, *latent_shape``,
float32) and ``<split>-<i>.labels.npy``, read memory-mapped: only the rows a batch asks for leave the disk. The
manifest names the autoencoder (its digest), the data (a fingerprint of the pixels), the counts, shapes, each
shard's SHA-256 and the train split's per-channel latent statistics. ``setup`` checks every shard against it
(present, the rows and shape it says, the same SHA-256: ``verify=sha256``; ``verify=size`` only the first two, for
folders too large to hash at every start) and refuses a corrupt or missing one by name. A latent diffusion run
checks the manifest's autoencoder digest against its own ``autoencoder=``: latents of another autoencoder (stale)
are refused before the first step.

Batches are ``{"z": latents, "y": labels, "index": rows}``: the latents the autoencoder's ``encode`` gives, not
normalised (the method normalises them with the manifest's statistics). There are no pixels: probes and pixel
metrics need the image data (their callbacks are refused naming that), and the generative metrics compare decoded
samples with whatever ``real_data`` they are given. ``index`` (the row's place in its split) lets a diffusion
method draw each evaluation row's noise from the row alone, so ``val/loss`` does not depend on the batch size or
the world size. Under DDP, Lightning's distributed sampler gives each rank its part of the train split and
shuffles it by epoch from the global seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from callbacks.training.files import file_digest

MANIFEST = "manifest.json"
VERIFY = ("sha256", "size")


class LatentShard(Dataset):
    """One shard's rows, memory-mapped: item ``i`` is ``{"z": latent, "y": label, "index": offset + i}``, the
    index the row's within its split."""

    def __init__(self, latents: Path, labels: Path, offset: int) -> None:
        self.latents = np.load(latents, mmap_mode="r")
        self.labels = np.load(labels, mmap_mode="r")
        self.offset = offset

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {
            "z": torch.from_numpy(np.array(self.latents[index])),
            "y": torch.tensor(int(self.labels[index])),
            "index": torch.tensor(self.offset + index),
        }


def read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"data.root={root} has no {MANIFEST}: extract the latents first with python run.py task=extract_latents "
            "data=<the image data> autoencoder=<ckpt or diffusers folder> (it writes them into its run folder)"
        )
    return json.loads(path.read_text())


def check_shard(root: Path, shard: dict, latent_shape: list[int], verify: str) -> None:
    """A ValueError naming the shard when it is missing, has other rows or shape, or (``sha256``) other bytes."""
    for key in ("file", "labels"):
        path = root / shard[key]
        if not path.is_file():
            raise ValueError(f"latent shard {path} is missing; extract the latents again (task=extract_latents)")
    latents = np.load(root / shard["file"], mmap_mode="r")
    labels = np.load(root / shard["labels"], mmap_mode="r")
    if list(latents.shape) != [shard["rows"], *latent_shape] or len(labels) != shard["rows"]:
        raise ValueError(
            f"latent shard {root / shard['file']} holds {list(latents.shape)} latents and {len(labels)} labels, "
            f"the manifest says {[shard['rows'], *latent_shape]}: the folder is corrupt or stale; extract again"
        )
    if verify == "sha256":
        for key, digest in (("file", "sha256"), ("labels", "labels_sha256")):
            if file_digest(root / shard[key]) != shard[digest]:
                raise ValueError(
                    f"latent shard {root / shard[key]} does not match its SHA-256 in {root / MANIFEST}: it is "
                    "corrupt or was replaced; extract the latents again (task=extract_latents)"
                )


class Latents(L.LightningDataModule):
    """The extracted latents in ``root`` (a ``task=extract_latents`` run folder), batches ``{"z", "y"}``.

    ``shape`` is the pixel shape of the images they encode, ``latent_shape`` theirs, ``autoencoder_digest``
    and ``latent_statistics`` (per-channel mean and std of the train split) what a latent space checks and fits.
    """

    def __init__(
        self, root: str | Path, batch_size: int = 256, num_workers: int = 0, seed: int = 0, verify: str = "sha256"
    ) -> None:
        super().__init__()
        if verify not in VERIFY:
            raise ValueError(f"data.verify={verify}: choose one of {', '.join(VERIFY)}")
        self.root = Path(root)
        self.batch_size, self.num_workers, self.seed, self.verify = int(batch_size), int(num_workers), int(seed), verify
        self.manifest = read_manifest(self.root)
        self.shape = tuple(self.manifest["data_shape"])
        self.latent_shape = tuple(self.manifest["latent_shape"])
        self.num_classes = int(self.manifest["num_classes"])
        self.autoencoder_digest = self.manifest["autoencoder_digest"]
        self._splits: dict[str, Dataset] = {}

    def latent_statistics(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std of the train split's latents, as the extraction measured them."""
        statistics = self.manifest["statistics"]
        return torch.tensor(statistics["mean"]), torch.tensor(statistics["std"])

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        for split, entry in self.manifest["splits"].items():
            for shard in entry["shards"]:
                check_shard(self.root, shard, list(self.latent_shape), self.verify)
            offsets = np.cumsum([0] + [shard["rows"] for shard in entry["shards"]])
            self._splits[split] = ConcatDataset([
                LatentShard(self.root / shard["file"], self.root / shard["labels"], int(offset))
                for shard, offset in zip(entry["shards"], offsets)
            ])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self._splits:
            raise ValueError(f"{self.root} holds no {split} latents (splits: {sorted(self._splits)})")
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self._splits[split], batch_size=self.batch_size, shuffle=shuffle, generator=generator,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        raise ValueError(
            "data=latents holds latents, not images: probes and pixel metrics read images; run them on the image "
            "data (task=eval data=<the images> ckpt=...) or drop them (callbacks=default)"
        )
