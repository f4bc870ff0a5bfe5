"""Augmentation recipes: single-view training transforms and the two-view SSL recipes of MoCo.

Every recipe is a ``torchvision.transforms.v2`` pipeline on one float image ``C,H,W`` in [0, 1] and
returns an image of the same shape in [0, 1]. The MoCo recipes are written for 224 px ImageNet;
here they are scaled to small images: the Gaussian blur kernel is about 10% of the image side
(odd, at least 3; 23 at 224 px as in MoCo) with the papers' sigma range [0.1, 2], and the
saturation/hue jitter and random grayscale apply only to 3-channel images, so 1-channel digits
get crop, brightness/contrast jitter, blur (and solarize) only.

Horizontal flips are part of both MoCo recipes, but digits and letters are not flip-invariant;
the ``*_noflip`` recipe names drop the flip and keep everything else.

Each recipe also comes batched (``batched_single_view``, ``batched_two_views``): the same
distributions as ``datamodules.batched_views`` ops on a whole batch ``B,C,H,W``, which the
in-memory datamodules apply where their data lives (the accelerator, when the trainer has one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor
from torchvision.transforms import v2

from datamodules.batched_views import BatchedView, ColorJitter, flip_only

Transform = Callable[[Tensor], Tensor]


SINGLE_VIEW_RECIPES = ("flip",)
TWO_VIEW_RECIPES = ("mocov2", "mocov2_noflip", "mocov3", "mocov3_noflip")


def single_view(name: str | None, shape: Sequence[int]) -> Transform | None:
    """The single-view training augmentation ``data.augment``: none (``None``) or ``"flip"``."""
    if name is None:
        return None
    if name not in SINGLE_VIEW_RECIPES:
        raise ValueError(
            f"data.augment={name!r} is not a known recipe; use one of {list(SINGLE_VIEW_RECIPES)} or null"
        )
    _require_image(shape, "data.augment", name)
    return v2.RandomHorizontalFlip(p=0.5)


def batched_single_view(name: str | None, shape: Sequence[int]) -> BatchedView | None:
    """``single_view``'s recipe as a batched op (per-image flips)."""
    return None if single_view(name, shape) is None else flip_only(0.5)


def two_views(name: str, shape: Sequence[int], crop_min: float | None = None) -> list[Transform]:
    """The two SSL view transforms ``data.views`` (``mocov2``, ``mocov3`` and their ``_noflip`` forms).

    ``mocov2``: MoCo v2's aug+ (Chen et al. 2020, arXiv 2003.04297, §3), the same distribution for
    both views: RandomResizedCrop scale [0.2, 1], ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8,
    grayscale p 0.2, Gaussian blur sigma in [0.1, 2] with p 0.5, horizontal flip.
    ``mocov3``: MoCo v3's asymmetric views (Chen, Xie, He 2021, arXiv 2104.02057, appendix;
    ``facebookresearch/moco-v3`` main_moco.py): RandomResizedCrop scale [0.08, 1],
    ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2, flip; view 1 blurs with p 1.0,
    view 2 blurs with p 0.1 and solarizes with p 0.2.
    ``crop_min`` replaces the recipe's smallest crop scale (``data.crop_min``).
    """
    recipes = _two_view_recipes(name, shape, crop_min)
    view = _moco_view(shape, **recipes[0])
    return [view, view] if recipes[0] == recipes[1] else [view, _moco_view(shape, **recipes[1])]


def batched_two_views(name: str, shape: Sequence[int], crop_min: float | None = None) -> list[BatchedView]:
    """``two_views``' recipes as batched ops: per-image crop, jitter, grayscale, blur, solarize and flip."""
    return [_batched_moco_view(shape, **recipe) for recipe in _two_view_recipes(name, shape, crop_min)]


def _two_view_recipes(name: str, shape: Sequence[int], crop_min: float | None = None) -> list[dict]:
    """The keyword arguments of the two views of recipe ``name`` (``crop_min``: the smallest crop scale, else
    the recipe's)."""
    if name not in TWO_VIEW_RECIPES:
        raise ValueError(
            f"data.views={name!r} is not a known recipe; use one of {list(TWO_VIEW_RECIPES)} or null"
        )
    _require_image(shape, "data.views", name)
    if crop_min is not None and not 0 < crop_min <= 1:
        raise ValueError(f"data.crop_min={crop_min}: the smallest crop scale is in (0, 1], or null for the recipe's")
    flip = not name.endswith("_noflip")
    if name.startswith("mocov2"):
        view = {"crop_min": 0.2, "saturation": 0.4, "blur_p": 0.5, "solarize_p": 0.0, "flip": flip}
        views = [view, view]
    else:
        views = [
            {"crop_min": 0.08, "saturation": 0.2, "blur_p": 1.0, "solarize_p": 0.0, "flip": flip},
            {"crop_min": 0.08, "saturation": 0.2, "blur_p": 0.1, "solarize_p": 0.2, "flip": flip},
        ]
    return views if crop_min is None else [{**view, "crop_min": crop_min} for view in views]


def blur_kernel_size(side: int) -> int:
    """An odd Gaussian blur kernel of about 10% of the image side, at least 3 (23 at 224 px)."""
    return max(3, 2 * round(side / 20) + 1)


def _batched_moco_view(
    shape: Sequence[int], crop_min: float, saturation: float, blur_p: float, solarize_p: float, flip: bool
) -> BatchedView:
    channels, height, width = shape
    color = channels == 3
    return BatchedView(
        crop_scale=(crop_min, 1.0),
        jitter=ColorJitter(0.4, 0.4, saturation if color else 0.0, 0.1 if color else 0.0, p=0.8),
        grayscale_p=0.2 if color else 0.0,
        blur_kernel=blur_kernel_size(min(height, width)),
        blur_p=blur_p,
        solarize_p=solarize_p,
        flip_p=0.5 if flip else 0.0,
    )


def _moco_view(
    shape: Sequence[int], crop_min: float, saturation: float, blur_p: float, solarize_p: float, flip: bool
) -> v2.Compose:
    channels, height, width = shape
    color = channels == 3
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop((height, width), scale=(crop_min, 1.0), antialias=True),
        v2.RandomApply(
            [v2.ColorJitter(0.4, 0.4, saturation if color else 0.0, 0.1 if color else 0.0)], p=0.8
        ),
    ]
    if color:
        steps.append(v2.RandomGrayscale(p=0.2))
    steps.append(
        v2.RandomApply([v2.GaussianBlur(blur_kernel_size(min(height, width)), (0.1, 2.0))], p=blur_p)
    )
    if solarize_p:
        steps.append(v2.RandomSolarize(threshold=0.5, p=solarize_p))
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps.append(clamp_unit)
    return v2.Compose(steps)


def clamp_unit(image: Tensor) -> Tensor:
    """Clamp to [0, 1]: resampling and blurring can overshoot by float rounding (~1e-7)."""
    return image.clamp(0.0, 1.0)


def _require_image(shape: Sequence[int], key: str, name: str) -> None:
    if len(shape) != 3:
        raise ValueError(
            f"{key}={name!r} augments images (C, H, W) but this data has shape {tuple(shape)}; set {key}=null"
        )
