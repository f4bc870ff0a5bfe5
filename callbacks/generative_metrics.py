"""Generative metrics of a module that ``sample``s, computed from one set of samples per evaluation.

Metric names say the feature space they are computed in: ``gen/fd_<space>`` (Fréchet distance),
``gen/kid_<space>``, ``gen/precision_<space>`` and ``gen/recall_<space>``, where ``<space>`` is the
feature net's ``name`` (``classifier`` for the dataset's ``ReferenceNet``, ``pixels`` for
``PixelFeatures``, ``features`` for a net without a ``name``), ``inception`` for the FID Inception
(``callbacks/metrics/inception.py``, in the ADM evaluator's convention; used for images without a feature
net, with its weights from the local file ``inception_weights`` or torch's hub cache) and ``vectors`` for raw
vectors. Only Inception's Fréchet distance is FID, logged as
``gen/fd_inception``; no figure is called ``gen/fid``.

Every Fréchet distance comes with what is needed to rank runs by it (``callbacks/metrics/frechet_distance.py``):
``_n`` (the sample count), ``_lo``/``_hi`` (a seeded bootstrap interval over the generated features)
and ``_floor`` (the distance of held-out real images to the same reference set, at the same sample
count: what a perfect generator would reach). ``gen/class_acc`` is the reference classifier's accuracy
on class-conditional samples against the labels asked for; ``gen/memorization`` compares samples with
the training set in the data space, ``gen/manifold_distance`` averages a distance function the
datamodule or the user provides.

Samples are drawn in chunks of ``batch_size``, chunk ``c`` under ``seed + c`` by rank ``c mod world``
(and, for a class-conditional module, with labels ``c·batch_size + i mod num_classes``); they are
gathered in chunk order, and every rank computes the metrics on the same set, so the numbers do not
depend on the world size.

Where the trainer shows its progress bar (``callbacks.progress``), the sampling and the features have
bars, and a line before the work says what it will cost, from the time of its first chunk (sampling and
features): ``generative metrics: 5,000 samples (n_samples=auto: 30 epochs) in 20 chunks, about 4.1 min (12 s
a chunk)``, and one after it how long it took.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn
from torch.utils.data import DataLoader

from callbacks.features import ValidationEndProbe, check_every_n_epochs, gather_objects, probe_due
from callbacks.metrics.frechet_distance import (
    GaussianStats,
    frechet_distance,
    frechet_distance_of_stats,
    frechet_floor,
    frechet_interval,
    gaussian_stats,
)
from callbacks.metrics.image_resize import to_inception_input
from callbacks.metrics.inception import inception_file, load_inception
from callbacks.metrics.kernel_distance import kernel_distance
from callbacks.metrics.memorization import MEMORIZATION_THRESHOLD, memorization_ratio
from callbacks.metrics.precision_recall import precision_recall
from callbacks.progress import duration, progress_shown, say, shown, track
from callbacks.protocols import FitsToData, ProbeData, Samples
from callbacks.sample_count import AUTO, auto_reason, auto_sample_count

__all__ = ["GenerativeMetrics", "PixelFeatures", "frechet_distance", "kernel_distance"]

METRICS = ("fid", "kid", "precision_recall", "class_acc", "memorization", "manifold_distance")
"""Every metric ``GenerativeMetrics`` can compute (``fid`` selects the Fréchet distance in any feature space)."""

DEFAULT_METRICS = ("fid", "kid", "precision_recall", "class_acc", "memorization")
"""The default selection; ``manifold_distance`` needs a distance function and is asked for explicitly."""

FEATURE_METRICS = ("fid", "kid", "precision_recall", "class_acc")
"""The metrics that use the feature net (``class_acc`` its ``logits``)."""

MIN_FLOOR_ROWS = 8
"""The fewest held-out rows from which a floor is estimated; with fewer, none is logged."""


DistanceFn = Callable[[Tensor], Tensor]
Data = DataLoader | Tensor


class PixelFeatures(nn.Module):
    """Images as their pixels ``B, C·H·W``, clipped to [-1, 1] as a saved image is: the space ``pixels``."""

    name = "pixels"

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(-1, 1).flatten(1)


def inception_missing(weights: str | Path | None) -> str | None:
    """Why the FID Inception's weights cannot be read here (the message naming the download), or None."""
    try:
        inception_file(weights)
    except FileNotFoundError as error:
        return str(error)
    return None


def conditional_classes(module: Samples, sample_kwargs: Mapping[str, Any]) -> int:
    """``module.num_classes`` when it samples class-conditionally (its ``sample`` takes ``y=`` and the
    user's ``sample_kwargs`` do not set it), else 0."""
    num_classes = int(getattr(module, "num_classes", 0) or 0)
    if num_classes <= 0 or "y" in sample_kwargs:
        return 0
    return num_classes if "y" in inspect.signature(module.sample).parameters else 0


class GenerativeMetrics(ValidationEndProbe):
    """Fréchet distance, KID, k-NN precision/recall, class accuracy, memorization ratio and manifold distance.

    At every ``every_n_epochs``-th validation epoch end (and the last), ``n_samples`` samples are drawn
    (``"auto"``: by the trainer's ``max_epochs``, ``callbacks.sample_count``: 5,000 from the default run's
    30 epochs on, fewer for a shorter run, at least 500)
    with ``pl_module.sample(k, **sample_kwargs)`` in chunks of ``batch_size`` and the ``metrics`` asked
    for are logged (names in the module docstring): ``fid`` gives ``gen/fd_<space>`` with ``_n``, ``_lo``,
    ``_hi`` (the ``interval`` bootstrap interval from ``n_bootstrap`` resamples, each an ``F×F``
    eigendecomposition: lower it for Inception's F = 2048; none when 0) and
    ``_floor``; ``kid`` gives ``gen/kid_<space>`` and ``gen/kid_<space>_std``; ``precision_recall`` gives
    ``gen/precision_<space>`` and ``gen/recall_<space>`` (``k`` nearest neighbours); ``class_acc`` gives
    ``gen/class_acc`` when the module samples class-conditionally and the feature net has ``logits``
    (skipped otherwise); ``memorization`` gives ``gen/memorization`` (``d1/d2 < memorization_threshold``
    against the training set); ``manifold_distance`` gives ``gen/manifold_distance``.

    Features: ``feature_net``, any module mapping a batch in [-1, 1] to ``B, F``; one with ``fit_to``
    (the ``FitsToData`` protocol, e.g. ``callbacks.metrics.reference_net.ReferenceNet``) is fitted to the
    datamodule in ``setup``, caching its weights in ``cache_dir``. Without one: the FID Inception for images,
    its weights read from ``inception_weights`` (a local file; None: torch's hub cache), raw vectors for
    precision/recall on vector data.

    Data: ``real_data`` (a loader or a tensor of ``x``; default the datamodule's probe ``real_split``
    loader, first ``n_real`` examples, default ``n_samples``) is the reference set of FD, KID and
    precision/recall; ``held_out_data`` (default the other probe split, plus the datamodule's test
    loader when it has one) gives the floor; ``train_data`` (default the probe train loader, all of
    it) is the memorization reference. ``distance_fn`` (``x -> Tensor[B]``; default
    ``trainer.datamodule.distance_to_manifold``) gives the manifold distance. Real features, their
    Gaussian and the floor are computed once and kept: the feature net is frozen and the data do not change.
    """

    def __init__(
        self,
        n_samples: int | Literal["auto"] = 5000,
        every_n_epochs: int | None = 1,
        metrics: Sequence[str] = DEFAULT_METRICS,
        feature_net: nn.Module | None = None,
        cache_dir: str | Path | None = None,
        sample_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
        batch_size: int = 256,
        real_split: str = "train",
        real_data: Data | None = None,
        n_real: int | None = None,
        held_out_data: Data | None = None,
        train_data: Data | None = None,
        distance_fn: DistanceFn | None = None,
        k: int = 3,
        memorization_threshold: float = MEMORIZATION_THRESHOLD,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        n_bootstrap: int = 100,
        interval: float = 0.9,
        inception_weights: str | Path | None = None,
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
        if n_samples != AUTO and (isinstance(n_samples, (bool, str)) or int(n_samples) < 2):
            raise ValueError(
                f"GenerativeMetrics: n_samples={n_samples!r} must be an integer >= 2 or 'auto' (scaled to the "
                "run's epochs, callbacks/sample_count.py)"
            )
        for name, value, low in (("batch_size", batch_size, 1), ("k", k, 1)):
            if int(value) < low:
                raise ValueError(f"GenerativeMetrics: {name}={value} must be >= {low}")
        if not 0 < memorization_threshold <= 1:
            raise ValueError(
                f"GenerativeMetrics: memorization_threshold={memorization_threshold} must be in (0, 1]"
            )
        if int(n_bootstrap) == 1 or int(n_bootstrap) < 0 or not 0 < interval < 1:
            raise ValueError(
                f"GenerativeMetrics: n_bootstrap={n_bootstrap} must be 0 (no interval) or >= 2, "
                f"and interval={interval} in (0, 1)"
            )
        self.n_samples = n_samples if n_samples == AUTO else int(n_samples)
        self.every_n_epochs = check_every_n_epochs(every_n_epochs, "GenerativeMetrics")
        self.feature_net = feature_net
        self.cache_dir = cache_dir
        self.sample_kwargs = dict(sample_kwargs or {})
        self.seed = seed
        self.batch_size = int(batch_size)
        self.real_split = real_split
        self.real_data = real_data
        self.n_real = int(n_real) if n_real else None
        self.held_out_data = held_out_data
        self.train_data = train_data
        self.distance_fn = distance_fn
        self.k = int(k)
        self.memorization_threshold = memorization_threshold
        self.kid_subset_size = int(kid_subset_size)
        self.kid_subsets = int(kid_subsets)
        self.n_bootstrap = int(n_bootstrap)
        self.interval = float(interval)
        self.inception_weights = inception_weights
        self._features: nn.Module | None = None
        self._space = "vectors"
        self._resolved = False
        self._real_features: Tensor | None = None
        self._real_stats: GaussianStats | None = None
        self._floor: dict[int, float | None] = {}
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
            with progress_shown("generative metrics", trainer):
                self._resolve_features(trainer, images=len(shape) == 3)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not probe_due(trainer, self.every_n_epochs):
            return
        with progress_shown("generative metrics", trainer):
            start = time.perf_counter()
            values = self.evaluate(trainer, pl_module)
            seconds = time.perf_counter() - start
            say(f"generative metrics: {self.sample_count(trainer):,} samples scored in {duration(seconds)}")
        pl_module.log_dict({f"gen/{name}": value for name, value in values.items()}, sync_dist=True)

    def sample_count(self, trainer: L.Trainer) -> int:
        """``n_samples``, or with ``"auto"`` the count for the trainer's ``max_epochs`` (``auto_sample_count``)."""
        return auto_sample_count(trainer.max_epochs) if self.n_samples == AUTO else self.n_samples

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The selected metrics of ``n_samples`` fresh samples, by name (``fd_classifier``, ...)."""
        values: dict[str, float] = {}
        with isolate_rng(), torch.no_grad():
            samples, labels = self._samples(trainer, pl_module)
            torch.manual_seed(self.seed)
            self._resolve_features(trainer, images=samples.ndim == 4)
            space = self._space
            if any(m in self.metrics for m in ("fid", "kid", "precision_recall")):
                real, fake = self._real(trainer), self._embed(samples, "features of the samples")
                if "fid" in self.metrics:
                    values.update(self._frechet(trainer, fake))
                if "kid" in self.metrics:
                    mean, std = kernel_distance(real, fake, self.kid_subset_size, self.kid_subsets)
                    values[f"kid_{space}"], values[f"kid_{space}_std"] = mean.item(), std.item()
                if "precision_recall" in self.metrics:
                    precision, recall = precision_recall(real, fake, self.k)
                    values[f"precision_{space}"], values[f"recall_{space}"] = precision.item(), recall.item()
            if "class_acc" in self.metrics and labels is not None and self._classifier() is not None:
                values["class_acc"] = self._class_accuracy(samples, labels)
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

    def _samples(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[Tensor, Tensor | None]:
        """``n_samples`` samples (and their requested labels, for a class-conditional module) in chunks of
        ``batch_size``, chunk ``c`` drawn under ``seed + c`` by rank ``c mod world``: the same at any world size.
        The first chunk's time gives the estimate line (``say``)."""
        n = self.sample_count(trainer)
        sizes = [min(self.batch_size, n - start) for start in range(0, n, self.batch_size)]
        num_classes = conditional_classes(pl_module, self.sample_kwargs)
        local = {}
        mine = range(trainer.global_rank, len(sizes), trainer.world_size)
        for c in track(mine, len(mine), f"sampling {n:,}"):
            start = time.perf_counter()
            torch.manual_seed(self.seed + c)
            kwargs = dict(self.sample_kwargs)
            labels = None
            if num_classes:
                labels = (torch.arange(sizes[c]) + c * self.batch_size) % num_classes
                kwargs["y"] = labels.to(getattr(pl_module, "device", "cpu"))
            chunk = pl_module.sample(sizes[c], **kwargs)
            if len(chunk) != sizes[c]:
                raise ValueError(f"{type(pl_module).__name__}.sample({sizes[c]}) returned {len(chunk)} samples")
            local[c] = (chunk.float().cpu(), labels)
            if c == mine[0]:
                self._say_estimate(trainer, chunk, time.perf_counter() - start, len(mine), len(sizes))
        gathered = {c: pair for shard in gather_objects(local) for c, pair in shard.items()}
        samples = torch.cat([gathered[c][0] for c in range(len(sizes))]).to(self._device)
        labels = torch.cat([gathered[c][1] for c in range(len(sizes))]).to(self._device) if num_classes else None
        return samples, labels

    def _say_estimate(self, trainer: L.Trainer, chunk: Tensor, seconds: float, mine: int, chunks: int) -> None:
        """The line before the work: samples, chunks, why that many, and the time they will take, from the time of
        the first chunk (``seconds``) and of its features (the feature net resolved and timed here, when shown)."""
        if not shown():
            return
        features = 0.0
        if any(m in self.metrics for m in ("fid", "kid", "precision_recall")):
            self._resolve_features(trainer, images=chunk.ndim == 4)
            start = time.perf_counter()
            self._embed(chunk.to(self._device))
            features = time.perf_counter() - start
        why = f" ({auto_reason(trainer.max_epochs)})" if self.n_samples == AUTO else ""
        total = duration(seconds * mine + features * chunks)
        say(f"generative metrics: {self.sample_count(trainer):,} samples{why} in {chunks} chunks, about {total} "
            f"({duration(seconds)} a chunk)")

    def _resolve_features(self, trainer: L.Trainer, images: bool) -> None:
        if self._resolved:
            return
        if self.feature_net is not None:
            if isinstance(self.feature_net, FitsToData) and any(m in self.metrics for m in FEATURE_METRICS):
                if not isinstance(trainer.datamodule, ProbeData):
                    raise ValueError(
                        f"GenerativeMetrics: the feature net {type(self.feature_net).__name__} is fitted to the "
                        f"data, but the datamodule ({type(trainer.datamodule).__name__}) has no "
                        "probe_dataloaders(); fit it yourself before passing it, or pass another feature_net"
                    )
                self.feature_net.fit_to(trainer.datamodule, device=self._device, cache_dir=self.cache_dir)
            self._features = _FrozenFeatures(self.feature_net).to(self._device)
            self._space = str(getattr(self.feature_net, "name", "features"))
        else:
            distances = [m for m in self.metrics if m in ("fid", "kid")]
            in_features = [m for m in self.metrics if m in ("fid", "kid", "precision_recall")]
            if not images and distances:
                raise ValueError(
                    f"GenerativeMetrics: {distances} on vector data need a feature net; pass feature_net=... "
                    "(callbacks.generative.feature_net=..., a module mapping B,D to B,F; "
                    "callbacks.metrics.reference_net.ReferenceNet uses the vectors themselves) or drop them from metrics"
                )
            if images and in_features:
                missing = inception_missing(self.inception_weights)
                if missing is not None:
                    raise ValueError(
                        f"GenerativeMetrics: {in_features} on images need a feature net, and "
                        f"the FID Inception cannot be used offline ({missing}); or pass feature_net=... "
                        "(callbacks.generative.feature_net=..., e.g. {_target_: "
                        "callbacks.metrics.reference_net.ReferenceNet}, or any module mapping B,C,H,W in "
                        "[-1, 1] to B,F)"
                    )
                self._features = _InceptionFeatures(self.inception_weights).to(self._device)
                self._space = "inception"
        self._resolved = True

    def _embed(self, x: Tensor, what: str | None = None) -> Tensor:
        """Features of ``x`` in chunks of ``batch_size``, with a bar named ``what`` when given (and shown)."""
        if self._features is None:
            return x.flatten(1).float()
        chunks = x.split(self.batch_size)
        steps = chunks if what is None else track(chunks, len(chunks), what)
        return torch.cat([self._features(chunk) for chunk in steps]).float()

    def _real(self, trainer: L.Trainer) -> Tensor:
        if self._real_features is None:
            source = self.real_data if self.real_data is not None else _probe_loader(trainer, self.real_split)
            self._real_features = self._embed_source(source, self.n_real or self.sample_count(trainer), "real")
        return self._real_features

    def _embed_source(self, source: Data, limit: int | None = None, what: str = "held-out") -> Tensor:
        """Features of the first ``limit`` (all when None) examples of a loader or tensor of ``x``; a bar
        ``features of <what> data`` counts its batches."""
        rows, count = [], 0
        batches = _x_batches(source, self.batch_size)
        for x in track(batches, _batch_count(source, self.batch_size, limit), f"features of {what} data"):
            rows.append(self._embed(x[: None if limit is None else limit - count].to(self._device)))
            count += len(rows[-1])
            if limit is not None and count >= limit:
                break
        return torch.cat(rows)

    def _frechet(self, trainer: L.Trainer, fake: Tensor) -> dict[str, float]:
        """``fd_<space>`` with its ``_n``, ``_lo``/``_hi`` (when ``n_bootstrap``) and ``_floor`` (when held-out data)."""
        if self._real_stats is None:
            self._real_stats = gaussian_stats(self._real(trainer))
        name = f"fd_{self._space}"
        values = {
            name: frechet_distance_of_stats(self._real_stats, gaussian_stats(fake)).item(),
            f"{name}_n": float(len(fake)),
        }
        if self.n_bootstrap:
            lo, hi = frechet_interval(self._real_stats, fake, self.n_bootstrap, self.interval, self.seed)
            values[f"{name}_lo"], values[f"{name}_hi"] = lo.item(), hi.item()
        if len(fake) not in self._floor:
            held_out = self._held_out(trainer)
            self._floor[len(fake)] = (
                None
                if held_out is None or len(held_out) < MIN_FLOOR_ROWS
                else frechet_floor(self._real_stats, held_out, len(fake), self.seed).item()
            )
        if self._floor[len(fake)] is not None:
            values[f"{name}_floor"] = self._floor[len(fake)]
        return values

    def _held_out(self, trainer: L.Trainer) -> Tensor | None:
        """Features of the held-out real images: ``held_out_data``, else the probe split that is not the
        reference (plus the datamodule's test split when it has one); None without either."""
        if self.held_out_data is not None:
            return self._embed_source(self.held_out_data)
        datamodule = trainer.datamodule
        if not isinstance(datamodule, ProbeData):
            return None
        train, val = datamodule.probe_dataloaders()
        sources = [val if self.real_split == "train" else train]
        if is_overridden("test_dataloader", datamodule, L.LightningDataModule):
            sources.append(datamodule.test_dataloader())
        return torch.cat([self._embed_source(source) for source in sources])

    def _classifier(self) -> nn.Module | None:
        """The feature net when it classifies (``logits`` and ``num_classes > 0``), else None."""
        net = self.feature_net
        if net is None or not callable(getattr(net, "logits", None)) or int(getattr(net, "num_classes", 0)) <= 0:
            return None
        return net

    def _class_accuracy(self, samples: Tensor, labels: Tensor) -> float:
        """Share of samples the reference classifier assigns to the class they were drawn for."""
        net = self._classifier()
        if int(labels.max()) >= net.num_classes:
            raise ValueError(
                f"GenerativeMetrics: class_acc: the module samples {int(labels.max()) + 1} classes but the "
                f"feature net classifies {net.num_classes}; train both on the same labels or drop class_acc"
            )
        logits = torch.cat([net.logits(chunk) for chunk in samples.split(self.batch_size)])
        return (logits.argmax(1) == labels).float().mean().item()

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
    """The FID Inception's pool features (2048) of images in [-1, 1], quantized to uint8 and resized as the ADM
    evaluator does, grey images repeated to RGB."""

    def __init__(self, weights: str | Path | None) -> None:
        super().__init__()
        self.net = load_inception(weights)

    def forward(self, x: Tensor) -> Tensor:
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.net(to_inception_input(pixels, "adm"))[0]


def _probe_loader(trainer: L.Trainer, split: str) -> DataLoader:
    train, val = trainer.datamodule.probe_dataloaders()
    return train if split == "train" else val


def _batch_count(source: Data, batch_size: int, limit: int | None) -> int | None:
    """How many batches ``_x_batches`` yields until ``limit`` examples (None: all) are read; None if unknown."""
    size = batch_size if isinstance(source, Tensor) else getattr(source, "batch_size", None)
    try:
        count = len(source) if not isinstance(source, Tensor) else math.ceil(len(source) / batch_size)
    except TypeError:  # a loader over an iterable dataset
        return None
    return count if limit is None or not size else min(count, math.ceil(limit / size))


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
