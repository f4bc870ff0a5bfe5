"""Generative metrics of a module that ``sample``s, computed from one batch of samples per evaluation.

Fréchet distance and KID go through torchmetrics, on features of a net the config passes in
(``feature_net``: any module mapping a batch in [-1, 1] to ``B, F``) or, for images without one,
torchmetrics' Inception when torch-fidelity and its weights are already on disk. k-NN precision and
recall use the same features (raw vectors for vector data without a feature net); the memorization
ratio compares samples with the training set in the data space; the manifold distance averages a
distance function the datamodule or the user provides.

Under DDP each rank draws ``ceil(n_samples / world_size)`` samples under ``seed + rank``; they are
gathered and cut to ``n_samples``, and every rank computes the metrics on the same gathered set, so
the numbers do not depend on the world size beyond which seeds drew the samples.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from callbacks.features import check_every_n_epochs, gather_objects, probe_due
from callbacks.memorization import MEMORIZATION_THRESHOLD, memorization_ratio
from callbacks.precision_recall import precision_recall
from callbacks.protocols import ProbeData, Samples

METRICS = ("fid", "kid", "precision_recall", "memorization", "manifold_distance")
"""Every metric ``GenerativeMetrics`` can compute."""

DEFAULT_METRICS = ("fid", "kid", "precision_recall", "memorization")
"""The default selection; ``manifold_distance`` needs a distance function and is asked for explicitly."""

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
"""torch-fidelity's Inception file, looked up (never downloaded) in ``torch.hub.get_dir()/checkpoints``."""

DistanceFn = Callable[[Tensor], Tensor]
Data = DataLoader | Tensor


class FeatureRows(nn.Module):
    """The identity, as torchmetrics' custom ``feature`` module for rows that already are features.

    torchmetrics reads the feature width from ``num_features`` (without it, it would probe the module
    with a dummy 3x299x299 image).
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_distance(real: Tensor, fake: Tensor) -> Tensor:
    """Fréchet distance between Gaussians fitted to two feature sets ``N, F`` (FID without the Inception).

    Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter, "GANs Trained by a Two Time-Scale Update Rule
    Converge to a Local Nash Equilibrium", NeurIPS 2017: ``|m_r - m_f|² + Tr(C_r + C_f - 2 (C_r C_f)^½)``,
    computed by torchmetrics' ``FrechetInceptionDistance`` in float64.
    """
    _check_features(real, fake, "frechet_distance")
    metric = FrechetInceptionDistance(
        feature=FeatureRows(real.shape[1]), normalize=True, sync_on_compute=False
    )
    metric = metric.to(real.device)
    metric.update(real, real=True)
    metric.update(fake.to(real.device), real=False)
    return metric.compute()


def kernel_distance(
    real: Tensor, fake: Tensor, subset_size: int = 1000, subsets: int = 100
) -> tuple[Tensor, Tensor]:
    """``(mean, std)`` over random subsets of the unbiased MMD² with the cubic polynomial kernel (KID).

    Bińkowski, Sutherland, Arbel, Gretton, "Demystifying MMD GANs", ICLR 2018, with
    ``k(a, b) = (aᵀb / F + 1)³``, computed by torchmetrics' ``KernelInceptionDistance``. The subset
    size is clamped to ``min(subset_size, len(real), len(fake))`` so that small evaluations work (a
    subset then holds a whole set and the std is 0); the subsets are drawn from torch's global
    generator (seed it for a reproducible value).
    """
    _check_features(real, fake, "kernel_distance")
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(
            f"kernel_distance needs at least 2 real and 2 generated rows, got {len(real)} and {len(fake)}"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Metric `Kernel Inception Distance` will save all")
        metric = KernelInceptionDistance(
            feature=FeatureRows(real.shape[1]),
            subsets=subsets,
            subset_size=size,
            normalize=True,
            sync_on_compute=False,
        )
    metric.update(real, real=True)
    metric.update(fake.to(real.device), real=False)
    mean, std = metric.compute()
    return mean, std


def inception_missing() -> str | None:
    """Why torchmetrics' default Inception cannot run offline here, or None when it can."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return "torch-fidelity is not installed"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS
    if not weights.is_file():
        return f"its weights are not at {weights}"
    return None


class GenerativeMetrics(Callback):
    """Fréchet distance, KID, k-NN precision/recall, memorization ratio and manifold distance of samples.

    At every ``every_n_epochs``-th validation epoch end (and the last), ``n_samples`` samples are drawn
    with ``pl_module.sample(k, **sample_kwargs)`` in chunks of ``batch_size`` and the ``metrics`` asked
    for are logged: ``gen/fid``, ``gen/kid_mean``, ``gen/kid_std``, ``gen/precision``, ``gen/recall``
    (``k`` nearest neighbours), ``gen/memorization`` (``d1/d2 < memorization_threshold`` against the
    training set) and ``gen/manifold_distance``.

    Data: ``real_data`` (a loader or a tensor of ``x``; default the datamodule's probe ``real_split``
    loader, first ``n_real`` examples, default ``n_samples``) for FID, KID and precision/recall;
    ``train_data`` (default the probe train loader, all of it) for memorization. ``distance_fn``
    (``x -> Tensor[B]``; default ``trainer.datamodule.distance_to_manifold``) for the manifold distance.
    Real features are computed once and kept: the feature net is frozen and the data do not change.
    """

    def __init__(
        self,
        n_samples: int = 1000,
        every_n_epochs: int = 1,
        metrics: Sequence[str] = DEFAULT_METRICS,
        feature_net: nn.Module | None = None,
        sample_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
        batch_size: int = 256,
        real_split: str = "train",
        real_data: Data | None = None,
        n_real: int | None = None,
        train_data: Data | None = None,
        distance_fn: DistanceFn | None = None,
        k: int = 3,
        memorization_threshold: float = MEMORIZATION_THRESHOLD,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
    ) -> None:
        self.metrics = tuple(metrics)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(
                f"GenerativeMetrics: unknown metrics {unknown} in metrics={list(self.metrics)}; "
                f"valid: {METRICS}"
            )
        if real_split not in ("train", "val"):
            raise ValueError(f"GenerativeMetrics: real_split={real_split!r} must be 'train' or 'val'")
        for name, value, low in (("n_samples", n_samples, 2), ("batch_size", batch_size, 1), ("k", k, 1)):
            if int(value) < low:
                raise ValueError(f"GenerativeMetrics: {name}={value} must be >= {low}")
        if not 0 < memorization_threshold <= 1:
            raise ValueError(
                f"GenerativeMetrics: memorization_threshold={memorization_threshold} must be in (0, 1]"
            )
        self.n_samples = int(n_samples)
        self.every_n_epochs = check_every_n_epochs(every_n_epochs, "GenerativeMetrics")
        self.feature_net = feature_net
        self.sample_kwargs = dict(sample_kwargs or {})
        self.seed = seed
        self.batch_size = int(batch_size)
        self.real_split = real_split
        self.real_data = real_data
        self.n_real = int(n_real or n_samples)
        self.train_data = train_data
        self.distance_fn = distance_fn
        self.k = int(k)
        self.memorization_threshold = memorization_threshold
        self.kid_subset_size = int(kid_subset_size)
        self.kid_subsets = int(kid_subsets)
        self._features: nn.Module | None = None
        self._resolved = False
        self._real_features: Tensor | None = None
        self._device = torch.device("cpu")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, Samples):
            raise TypeError(
                f"GenerativeMetrics needs a generative module: {type(pl_module).__name__} has no "
                "`sample(n, **kw) -> Tensor` (the Samples protocol of callbacks/protocols.py); "
                "add one or drop the callback"
            )
        self._device = trainer.strategy.root_device
        needs_real = any(m in self.metrics for m in ("fid", "kid", "precision_recall"))
        needs_train = "memorization" in self.metrics
        if (needs_real and self.real_data is None) or (needs_train and self.train_data is None):
            if not isinstance(trainer.datamodule, ProbeData):
                raise ValueError(
                    f"GenerativeMetrics needs real data for {list(self.metrics)}: the datamodule "
                    f"({type(trainer.datamodule).__name__}) has no probe_dataloaders(); "
                    "pass real_data=... and train_data=... (loaders or tensors of x)"
                )
        if "manifold_distance" in self.metrics:
            self._distance(trainer)
        shape = getattr(trainer.datamodule, "shape", None)
        if shape is not None:
            self._resolve_features(images=len(shape) == 3)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not probe_due(trainer, self.every_n_epochs):
            return
        values = self.evaluate(trainer, pl_module)
        pl_module.log_dict({f"gen/{name}": value for name, value in values.items()}, sync_dist=True)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The selected metrics of ``n_samples`` fresh samples, by name (``fid``, ``kid_mean``, ...)."""
        values: dict[str, float] = {}
        with isolate_rng(), torch.no_grad():
            samples = self._samples(trainer, pl_module)
            torch.manual_seed(self.seed)
            self._resolve_features(images=samples.ndim == 4)
            if any(m in self.metrics for m in ("fid", "kid", "precision_recall")):
                real, fake = self._real(trainer), self._embed(samples)
                if "fid" in self.metrics:
                    values["fid"] = frechet_distance(real, fake).item()
                if "kid" in self.metrics:
                    mean, std = kernel_distance(real, fake, self.kid_subset_size, self.kid_subsets)
                    values["kid_mean"], values["kid_std"] = mean.item(), std.item()
                if "precision_recall" in self.metrics:
                    precision, recall = precision_recall(real, fake, self.k)
                    values["precision"], values["recall"] = precision.item(), recall.item()
            if "memorization" in self.metrics:
                source = self.train_data if self.train_data is not None else _probe_loader(trainer, "train")
                train = _x_batches(source, self.batch_size)
                values["memorization"] = memorization_ratio(
                    samples, train, self.memorization_threshold
                ).item()
            if "manifold_distance" in self.metrics:
                distances = self._distance(trainer)(samples)
                if distances.shape != (len(samples),):
                    raise ValueError(
                        f"distance_fn returned shape {tuple(distances.shape)} for {len(samples)} samples; "
                        "it must return one distance per sample, Tensor[B]"
                    )
                values["manifold_distance"] = distances.float().mean().item()
        return values

    def _samples(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Tensor:
        """``n_samples`` samples in chunks of ``batch_size``, chunk ``c`` drawn under ``seed + c`` by rank
        ``c mod world``: the same samples at any world size."""
        sizes = [min(self.batch_size, self.n_samples - start) for start in range(0, self.n_samples, self.batch_size)]
        local = {}
        for c in range(trainer.global_rank, len(sizes), trainer.world_size):
            torch.manual_seed(self.seed + c)
            chunk = pl_module.sample(sizes[c], **self.sample_kwargs)
            if len(chunk) != sizes[c]:
                raise ValueError(f"{type(pl_module).__name__}.sample({sizes[c]}) returned {len(chunk)} samples")
            local[c] = chunk.float().cpu()
        gathered = {c: chunk for shard in gather_objects(local) for c, chunk in shard.items()}
        return torch.cat([gathered[c] for c in range(len(sizes))]).to(self._device)

    def _resolve_features(self, images: bool) -> None:
        if self._resolved:
            return
        if self.feature_net is not None:
            self._features = _FrozenFeatures(self.feature_net).to(self._device)
        else:
            distances = [m for m in self.metrics if m in ("fid", "kid")]
            in_features = [m for m in self.metrics if m in ("fid", "kid", "precision_recall")]
            if not images and distances:
                raise ValueError(
                    f"GenerativeMetrics: {distances} on vector data need a feature net; pass feature_net=... "
                    "(callbacks.generative.feature_net=..., a module mapping B,D to B,F) "
                    "or drop them from metrics"
                )
            if images and in_features:
                missing = inception_missing()
                if missing is not None:
                    raise ValueError(
                        f"GenerativeMetrics: {in_features} on images need a feature net, and "
                        f"torchmetrics' Inception cannot be used offline ({missing}); pass feature_net=... "
                        "(callbacks.generative.feature_net=..., a module mapping B,C,H,W in "
                        "[-1, 1] to B,F)"
                    )
                self._features = _InceptionFeatures().to(self._device)
        self._resolved = True

    def _embed(self, x: Tensor) -> Tensor:
        if self._features is None:
            return x.flatten(1).float()
        return torch.cat([self._features(chunk) for chunk in x.split(self.batch_size)]).float()

    def _real(self, trainer: L.Trainer) -> Tensor:
        if self._real_features is None:
            source = self.real_data if self.real_data is not None else _probe_loader(trainer, self.real_split)
            rows, count = [], 0
            for x in _x_batches(source, self.batch_size):
                rows.append(self._embed(x[: self.n_real - count].to(self._device)))
                count += len(rows[-1])
                if count >= self.n_real:
                    break
            self._real_features = torch.cat(rows)
        return self._real_features

    def _distance(self, trainer: L.Trainer) -> DistanceFn:
        if self.distance_fn is not None:
            return self.distance_fn
        distance = getattr(trainer.datamodule, "distance_to_manifold", None)
        if distance is None:
            raise ValueError(
                "GenerativeMetrics: manifold_distance needs a distance function: the datamodule "
                f"({type(trainer.datamodule).__name__}) has no distance_to_manifold(x) -> Tensor[B]; pass "
                "distance_fn=... or drop manifold_distance from metrics"
            )
        return distance


class _FrozenFeatures(nn.Module):
    """A frozen feature net, checked to map a batch to one feature row per example."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        features = self.net(x)
        if not isinstance(features, Tensor) or features.ndim != 2 or len(features) != len(x):
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                f"feature_net returned {shape} for a batch of {len(x)}; it must return features B,F "
                "(pool or flatten inside the net, e.g. a timm model with num_classes=0)"
            )
        return features


class _InceptionFeatures(nn.Module):
    """torchmetrics' Inception-v3 pool features (2048) of images in [-1, 1], grey images repeated to RGB."""

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])

    def forward(self, x: Tensor) -> Tensor:
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.net(pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels)


def _probe_loader(trainer: L.Trainer, split: str) -> DataLoader:
    train, val = trainer.datamodule.probe_dataloaders()
    return train if split == "train" else val


def _x_batches(source: Data | Iterable, batch_size: int) -> Iterator[Tensor]:
    if isinstance(source, Tensor):
        yield from source.split(batch_size)
        return
    for batch in source:
        if isinstance(batch, Mapping) and "x" in batch:
            yield batch["x"]
        elif isinstance(batch, (tuple, list)):
            yield batch[0]
        elif isinstance(batch, Tensor):
            yield batch
        else:
            raise ValueError(
                "GenerativeMetrics reads x from batch dicts with `x`, (x, ...) tuples or tensors; "
                f"got {type(batch).__name__}"
            )


def _check_features(real: Tensor, fake: Tensor, owner: str) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"{owner} needs two feature matrices N,F of the same width, "
            f"got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
