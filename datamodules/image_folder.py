"""Any folder of images with one sub-folder per class, read through torchvision's ``ImageFolder``."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets.folder import find_classes
from torchvision.transforms import v2

from datamodules.base import ZooDataModule
from datamodules.splits import split_indices


class ImageFolder(ZooDataModule):
    """Images under ``root/<class>/*.png|jpg|...``, resized (shorter side) and center-cropped to
    ``image_size``, with ``channels`` 1 (grayscale) or 3 (RGB); split 80/10/10 by ``seed``.

    The classes (sorted sub-folder names) are listed at construction, so a missing or empty
    ``root`` fails at once. With ``check="decode"`` (the default) every image is decoded once at setup,
    so a corrupt file (a broken data stream under valid headers included) fails, by name, before the
    first training step; ``check="header"`` only verifies the headers at setup (for folders too large
    to decode twice), and an image that fails to decode later is named with its path when it is read.
    """

    def __init__(self, root: str, image_size: int = 32, channels: int = 3, check: str = "decode", **kwargs) -> None:
        super().__init__(**kwargs)
        if check not in CHECKS:
            raise ValueError(f"data.check={check}: use one of {', '.join(CHECKS)}")
        self.check = check
        if channels not in (1, 3):
            raise ValueError(f"data.channels={channels}: use 1 (grayscale) or 3 (RGB)")
        if image_size < 1:
            raise ValueError(f"data.image_size={image_size}: give a positive size in pixels")
        self.root, self.image_size, self.channels = Path(root), image_size, channels
        self.classes = _class_folders(self.root)
        self.shape = (channels, image_size, image_size)
        self.num_classes = len(self.classes)

    def _splits(self) -> tuple[Dataset, Dataset, Dataset]:
        steps = [v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size)]
        if self.channels == 1:
            steps.append(v2.Grayscale(num_output_channels=1))
        steps += [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)]
        try:
            dataset = torchvision.datasets.ImageFolder(str(self.root), transform=v2.Compose(steps), loader=load_image)
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"data.root={self.root}: a class folder holds no images ({error}); "
                "put images in every class folder or remove the empty ones"
            ) from error
        for path, _ in dataset.samples:
            check_image(Path(path), decode=self.check == "decode")
        splits = split_indices(len(dataset), self.seed)
        if any(len(indices) == 0 for indices in splits):
            raise ValueError(
                f"data.root={self.root} holds {len(dataset)} images, too few for a train/val/test split; "
                "the 80/10/10 split needs at least 6"
            )
        return tuple(Subset(dataset, indices.tolist()) for indices in splits)


CHECKS = ("decode", "header")
"""What ``ImageFolder(check=...)`` does to every image at setup: decode it whole, or verify its header."""


def check_image(path: Path, decode: bool = True) -> None:
    """Raise a ValueError naming ``path`` if PIL cannot decode the image there (or, ``decode=False``, verify it)."""
    try:
        with Image.open(path) as image:
            image.load() if decode else image.verify()
    except Exception as error:
        raise unreadable(path, error) from error


def load_image(path: str) -> Image.Image:
    """torchvision's loader (an RGB ``PIL.Image``), its failures naming the file."""
    try:
        with open(path, "rb") as handle, Image.open(handle) as image:
            return image.convert("RGB")
    except Exception as error:
        raise unreadable(Path(path), error) from error


def unreadable(path: Path, error: Exception) -> ValueError:
    return ValueError(f"{path} is not a readable image ({type(error).__name__}: {error}); remove or replace it")


def _class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.root={root} is not a folder; point data.root at a folder with one sub-folder of images per class"
        )
    try:
        classes, _ = find_classes(root)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"data.root={root} has no class sub-folders; put the images in one sub-folder per class"
        ) from error
    return classes
