"""The on-disk latent cache of a train split (``method.cache_latents=true``): encode once, read after.

Design: the cache lives on the method's side, so ``datamodules/`` stays free of ``zoo``. Batches keep
carrying pixels; the method looks each training image up by its content (a hash of its float32
bytes) in a table of the unaugmented train split's latents, built once from
``datamodule.train_tensor()``. Content keys need no index in the batch contract and cannot
silently pair an image with another's latent; an image not in the table (an augmented one) is an
error, and augmenting data are refused before training.

The file is ``<cache_dir>/latents/<key>.pt`` with ``key = sha256(autoencoder checkpoint digest,
data fingerprint)``, the fingerprint being the SHA-256 of the split's pixels: another checkpoint or
other data is another file. A file is never trusted: it must load weights-only, carry the same key,
hold finite latents of the right shape whose SHA-256 (``callbacks.training.files.tensor_digest``, all rows) is
the one stored beside them, and its first rows must equal a fresh encoding; otherwise it is rebuilt,
with a warning that says why. It is written atomically (``atomic_torch_save``), so a run killed
mid-write leaves no half file under the real name.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from callbacks.training.files import atomic_torch_save, tensor_digest

SPOT_CHECK = 8
"""How many rows of a cache file are re-encoded and compared before the file is used."""


def fingerprint(pixels: Tensor) -> str:
    """The SHA-256 of the pixels' float32 bytes and shape."""
    digest = hashlib.sha256(str(tuple(pixels.shape)).encode())
    digest.update(pixels.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def row_keys(x: Tensor) -> list[bytes]:
    """One content key per image of ``x``: the BLAKE2b digest of its float32 bytes."""
    rows = x.detach().float().cpu().contiguous().flatten(1).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


@torch.no_grad()
def encode_all(encoder: nn.Module, pixels: Tensor, device: torch.device, batch_size: int = 256) -> Tensor:
    """``encoder.encode`` over ``pixels`` in batches, on ``device``; the latents on the CPU."""
    chunks = [encoder.encode(pixels[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(pixels), batch_size)]
    return torch.cat(chunks)


class LatentCache:
    """The latents of a train split, looked up by image content."""

    def __init__(self, pixels: Tensor, latents: Tensor) -> None:
        if len(pixels) != len(latents):
            raise ValueError(f"{len(pixels)} images but {len(latents)} latents")
        self.latents = latents
        self.index = {key: row for row, key in enumerate(row_keys(pixels))}

    def lookup(self, x: Tensor) -> Tensor:
        """The cached latents of the images ``x``, on ``x``'s device."""
        rows = [self.index.get(key) for key in row_keys(x)]
        if None in rows:
            raise ValueError(
                "method.cache_latents=true: a training image is not in the latent cache of the unaugmented train "
                "split (augmented or other data); set data.augment=null, or method.cache_latents=false"
            )
        return self.latents[torch.tensor(rows)].to(x.device, x.dtype)


def cache_file(cache_dir: str | Path, autoencoder_digest: str, data_fingerprint: str) -> Path:
    key = hashlib.sha256(f"{autoencoder_digest}:{data_fingerprint}".encode()).hexdigest()
    return Path(cache_dir) / "latents" / f"{key[:32]}.pt"


def problem(path: Path, key: str, expected: tuple[int, ...], fresh: Tensor) -> str | None:
    """Why the cache file ``path`` cannot be trusted, or None when it can."""
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file fails in many ways; each means "rebuild"
        return f"it cannot be read ({type(error).__name__}: truncated or corrupted)"
    if not isinstance(stored, dict) or stored.get("key") != key or not isinstance(stored.get("latents"), Tensor):
        return "it was written for another checkpoint or other data (its key differs)"
    latents = stored["latents"]
    if tuple(latents.shape) != expected or not bool(torch.isfinite(latents).all()):
        return f"its latents have shape {tuple(latents.shape)} (expected {expected}) or are not finite"
    if stored.get("sha256") != tensor_digest(latents):
        return "its latents do not match their stored SHA-256 (the file was damaged after writing)"
    if not torch.allclose(latents[: len(fresh)], fresh, rtol=1e-4, atol=1e-5):
        return "its first latents differ from a fresh encoding"
    return None


def cached_latents(
    autoencoder: nn.Module, digest: str, pixels: Tensor, cache_dir: str | Path, device: torch.device
) -> LatentCache:
    """The ``LatentCache`` of ``pixels`` under ``autoencoder`` (checkpoint ``digest``), read or (re)built on disk."""
    data = fingerprint(pixels)
    path = cache_file(cache_dir, digest, data)
    key = path.stem
    expected = (len(pixels), *autoencoder.latent_shape)
    if path.is_file():
        fresh = encode_all(autoencoder, pixels[:SPOT_CHECK], device)
        why = problem(path, key, expected, fresh)
        if why is None:
            return LatentCache(pixels, torch.load(path, map_location="cpu", weights_only=True)["latents"])
        warnings.warn(f"latent cache {path} is not used: {why}; rebuilding it", stacklevel=2)
    latents = encode_all(autoencoder, pixels, device)
    atomic_torch_save({"key": key, "latents": latents, "sha256": tensor_digest(latents)}, path)
    return LatentCache(pixels, latents)
