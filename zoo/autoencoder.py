"""The autoencoder contract: what a latent space is in the zoo (VAE, VA-VAE, RAE, ...).

**An autoencoder method** is a zoo ``Method`` (``zoo.methods.base``) with

- ``encode(x: Tensor) -> Tensor``: pixels ``B, C, H, W`` in [-1, 1] to latents ``B, *latent_shape``,
  deterministic (a VAE's posterior mean, never a draw);
- ``decode(z: Tensor) -> Tensor``: latents ``B, *latent_shape`` to pixels ``B, C, H, W`` on the [-1, 1]
  scale (not clamped);
- ``latent_shape: tuple[int, ...]``: ``(C, h, w)``;

and its checkpoint's ``run_config["shape"]`` is the pixel shape ``(C, H, W)`` it was trained on.
``Autoencoder`` states this as a ``typing.Protocol``; ``is_autoencoder`` checks it.

**Loading.** ``load_autoencoder(path, data_shape)`` is ``zoo.loading.load_method`` with the expectation
``is_autoencoder``: it refuses, with a ``ValueError`` naming ``setting`` (``autoencoder`` by default), a
checkpoint that is not an autoencoder and one trained on another image size or channel count than
the data, and returns the method wrapped in ``FrozenAutoencoder``: no parameter requires a gradient and
it stays in eval mode whatever its parent's mode. ``FrozenAutoencoder.digest`` is the SHA-256 of the
checkpoint file (what keys a latent cache, ``zoo.latent_cache``). A folder instead of a checkpoint is a local
diffusers ``AutoencoderKL`` (the SD-VAE: ``load_diffusers_autoencoder``), read from its files alone.

**Normalisation** is not the autoencoder's: the method that models the latents (the diffusion method
with ``autoencoder=<ckpt>``) fits a ``LatentNormalizer`` (per-channel mean and std, LightningDiT's
latent statistics) on the train split's latents and keeps it as buffers in its own checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from callbacks.metrics.frechet_distance import GaussianAccumulator
from callbacks.training.files import file_digest
from zoo.loading import load_method


@runtime_checkable
class Autoencoder(Protocol):
    """``encode`` (pixels in [-1, 1] -> latents, deterministic), ``decode`` (latents -> pixels), ``latent_shape``."""

    latent_shape: tuple[int, ...]

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


def is_autoencoder(method: nn.Module) -> bool:
    """The method has callable ``encode`` and ``decode`` and a ``latent_shape``: it satisfies ``Autoencoder``."""
    return (
        callable(getattr(method, "encode", None))
        and callable(getattr(method, "decode", None))
        and getattr(method, "latent_shape", None) is not None
    )


class FrozenAutoencoder(nn.Module):
    """An autoencoder method that never trains: no gradients to its weights, always in eval mode.

    ``encode``/``decode`` run without building a graph for the weights (gradients still flow to the
    input of ``decode``, as reward guidance or a perceptual loss on decoded latents would need).
    ``shape`` is the pixel shape it was trained on, ``latent_shape`` its latent shape, ``digest`` the
    SHA-256 of its checkpoint file.
    """

    def __init__(self, method: nn.Module, shape: Sequence[int], digest: str) -> None:
        super().__init__()
        self.method = method.requires_grad_(False)
        self.shape = tuple(int(s) for s in shape)
        self.latent_shape = tuple(int(s) for s in method.latent_shape)
        self.digest = digest
        self.train(False)

    def train(self, mode: bool = True) -> FrozenAutoencoder:
        """Stays in eval mode whatever ``mode`` says."""
        return super().train(False)

    def encode(self, x: Tensor) -> Tensor:
        return self.method.encode(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.method.decode(z)


SD_VAE_DOWNLOAD = (
    "huggingface-cli download stabilityai/sd-vae-ft-ema --local-dir <folder> (config.json and "
    "diffusion_pytorch_model.safetensors; sd-vae-ft-mse likewise) on a machine with a network"
)


class DiffusersAutoencoder(nn.Module):
    """A diffusers ``AutoencoderKL`` (the SD-VAE of latent DiT, SiT and REPA) as an ``Autoencoder``: ``encode`` the
    posterior mean, ``decode`` the decoder's image; ``latent_shape`` ``(latent_channels, H/f, W/f)`` with ``f``
    ``2^(levels - 1)`` (8 for the SD-VAE)."""

    def __init__(self, vae: nn.Module, image_shape: Sequence[int]) -> None:
        super().__init__()
        self.vae = vae
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_shape = (int(vae.config.latent_channels), image_shape[1] // factor, image_shape[2] // factor)

    def encode(self, x: Tensor) -> Tensor:
        return self.vae.encode(x).latent_dist.mean

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z).sample


def load_diffusers_autoencoder(folder: str | Path, data_shape: Sequence[int], setting: str) -> FrozenAutoencoder:
    """``AutoencoderKL.from_pretrained(folder)`` from local files only and safetensors only (no pickle), checked
    against ``data_shape``; its digest is that of its config and weights files."""
    from diffusers import AutoencoderKL

    folder = Path(folder)
    files = sorted([folder / "config.json", *folder.glob("*.safetensors")])
    if not files[0].is_file() or len(files) < 2:
        raise FileNotFoundError(
            f"{setting}={folder} is a folder but not a diffusers AutoencoderKL (config.json and a .safetensors "
            f"weights file); get one with {SD_VAE_DOWNLOAD}, or pass a zoo autoencoder's last.ckpt"
        )
    vae = AutoencoderKL.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    data_shape = tuple(int(s) for s in data_shape)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if len(data_shape) != 3 or data_shape[0] != vae.config.in_channels or data_shape[1] % factor or data_shape[2] % factor:
        raise ValueError(
            f"{setting}={folder} encodes images of {vae.config.in_channels} channels whose sides are multiples of "
            f"{factor}, but the data are {list(data_shape)}; pick data.image_size and channels to match "
            "(data.channels=3 for the SD-VAE)"
        )
    digest = hashlib.sha256("".join(f"{file.name}:{file_digest(file)};" for file in files).encode()).hexdigest()
    return FrozenAutoencoder(DiffusersAutoencoder(vae, data_shape), data_shape, digest)


def load_autoencoder(
    path: str | Path, data_shape: Sequence[int], setting: str = "autoencoder"
) -> FrozenAutoencoder:
    """The frozen autoencoder of a zoo checkpoint, or of a local diffusers ``AutoencoderKL`` folder (an SD-VAE),
    checked against the data's pixel shape ``data_shape``."""
    if Path(path).is_dir():
        return load_diffusers_autoencoder(path, data_shape, setting)
    if not Path(path).exists() and Path(path).suffix != ".ckpt":
        raise FileNotFoundError(
            f"{setting}={path}: no such folder; a pretrained SD-VAE goes there with "
            f"{SD_VAE_DOWNLOAD.replace('<folder>', str(path))}, or pass a zoo autoencoder's last.ckpt"
        )
    method = load_method(
        path,
        expect=is_autoencoder,
        expected="the checkpoint of an autoencoder (encode, decode, latent_shape): a run of method=vae, "
        "method=vavae or method=rae, e.g. logs/vae/digits/<run>/checkpoints/last.ckpt",
        setting=setting,
    )
    shape = tuple(int(s) for s in method.run_config["shape"])
    data_shape = tuple(int(s) for s in data_shape)
    if shape != data_shape:
        raise ValueError(
            f"{setting}={path} was trained on images of shape {list(shape)} (channels, height, width), but the "
            f"data are {list(data_shape)}; train the autoencoder on these data (same data.image_size and "
            "channels) or pick the data it was trained on"
        )
    return FrozenAutoencoder(method, shape, file_digest(path))


class ChannelMoments(GaussianAccumulator):
    """Per-channel mean and (unbiased) std of latents ``B, C, ...`` that arrive in batches: the streamed Gaussian of
    their channel vectors, one per sample and position."""

    def add(self, z: Tensor) -> None:
        super().add(z.transpose(0, 1).flatten(1).T)

    def mean_std(self) -> tuple[list[float], list[float]]:
        mean, covariance = self.stats()
        return mean.tolist(), covariance.diagonal().clamp(min=0).sqrt().tolist()


class LatentNormalizer(nn.Module):
    """Per-channel latent statistics as buffers: ``normalize(z) = (z - mean) / std`` and its inverse.

    ``fit(latents)`` sets them from the train split's latents ``N, C, h, w`` (LightningDiT normalises
    its VA-VAE latents by their per-channel mean and std; LDM's single ``scale_factor`` is the
    special case of one channel with zero mean). ``fitted`` is a buffer too, so a checkpoint
    carries both the statistics and the fact that they were fitted.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))
        # A float flag (0 or 1), so that weight averaging (which averages buffers) keeps it as it is.
        self.register_buffer("fitted", torch.zeros(()))

    @torch.no_grad()
    def fit(self, latents: Tensor) -> None:
        """Per-channel mean and std over the samples and positions of ``latents`` (``N, C, h, w``)."""
        values = latents.double().transpose(0, 1).flatten(1)
        self.set(values.mean(dim=1), values.std(dim=1))

    @torch.no_grad()
    def set(self, mean: Tensor | Sequence[float], std: Tensor | Sequence[float]) -> None:
        """Per-channel statistics measured elsewhere (streamed ``ChannelMoments``, an extraction's)."""
        mean, std = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
        if std.numel() != self.mean.shape[1]:
            raise ValueError(f"latents have {std.numel()} channels, the normalizer {self.mean.shape[1]}")
        if not bool((std > 0).all()):
            raise ValueError(
                "a latent channel is constant on the train split (std 0): the autoencoder's latent is degenerate; "
                "retrain it (lower its KL weight) or use another checkpoint"
            )
        self.mean.copy_(mean.view_as(self.mean))
        self.std.copy_(std.view_as(self.std))
        self.fitted.fill_(1.0)

    def normalize(self, z: Tensor) -> Tensor:
        return (z - self.mean) / self.std

    def denormalize(self, z: Tensor) -> Tensor:
        return z * self.std + self.mean
