"""Where a generative method's net lives: the pixels, or an autoencoder's normalised latents.

A method that denoises (``Diffusion``, ``Consistency``) holds one ``LatentSpace`` and never asks which:
it ``encode``s the batch's pixels before noising them, ``decode``s what it samples, and reads ``shape``
(what its net and sampler see) and ``data_shape`` (the pixels'). Without an autoencoder the space is
the identity. With one (``autoencoder=<a vae/vavae/rae checkpoint>``) it holds the frozen autoencoder
(``zoo.autoencoder``), a ``LatentNormalizer`` fitted once on the train split's latents (LightningDiT's
per-channel statistics, buffers in the method's checkpoint) and, with ``cache_latents``, the on-disk
cache of those latents (``zoo.latent_cache``). Batches, probes and metrics stay in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.autoencoder import ChannelMoments, FrozenAutoencoder, LatentNormalizer, load_autoencoder
from zoo.latent_cache import LatentCache, cached_latents


class LatentSpace(nn.Module):
    """The identity on ``data_shape`` (no ``autoencoder``), or the normalised latents of ``autoencoder``.

    ``encode(x, cached, datamodule)`` and ``decode(z, datamodule)`` fit the latent statistics from
    ``datamodule`` first if they are not fitted yet (a weight average copied before ``setup``); without
    a datamodule, an unfitted latent space is an error. ``statistics_images`` measures them on a seeded subset of
    that many training images (null: all; ImageNet's 1.28M would be encoded on every rank before the first step).
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        autoencoder: FrozenAutoencoder | None = None,
        cache_dir: str | None = None,
        statistics_images: int | None = None,
    ) -> None:
        super().__init__()
        if statistics_images is not None and statistics_images < 2:
            raise ValueError(
                f"method.latent_statistics_images={statistics_images}: the latent statistics need at least 2 images "
                "(null: the whole train split)"
            )
        self.statistics_images = statistics_images
        self.data_shape = tuple(int(s) for s in data_shape)
        self.autoencoder = autoencoder
        self.shape = tuple(autoencoder.latent_shape) if autoencoder is not None else self.data_shape
        if autoencoder is not None:
            self.norm = LatentNormalizer(self.shape[0])
        self.cache_dir = cache_dir
        self.cache: LatentCache | None = None

    @classmethod
    def build(
        cls,
        autoencoder: str | Path | nn.Module | None,
        shape: Sequence[int],
        data_shape: Sequence[int] | None,
        cache_latents: bool = False,
        cache_dir: str | None = None,
        statistics_images: int | None = None,
    ) -> LatentSpace:
        """The space of a method's ``autoencoder`` argument (a checkpoint path, a frozen autoencoder or None),
        checked against ``shape`` (what the net sees) and ``data_shape`` (the pixels)."""
        if autoencoder is None:
            if cache_latents:
                raise ValueError(
                    "method.cache_latents=true caches an autoencoder's latents, but there is no autoencoder; "
                    "pass autoencoder=<a vae/vavae/rae last.ckpt> or drop method.cache_latents"
                )
            return cls(shape)
        if isinstance(autoencoder, (str, Path)):
            if data_shape is None:
                raise ValueError("autoencoder= needs method.data_shape, the pixel shape the autoencoder must match")
            autoencoder = load_autoencoder(autoencoder, data_shape)
        if not isinstance(autoencoder, FrozenAutoencoder):
            raise ValueError(
                f"autoencoder is a {type(autoencoder).__name__}; pass a checkpoint path (autoencoder=<last.ckpt>) "
                "or a zoo.autoencoder.FrozenAutoencoder"
            )
        if tuple(autoencoder.latent_shape) != tuple(shape):
            raise ValueError(
                f"method.shape={list(shape)} but the autoencoder's latents are {list(autoencoder.latent_shape)}; "
                "in a latent space the net and the sampler see the latent shape (zoo.app.train.build sets shape)"
            )
        if cache_latents and not cache_dir:
            raise ValueError("method.cache_latents=true needs method.cache_dir (paths.cache_dir by default)")
        return cls(autoencoder.shape, autoencoder, cache_dir if cache_latents else None, statistics_images)

    @property
    def is_pixels(self) -> bool:
        return self.autoencoder is None

    @property
    def fitted(self) -> bool:
        return self.is_pixels or bool(self.norm.fitted)

    @torch.no_grad()
    def fit(self, datamodule: Any, device: torch.device) -> None:
        """Latent statistics of the unaugmented train split (once: a resumed or loaded model keeps its own), streamed
        batch by batch so that a split of any size fits (an image folder of ImageNet), and with a cache the on-disk
        cache of its latents; nothing in pixel space."""
        if self.is_pixels:
            return
        if hasattr(datamodule, "latent_statistics"):
            self.fit_extracted(datamodule)
            return
        if not hasattr(datamodule, "clean_train_dataloader"):
            raise ValueError(
                f"autoencoder=: the latent statistics come from the train split, but {type(datamodule).__name__} "
                "has no clean_train_dataloader(); use a zoo datamodule"
            )
        if self.cache_dir and (getattr(datamodule, "augment", None) or getattr(datamodule, "views", None)):
            raise ValueError(
                f"method.cache_latents=true caches the unaugmented train split, but data.augment="
                f"{getattr(datamodule, 'augment', None)} / data.views={getattr(datamodule, 'views', None)} change "
                "every batch; set them to null, or method.cache_latents=false"
            )
        if self.cache_dir:
            pixels, _ = datamodule.train_tensor()
            self.cache = cached_latents(self.autoencoder, self.autoencoder.digest, pixels, self.cache_dir, device)
            if not bool(self.norm.fitted):
                self.norm.fit(self.cache.latents.to(self.norm.mean.device))
        elif not bool(self.norm.fitted):
            loader = datamodule.clean_train_dataloader(self.statistics_images)
            self.norm.set(*streamed_moments(self.autoencoder, loader, device).mean_std())

    def fit_extracted(self, datamodule: Any) -> None:
        """Latents extracted once (``data=latents``): they must be this autoencoder's; their statistics are the
        extraction's."""
        if datamodule.autoencoder_digest != self.autoencoder.digest:
            raise ValueError(
                f"data.root={datamodule.root} holds the latents of another autoencoder (digest "
                f"{datamodule.autoencoder_digest[:12]}, this autoencoder= is {self.autoencoder.digest[:12]}): stale "
                "latents; extract them again with this autoencoder (task=extract_latents) or pass the one they came from"
            )
        if tuple(datamodule.latent_shape) != self.shape:
            raise ValueError(f"data.root={datamodule.root} holds latents {list(datamodule.latent_shape)}, not {list(self.shape)}")
        if not bool(self.norm.fitted):
            self.norm.set(*datamodule.latent_statistics())

    def encode_batch(self, batch: dict, cached: bool = False, datamodule: Any | None = None) -> Tensor:
        """What the net sees of a batch: ``encode`` of its pixels ``x``, or its extracted latents ``z``
        (``data=latents``) normalised."""
        if "z" not in batch:
            return self.encode(batch["x"], cached, datamodule)
        if self.is_pixels:
            raise ValueError(
                "the batches hold latents (data=latents) but the method has no autoencoder: pass autoencoder=<the "
                "checkpoint or folder they were extracted with>"
            )
        self.ready(datamodule)
        return self.norm.normalize(batch["z"])

    def ready(self, datamodule: Any | None) -> None:
        """Fit the statistics from ``datamodule`` if they are not; without one, an unfitted space is an error."""
        if self.fitted:
            return
        if datamodule is None:
            raise RuntimeError(
                "the latent statistics are not fitted: a latent-space model is trained by the trainer (setup fits "
                "them on the train split) or loaded from its checkpoint"
            )
        self.fit(datamodule, self.norm.mean.device)

    @torch.no_grad()
    def encode(self, x: Tensor, cached: bool = False, datamodule: Any | None = None) -> Tensor:
        """What the net sees of the pixels ``x``: ``x`` itself, or its normalised latents (from the cache when
        ``cached`` and there is one)."""
        if self.is_pixels:
            return x
        self.ready(datamodule)
        z = self.cache.lookup(x) if cached and self.cache is not None else self.autoencoder.encode(x)
        return self.norm.normalize(z)

    def decode(self, z: Tensor, datamodule: Any | None = None) -> Tensor:
        """The pixels of ``z`` (what the net sees)."""
        if self.is_pixels:
            return z
        self.ready(datamodule)
        return self.autoencoder.decode(self.norm.denormalize(z))


@torch.no_grad()
def streamed_moments(autoencoder: FrozenAutoencoder, loader: Any, device: torch.device) -> ChannelMoments:
    """The per-channel moments of ``autoencoder``'s latents of every batch ``{"x": ...}`` of ``loader``."""
    moments = ChannelMoments()
    for batch in loader:
        moments.add(autoencoder.encode(batch["x"].to(device)).float())
    return moments
