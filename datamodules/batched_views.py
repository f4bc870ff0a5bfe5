"""The augmentations of ``datamodules.views`` as batched tensor ops, with per-sample random parameters.

Each op takes a float batch ``B, C, H, W`` in [0, 1] and draws one set of parameters per image,
from the distribution torchvision's ``transforms.v2`` class draws it from for one image
(``RandomResizedCrop``, ``ColorJitter``, ``RandomGrayscale``, ``GaussianBlur``, ``RandomSolarize``,
``RandomHorizontalFlip``, each inside ``RandomApply`` where the recipe has one), and applies it with
the same arithmetic (bilinear resampling with half-pixel centers, the same blends, HSV hue shift,
reflect-padded Gaussian kernel). The whole batch is a handful of tensor ops on whatever device it is
on, so two views of a batch cost no per-image host work. Random numbers come from ``generator``
when given, else from the global generator of the batch's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

_GRAY = (0.2989, 0.587, 0.114)
_CROP_ATTEMPTS = 10


def uniform(low: float, high: float, n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``n`` draws of U[low, high] on ``like``'s device."""
    return low + (high - low) * torch.rand(n, device=like.device, generator=generator)


def chance(p: float, n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``n`` independent coin flips that come up True with probability ``p`` (``B, 1, 1, 1`` bools)."""
    return (torch.rand(n, device=like.device, generator=generator) < p).view(n, 1, 1, 1)


def crop_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], like: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``n`` crop boxes ``(top, left, height, width)`` (long ``n, 4``) drawn as ``RandomResizedCrop`` draws
    one: up to 10 attempts of area ``U[scale] * H * W`` and log-aspect ``U[log ratio]``, the first that
    fits, else the central crop of the nearest allowed aspect (Szegedy et al. 2015's Inception crop)."""
    area = height * width
    target = area * uniform(*scale, n * _CROP_ATTEMPTS, like, generator).view(n, _CROP_ATTEMPTS)
    log_ratio = uniform(math.log(ratio[0]), math.log(ratio[1]), n * _CROP_ATTEMPTS, like, generator)
    aspect = log_ratio.view(n, _CROP_ATTEMPTS).exp()
    w = (target * aspect).sqrt().round().long()
    h = (target / aspect).sqrt().round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(dim=1)
    in_ratio = width / height
    fallback_w = width if in_ratio <= max(ratio) else round(height * max(ratio))
    fallback_h = height if in_ratio >= min(ratio) else round(width / min(ratio))
    w = torch.where(found, w, torch.full_like(w, fallback_w))
    h = torch.where(found, h, torch.full_like(h, fallback_h))
    top = (torch.rand(n, device=like.device, generator=generator) * (height - h + 1)).floor().long()
    left = (torch.rand(n, device=like.device, generator=generator) * (width - w + 1)).floor().long()
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def resized_crop(images: Tensor, boxes: Tensor) -> Tensor:
    """Each image's box resized back to the image size by bilinear interpolation (half-pixel
    centers, edges clamped to the box): ``F.interpolate`` of the crop, as ``resized_crop`` does,
    written as two batched interpolation matrices ``out = R_y · crop · R_xᵀ``."""
    _, _, height, width = images.shape
    rows = _interpolation_matrix(boxes[:, 0], boxes[:, 2], height, images.dtype)
    cols = _interpolation_matrix(boxes[:, 1], boxes[:, 3], width, images.dtype)
    return rows.unsqueeze(1) @ images @ cols.transpose(1, 2).unsqueeze(1)


def _interpolation_matrix(start: Tensor, length: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """``B, size, size`` weights mapping ``size`` source pixels to ``size`` outputs that resample the
    window ``[start, start + length)``."""
    out = torch.arange(size, device=start.device, dtype=dtype)
    start, length = start.to(dtype).unsqueeze(1), length.to(dtype).unsqueeze(1)
    source = start + ((out + 0.5) * length / size - 0.5).clamp(min=0)
    source = torch.minimum(source, start + length - 1)
    low = source.floor()
    frac = (source - low).unsqueeze(-1)
    high = torch.minimum(low + 1, start + length - 1)
    pixels = out.view(1, 1, size)
    return (1 - frac) * (pixels == low.unsqueeze(-1)) + frac * (pixels == high.unsqueeze(-1))


def grayscale(images: Tensor) -> Tensor:
    """ITU-R 601 luma of RGB images, ``B, 1, H, W`` (torchvision's ``rgb_to_grayscale`` weights)."""
    r, g, b = images.unbind(dim=1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def where_chosen(chosen: Tensor, op: Callable[..., Tensor], images: Tensor, *per_image: Tensor) -> Tensor:
    """``op(images, *per_image)`` for the images where ``chosen`` (``B`` bools), the others as they are.
    On the host ``op`` runs on the chosen rows only; on an accelerator it runs on the whole batch
    and the rows are selected, which needs no synchronization with the host."""
    if images.device.type != "cpu":
        return torch.where(chosen.view(-1, 1, 1, 1), op(images, *per_image), images)
    rows = chosen.nonzero()[:, 0]
    if len(rows) == 0:
        return images
    out = images.clone()
    out[rows] = op(images[rows], *(value[rows] for value in per_image))
    return out


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def _brightness(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, torch.zeros_like(images), factor)


def _contrast(images: Tensor, factor: Tensor) -> Tensor:
    gray = grayscale(images) if images.shape[1] == 3 else images
    return _blend(images, gray.mean(dim=(1, 2, 3), keepdim=True), factor)


def _saturation(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, grayscale(images), factor)


def _hue(images: Tensor, factor: Tensor) -> Tensor:
    h, s, v = _rgb_to_hsv(images).unbind(dim=1)
    return _hsv_to_rgb(torch.stack(((h + factor.view(-1, 1, 1)).remainder(1.0), s, v), dim=1))


@dataclass(frozen=True)
class ColorJitter:
    """``ColorJitter(brightness, contrast, saturation, hue)`` applied with probability ``p``: each
    image gets its own factors (U[1 - b, 1 + b], U[1 - c, 1 + c], U[1 - s, 1 + s], U[-h, h]) and its
    own random order of the enabled adjustments. Saturation and hue are skipped when 0."""

    brightness: float
    contrast: float
    saturation: float
    hue: float
    p: float

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n = len(images)
        adjustments = ((_brightness, self.brightness), (_contrast, self.contrast), (_saturation, self.saturation),
                       (_hue, self.hue))
        ops = [(op, amount) for op, amount in adjustments if amount]
        if not ops:
            return images
        low_high = [(-amount, amount) if op is _hue else (1 - amount, 1 + amount) for op, amount in ops]
        factors = [uniform(low, high, n, images, generator) for low, high in low_high]
        order = torch.rand(n, len(ops), device=images.device, generator=generator).argsort(dim=1)
        applied = chance(self.p, n, images, generator).view(n)
        out = images
        for position in range(len(ops)):
            for index, ((op, _), factor) in enumerate(zip(ops, factors)):
                out = where_chosen((order[:, position] == index) & applied, op, out, factor.view(n, 1, 1, 1))
        return out


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Each image blurred by its own ``sigma``: the separable normalized Gaussian of ``kernel_size``
    taps, reflect padding (torchvision's ``gaussian_blur``)."""
    n, channels, height, width = images.shape
    offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - (kernel_size - 1) / 2
    kernel = torch.softmax(-0.5 * (offsets / sigma.view(n, 1)) ** 2, dim=1)
    kernel = kernel.repeat_interleave(channels, dim=0)
    pad = kernel_size // 2
    flat = F.pad(images.reshape(1, n * channels, height, width), (pad, pad, pad, pad), mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * channels, 1, 1, kernel_size), groups=n * channels)
    flat = F.conv2d(flat, kernel.view(n * channels, 1, kernel_size, 1), groups=n * channels)
    return flat.view(n, channels, height, width)


@dataclass(frozen=True)
class BatchedView:
    """One MoCo-style view of a batch (``datamodules.views`` recipe): random resized crop of scale
    ``[crop_min, 1]`` and aspect ``[3/4, 4/3]``; color jitter with probability 0.8; grayscale with
    probability 0.2 (3 channels); Gaussian blur, sigma U[0.1, 2], with probability ``blur_p``;
    solarize at 0.5 with probability ``solarize_p``; horizontal flip with probability ``flip_p``;
    clamped to [0, 1]."""

    crop_scale: tuple[float, float] | None
    jitter: ColorJitter | None
    grayscale_p: float
    blur_kernel: int
    blur_p: float
    solarize_p: float
    flip_p: float

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, _, height, width = images.shape
        out = images
        if self.crop_scale is not None:
            boxes = crop_boxes(n, height, width, self.crop_scale, (3 / 4, 4 / 3), images, generator)
            out = resized_crop(out, boxes)
        if self.jitter is not None:
            out = self.jitter(out, generator)
        if self.grayscale_p:
            out = torch.where(chance(self.grayscale_p, n, out, generator), grayscale(out).expand_as(out), out)
        if self.blur_p:
            sigma = uniform(0.1, 2.0, n, out, generator)
            blur = partial(gaussian_blur, kernel_size=self.blur_kernel)
            out = where_chosen(chance(self.blur_p, n, out, generator).view(n), blur, out, sigma)
        if self.solarize_p:
            out = torch.where(chance(self.solarize_p, n, out, generator) & (out >= 0.5), 1 - out, out)
        if self.flip_p:
            out = torch.where(chance(self.flip_p, n, out, generator), out.flip(-1), out)
        return out.clamp(0.0, 1.0)


def flip_only(p: float = 0.5) -> BatchedView:
    """Horizontal flips alone, with probability ``p`` per image (the single-view ``flip`` recipe)."""
    return BatchedView(None, None, 0.0, 0, 0.0, 0.0, p)
