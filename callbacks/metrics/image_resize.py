"""How images reach the Inception's 299×299 in the two FID conventions users compare against.

``adm``: the ADM evaluator (Dhariwal & Nichol, NeurIPS 2021, ``guided-diffusion/evaluations``) feeds uint8
images to the TensorFlow graph, which resizes them with TensorFlow 1's bilinear ``ResizeBilinear``
(``align_corners=False`` without half-pixel centres: output pixel ``i`` reads input ``i · in/out``), as do
the TTUR and pytorch-fid-with-TF-weights figures. ``clean``: clean-fid (Parmar, Zhang & Zhu, "On Aliased
Resizing and Surprising Subtleties in GAN Evaluation", CVPR 2022) resizes each channel of the uint8 image
with PIL's bicubic filter in float (mode ``F``) and keeps the result unquantized. The two give different
FIDs for the same samples; a figure is only comparable with one computed in its convention.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

CONVENTIONS = ("adm", "clean")


def resize_like_tensorflow1(images: Tensor, size: int) -> Tensor:
    """TensorFlow 1's ``resize_bilinear(align_corners=False)`` of ``N,C,H,W`` floats to ``size × size``.

    Output row ``i`` reads input row ``y = i · H / size``: ``(1 - f) x[⌊y⌋] + f x[min(⌊y⌋ + 1, H - 1)]`` with
    ``f = y - ⌊y⌋`` (TensorFlow's ``resize_bilinear_op.cc``, ``legacy`` scaling); the same along columns.
    """

    def along(x: Tensor, dim: int) -> Tensor:
        length = x.shape[dim]
        position = torch.arange(size, dtype=torch.float64) * (length / size)
        low = position.floor().long().clamp(max=length - 1)
        high = (low + 1).clamp(max=length - 1)
        shape = [1] * x.ndim
        shape[dim] = size
        weight = (position - low).to(x.dtype).reshape(shape).to(x.device)
        low, high = low.to(x.device), high.to(x.device)
        return x.index_select(dim, low) * (1 - weight) + x.index_select(dim, high) * weight

    return along(along(images.float(), 2), 3)


def resize_like_clean_fid(images: Tensor, size: int) -> Tensor:
    """clean-fid's resize: each channel of the uint8 ``N,C,H,W`` images through PIL's bicubic in float mode."""
    rows = images.to(torch.uint8).cpu().numpy().astype(np.float32)
    resized = [
        [np.asarray(Image.fromarray(channel).resize((size, size), resample=Image.BICUBIC)) for channel in image]
        for image in rows
    ]
    return torch.from_numpy(np.asarray(resized, dtype=np.float32)).to(images.device)


def to_inception_input(images: Tensor, convention: str, size: int = 299) -> Tensor:
    """uint8 ``N,C,H,W`` images (grey repeated to RGB) as the Inception's float input in ``convention``."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention}: choose one of {', '.join(CONVENTIONS)}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"Inception metrics read uint8 images N,C,H,W with C 1 or 3, got {images.dtype} {tuple(images.shape)}"
        )
    rgb = images.expand(-1, 3, -1, -1)
    if convention == "clean":
        return resize_like_clean_fid(rgb, size)
    return resize_like_tensorflow1(rgb, size)
