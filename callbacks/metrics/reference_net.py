"""A reference feature net per dataset: a small classifier of the data, trained once and cached on disk.

FID compares the features of Inception-v3 (Heusel et al., NeurIPS 2017), a classifier of ImageNet;
offline, or on 8 px digits, Inception has neither weights nor meaning. The reference net is the same
idea for the dataset at hand: a LeNet-like CNN (LeCun, Bottou, Bengio, Haffner, Proc. IEEE 1998) of
conv-BN-ReLU blocks (Ioffe & Szegedy, ICML 2015) and global average pooling (Lin, Chen, Yan, "Network
in Network", ICLR 2014), so any ``C, H, W`` image in [-1, 1] with ``H, W >= 4`` works, trained to
classify the datamodule's clean probe train split. ``forward`` gives its penultimate (pooled) features,
the space Fréchet distance, KID and precision/recall compare; ``logits`` the class scores that
score class-conditional samples.

It is built without data (``ReferenceNet()`` from the config) and ``fit_to(data)`` before first use
(``GenerativeMetrics.setup`` calls it). The weights are cached as ``reference_net-<key>.pt`` in a cache
folder, the key a hash of the training data (the bytes, shape and labels of the train split) and of the
recipe (architecture, training settings, ``RECIPE_VERSION``). The file is a plain dict saved atomically
(``callbacks.training.files.atomic_torch_save``) with the SHA-256 of its weights, and read with
``torch.load(weights_only=True)``; a file that cannot be read, does not match its key, or whose weights
do not match their SHA-256 (a flipped byte anywhere) is reported, retrained and rewritten, never trusted.
Training is seeded. Under DDP rank 0 loads or trains and sends the weights to the other ranks, so all
ranks hold the same net without a shared filesystem.

On vector data (``B, D``) the vectors are their own reference features: no net is trained, ``name`` is
``"vectors"`` and ``forward`` is the identity.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler

from callbacks.features import batch_xy, gather_objects, world
from callbacks.progress import track
from callbacks.protocols import ProbeData
from callbacks.training.files import atomic_torch_save, tensor_digest

RECIPE_VERSION = "1"
"""Bumped whenever the architecture or the training loop changes, so that old cache files are not reused."""


def _block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


def reference_body(in_channels: int, width: int) -> nn.Sequential:
    """Images ``B, C, H, W`` (``H, W >= 4``) to features ``B, 2·width``: five conv-BN-ReLU blocks, two
    2×2 max-pools and a global average pool."""
    return nn.Sequential(
        *_block(in_channels, width),
        *_block(width, width),
        nn.MaxPool2d(2),
        *_block(width, 2 * width),
        *_block(2 * width, 2 * width),
        nn.MaxPool2d(2),
        *_block(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """The batch translated by up to ``max_shift`` pixels in each direction (edges replicated)."""
    if max_shift == 0:
        return x
    height, width = x.shape[-2:]
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    return padded[..., dy : dy + height, dx : dx + width]


def data_fingerprint(loader: DataLoader) -> dict[str, Any]:
    """``{"sha256", "shape", "num_labels"}`` of a loader's ``x`` and ``y`` read in order (labels ``-1`` kept)."""
    digest = hashlib.sha256()
    count, shape, top = 0, (), -1
    for batch in loader:
        x, y = batch_xy(batch)
        digest.update(x.detach().cpu().float().contiguous().numpy().tobytes())
        digest.update(y.detach().cpu().long().contiguous().numpy().tobytes())
        count, shape, top = count + len(x), tuple(x.shape[1:]), max(top, int(y.max()))
    return {"sha256": digest.hexdigest(), "shape": [count, *shape], "num_labels": top + 1}


class ReferenceNet(nn.Module):
    """A small CNN classifier of the dataset whose penultimate features are the reference feature space.

    Recipe: ``width`` channels (features ``2·width``), AdamW (``lr``, ``weight_decay``) with a one-cycle
    schedule (Smith & Topin 2019) for ``epochs`` passes in batches of ``batch_size``, cross-entropy with
    ``label_smoothing`` (Szegedy et al., CVPR 2016), each batch translated by up to ``max_shift`` pixels,
    all seeded by ``seed``. On the bundled 8 px digits it reaches about 0.99 held-out accuracy in a few
    seconds on one CPU core.
    """

    name = "classifier"
    """The feature space's name in metric names (``gen/fd_classifier``); ``"vectors"`` on vector data."""

    def __init__(
        self,
        width: int = 16,
        epochs: int = 15,
        batch_size: int = 64,
        lr: float = 3e-3,
        weight_decay: float = 5e-4,
        label_smoothing: float = 0.1,
        max_shift: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for setting, value, low in (
            ("width", width, 1),
            ("epochs", epochs, 1),
            ("batch_size", batch_size, 2),
        ):
            if int(value) < low:
                raise ValueError(f"ReferenceNet: {setting}={value} must be >= {low}")
        if lr <= 0 or weight_decay < 0 or not 0 <= label_smoothing < 1 or max_shift < 0:
            raise ValueError(
                f"ReferenceNet: lr={lr} must be > 0, weight_decay={weight_decay} >= 0, "
                f"label_smoothing={label_smoothing} in [0, 1) and max_shift={max_shift} >= 0"
            )
        self.recipe: dict[str, Any] = {
            "version": RECIPE_VERSION,
            "width": int(width),
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "label_smoothing": float(label_smoothing),
            "max_shift": int(max_shift),
            "seed": int(seed),
        }
        self.body: nn.Module | None = None
        self.head: nn.Linear | None = None
        self.num_classes = 0
        self.val_accuracy: float | None = None
        self.key: str | None = None

    def cache_key(self, fingerprint: dict[str, Any]) -> str:
        """The cache key of this recipe on data with ``fingerprint`` (see ``data_fingerprint``)."""
        text = json.dumps({"data": fingerprint, "recipe": self.recipe}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def fit_to(
        self, data: ProbeData, device: torch.device | str = "cpu", cache_dir: str | Path | None = None
    ) -> None:
        """Load the net for ``data`` from ``cache_dir`` or train it there (no cache when None); a no-op
        when it already is the net for ``data``.

        Under DDP every rank must call it together; rank 0 does the work and sends the result. The
        global random state is left as it was, whether the net is trained or read from the cache, so a
        run (and its exact resume) does not depend on the cache.
        """
        with isolate_rng():
            train, val = data.probe_dataloaders()
            if batch_xy(next(iter(train)))[0].ndim == 2:
                self.name, self.num_classes, self.body, self.head = "vectors", 0, nn.Identity(), None
                return
            rank, _ = world()
            payload = self._load_or_train(train, val, torch.device(device), cache_dir) if rank == 0 else None
            payload = gather_objects(payload)[0]
            if payload is not None:
                self._install(payload)
            self.to(device)

    def forward(self, x: Tensor) -> Tensor:
        """Penultimate features ``B, 2·width`` of images in [-1, 1] (the vectors themselves on vector data)."""
        if self.body is None:
            raise RuntimeError(
                "ReferenceNet is not fitted: call fit_to(datamodule) first (GenerativeMetrics.setup does it)"
            )
        return self.body(x)

    def logits(self, x: Tensor) -> Tensor:
        """Class logits ``B, num_classes`` of images in [-1, 1]."""
        if self.head is None:
            raise RuntimeError(
                "ReferenceNet has no classifier: it is not fitted (call fit_to(datamodule)) or the data are vectors"
            )
        return self.head(self.forward(x))

    def accuracy(self, loader: DataLoader) -> float:
        """Accuracy of ``logits`` on a loader's labeled rows (``y >= 0``), in eval mode."""
        device = self.head.weight.device if self.head is not None else torch.device("cpu")
        correct, count = 0, 0
        was_training = self.training
        self.eval()
        with torch.no_grad():
            for batch in loader:
                x, y = batch_xy(batch)
                keep = y >= 0
                correct += int((self.logits(x[keep].to(device)).argmax(1).cpu() == y[keep]).sum())
                count += int(keep.sum())
        self.train(was_training)
        if count == 0:
            raise ValueError("ReferenceNet.accuracy: the loader holds no labeled rows (every y is -1)")
        return correct / count

    def _build(self, in_channels: int, num_classes: int) -> None:
        self.body = reference_body(in_channels, self.recipe["width"])
        self.head = nn.Linear(2 * self.recipe["width"], num_classes)
        self.num_classes = num_classes

    def _install(self, payload: dict[str, Any]) -> None:
        self._build(payload["in_channels"], payload["num_classes"])
        self.load_state_dict(payload["state_dict"])
        self.val_accuracy, self.key = payload["val_accuracy"], payload["key"]
        self.eval()

    def _load_or_train(
        self, train: DataLoader, val: DataLoader, device: torch.device, cache_dir: str | Path | None
    ) -> dict[str, Any] | None:
        """The payload for the data of ``train``, or None when the net already holds it."""
        fingerprint = data_fingerprint(train)
        key = self.cache_key(fingerprint)
        if key == self.key:
            return None
        path = None if cache_dir is None else Path(cache_dir) / f"reference_net-{key}.pt"
        if path is not None and path.is_file():
            payload = self._read(path, key)
            if payload is not None:
                return payload
        payload = self._train(train, val, fingerprint, key, device)
        if path is not None:
            atomic_torch_save(payload, path)
        return payload

    def _read(self, path: Path, key: str) -> dict[str, Any] | None:
        """The cached payload, or None (with a warning) when the file is unreadable or not this key's."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict) or payload.get("key") != key:
                raise ValueError(f"it holds no payload for the key {key}")
            if payload.get("sha256") != tensor_digest(payload.get("state_dict")):
                raise ValueError("its weights do not match their stored SHA-256 (the file was damaged after writing)")
            self._install(payload)
        # Whatever is wrong with the file (truncated zip, foreign pickle, missing or misshapen weights),
        # it is rebuilt, never trusted.
        except Exception as error:
            warnings.warn(
                f"ReferenceNet: the cache file {path} is corrupt or stale ({type(error).__name__}: {error}); "
                "retraining the reference net and rewriting the file",
                stacklevel=2,
            )
            return None
        return payload

    def _train(
        self, train: DataLoader, val: DataLoader, fingerprint: dict[str, Any], key: str, device: torch.device
    ) -> dict[str, Any]:
        if fingerprint["num_labels"] < 2:
            raise ValueError(
                "ReferenceNet needs a labeled train split with at least 2 classes to train a classifier; "
                "give the datamodule labeled probe loaders, or pass another feature_net"
            )
        recipe, start = self.recipe, time.perf_counter()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(recipe["seed"])
            generator = torch.Generator().manual_seed(recipe["seed"])
            self._build(fingerprint["shape"][1], fingerprint["num_labels"])
            self.to(device).train()
            dataset = train.dataset
            batches = DataLoader(
                dataset,
                batch_size=min(recipe["batch_size"], len(dataset)),
                sampler=RandomSampler(dataset, generator=generator),
                drop_last=len(dataset) > recipe["batch_size"],
                collate_fn=train.collate_fn,
                num_workers=train.num_workers,
            )
            optimizer = torch.optim.AdamW(
                self.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"]
            )
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=recipe["lr"], total_steps=recipe["epochs"] * len(batches)
            )
            for _ in track(range(recipe["epochs"]), recipe["epochs"], "training the reference classifier (once: cached)"):
                for batch in batches:
                    x, y = batch_xy(batch)
                    keep = y >= 0
                    if int(keep.sum()) < 2:
                        continue
                    x = random_shift(x[keep].to(device), recipe["max_shift"], generator)
                    loss = F.cross_entropy(
                        self.logits(x), y[keep].to(device), label_smoothing=recipe["label_smoothing"]
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
        self.eval()
        accuracy = self.accuracy(val)
        print(
            f"ReferenceNet: trained on {fingerprint['shape'][0]} images of shape {fingerprint['shape'][1:]} "
            f"in {time.perf_counter() - start:.1f} s; held-out (val) accuracy {accuracy:.4f}"
        )
        state_dict = {name: value.detach().cpu() for name, value in self.state_dict().items()}
        return {
            "key": key,
            "recipe": dict(recipe),
            "data": fingerprint,
            "in_channels": fingerprint["shape"][1],
            "num_classes": fingerprint["num_labels"],
            "val_accuracy": accuracy,
            "state_dict": state_dict,
            "sha256": tensor_digest(state_dict),
        }
