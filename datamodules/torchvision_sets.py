"""MNIST, Fashion-MNIST and CIFAR-10 from their official files, held in memory as uint8 tensors.

The files live where torchvision's dataset classes put them (``root/MNIST/raw/*-ubyte``,
``root/FashionMNIST/raw/*-ubyte``, ``root/cifar-10-batches-py/*_batch*``) and ``download=True``
fetches them through those classes. The MNIST-format sets are read gzipped or not (``*-ubyte.gz``
directly, no copy), and Fashion-MNIST is also found where Debian's package ``dataset-fashion-mnist``
installs the four official files (``/usr/share/datasets/fashion-mnist``), so it is at hand offline.
Reading goes through our own checks, so that a missing file names its path, the ``data.download=true``
flag and the package, and a corrupt file names itself.
The training split is cut into train/val by ``seed`` (``val_fraction``, default 10%); the
official test split is the test set.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torchvision
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from datamodules.base import TensorSamples, ZooDataModule
from datamodules.safe_pickle import safe_load
from datamodules.splits import split_indices

Read = TypeVar("Read")


class ByteImages(TensorSamples):
    """uint8 images ``N,C,H,W`` with long labels, served as ``(x01 float in [0, 1], y)``; held as
    bytes (a quarter of the floats, on the host or the accelerator) and converted per batch."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        super().__init__(images, labels)

    def unit(self, x: Tensor) -> Tensor:
        return x.float() / 255


class _OfficialImageSet(ZooDataModule):
    """Shared by the three sets: ``_read(train)`` gives uint8 ``N,C,H,W`` images and labels."""

    channels: int
    native_size: int
    torchvision_class: type

    def __init__(
        self,
        root: str,
        download: bool = False,
        image_size: int | None = None,
        val_fraction: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if image_size is not None and image_size < 1:
            raise ValueError(
                f"data.image_size={image_size}: give a positive size or null for {self.native_size}"
            )
        if not 0 < val_fraction < 1:
            raise ValueError(
                f"data.val_fraction={val_fraction}: give a fraction of the training split in (0, 1)"
            )
        self.root, self.download, self.val_fraction = Path(root), download, val_fraction
        self.image_size = image_size or self.native_size
        self.shape = (self.channels, self.image_size, self.image_size)
        self.num_classes = 10

    def _expected_files(self) -> list[Path]:
        raise NotImplementedError

    def _read(self, train: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _splits(self) -> tuple[Dataset, Dataset, Dataset]:
        self._ensure_files()
        train_images, train_labels = self._read(train=True)
        test_images, test_labels = self._read(train=False)
        train_idx, val_idx, _ = split_indices(len(train_labels), self.seed, val=self.val_fraction, test=0.0)
        train_images, test_images = self._resize(train_images), self._resize(test_images)
        return (
            ByteImages(train_images[train_idx], train_labels[train_idx]),
            ByteImages(train_images[val_idx], train_labels[val_idx]),
            ByteImages(test_images, test_labels),
        )

    def _ensure_files(self) -> None:
        missing = [path for path in self._expected_files() if not path.is_file()]
        if not missing:
            return
        where = f"{type(self).__name__} files not found: expected {', '.join(map(str, missing))}"
        if not self.download:
            raise FileNotFoundError(
                f"{where}. Set data.download=true to download them into data.root={self.root}, "
                f"or point data.root at the folder that holds them"
            )
        try:
            self.torchvision_class(str(self.root), train=True, download=True)
        except (OSError, RuntimeError) as error:
            raise FileNotFoundError(
                f"{where}, and data.download=true failed ({error}); download them by hand into data.root={self.root}"
            ) from error

    def _resize(self, images: Tensor) -> Tensor:
        if self.image_size == images.shape[-1] == images.shape[-2]:
            return images
        return TF.resize(images, [self.image_size, self.image_size], antialias=True)


class _IdxImageSet(_OfficialImageSet):
    """The MNIST file layout: ``root/<class name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``,
    or the same names in one of ``system_folders`` (a distribution's package); the first folder that holds
    all four files is read."""

    channels, native_size = 1, 28
    system_folders: tuple[Path, ...] = ()
    system_package: str | None = None

    def _folders(self) -> list[Path]:
        return [self.root / self.torchvision_class.__name__ / "raw", *self.system_folders]

    def _names(self, train: bool) -> tuple[str, str]:
        prefix = "train" if train else "t10k"
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"

    def _in(self, folder: Path, name: str) -> Path | None:
        """``folder/name`` or ``folder/name.gz``, whichever exists."""
        return next((path for path in (folder / name, folder / f"{name}.gz") if path.is_file()), None)

    def _raw_files(self, train: bool) -> tuple[Path, Path]:
        for folder in self._folders():
            found = [self._in(folder, name) for name in (*self._names(True), *self._names(False))]
            if all(found):
                return tuple(found[:2]) if train else tuple(found[2:])
        raw = self._folders()[0]
        return tuple(raw / name for name in self._names(train))

    def _expected_files(self) -> list[Path]:
        return [*self._raw_files(train=True), *self._raw_files(train=False)]

    def _ensure_files(self) -> None:
        try:
            super()._ensure_files()
        except FileNotFoundError as error:
            if self.system_package is None or self.download:
                raise
            raise FileNotFoundError(
                f"{error}; or install Debian's package (apt-get install {self.system_package}), which puts the "
                f"official files in {self.system_folders[0]}, where they are found without data.root"
            ) from None

    def _read(self, train: bool) -> tuple[Tensor, Tensor]:
        image_file, label_file = self._raw_files(train)
        images = _read_checked(image_file, _read_idx_images)
        labels = _read_checked(label_file, _read_idx_labels)
        if len(images) != len(labels):
            raise ValueError(
                f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels; "
                "replace both with the official files (or set data.download=true after deleting them)"
            )
        return images.unsqueeze(1), labels


class MNIST(_IdxImageSet):
    """MNIST (LeCun et al. 1998): 28x28 grayscale digits, 60,000 train / 10,000 test."""

    torchvision_class = torchvision.datasets.MNIST


class FashionMNIST(_IdxImageSet):
    """Fashion-MNIST (Xiao et al. 2017, arXiv 1708.07747): 28x28 grayscale clothes, 60,000 / 10,000; also read
    from Debian's ``dataset-fashion-mnist`` (MIT licence) without ``data.root``."""

    torchvision_class = torchvision.datasets.FashionMNIST
    system_folders = (Path("/usr/share/datasets/fashion-mnist"),)
    system_package = "dataset-fashion-mnist"


class CIFAR10(_OfficialImageSet):
    """CIFAR-10 (Krizhevsky 2009): 32x32 color images, 50,000 train / 10,000 test.

    torchvision's ``CIFAR10`` refuses any pickle whose md5 differs from the official archive's,
    which rejects a faithful re-export of the data (or a small file in the same format) as
    "not found or corrupted" without naming a file. The md5 guards the download, so downloading
    stays with torchvision (which checks the archive's md5); reading checks what a reader needs
    instead: each of ``data_batch_1..5`` and ``test_batch`` exists, unpickles with
    ``datamodules.safe_pickle`` (numpy arrays and plain containers only: a crafted file runs no code), and holds
    ``data`` (uint8 rows of 3072 = 3x32x32) and as many ``labels`` in [0, 9]. A file that fails is
    named in the error. ``batches.meta`` (class names) is not needed.
    """

    channels, native_size = 3, 32
    torchvision_class = torchvision.datasets.CIFAR10

    def _batch_files(self, train: bool) -> list[Path]:
        folder = self.root / self.torchvision_class.base_folder
        listed = self.torchvision_class.train_list if train else self.torchvision_class.test_list
        return [folder / name for name, _ in listed]

    def _expected_files(self) -> list[Path]:
        return [*self._batch_files(train=True), *self._batch_files(train=False)]

    def _read(self, train: bool) -> tuple[Tensor, Tensor]:
        batches = [_read_checked(path, _read_cifar_batch) for path in self._batch_files(train)]
        images, labels = zip(*batches)
        return torch.cat(images), torch.cat(labels)


def _read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    entry = safe_load(path, encoding="latin1")
    data = np.asarray(entry["data"])
    labels = torch.as_tensor(entry["labels"], dtype=torch.long)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"'data' is {data.dtype} of shape {data.shape}, not uint8 rows of 3072")
    if len(data) != len(labels):
        raise ValueError(f"{len(data)} images but {len(labels)} labels")
    _check_labels(labels)
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), labels


def read_idx(path: Path) -> Tensor:
    """An IDX file (LeCun's MNIST format, gzipped or not) as a uint8 tensor: magic ``0 0 8 ndim``, then
    ``ndim`` big-endian int32 sizes, then the bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError("not an IDX file of unsigned bytes (its magic number is not 0 0 8 ndim)")
    ndim = data[3]
    sizes = struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(sizes)):
        raise ValueError(f"it declares sizes {list(sizes)} ({int(np.prod(sizes))} bytes) but holds {body.size}")
    return torch.from_numpy(body.reshape(sizes).copy())


def _read_idx_images(path: Path) -> Tensor:
    images = read_idx(path)
    if images.ndim != 3:
        raise ValueError(f"images of shape {tuple(images.shape)}, not N x H x W")
    return images


def _read_idx_labels(path: Path) -> Tensor:
    labels = read_idx(path).long()
    _check_labels(labels)
    return labels


def _check_labels(labels: Tensor) -> None:
    if labels.ndim != 1 or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) <= 9):
        raise ValueError(f"labels of shape {tuple(labels.shape)} are not one class in [0, 9] per image")


def _read_checked(path: Path, reader: Callable[[Path], Read]) -> Read:
    """``reader(path)``, with any failure re-raised as a ValueError that names the corrupt file."""
    try:
        return reader(path)
    except Exception as error:
        raise ValueError(
            f"{path} is corrupt or not in the official format ({type(error).__name__}: {error}); "
            "delete it and set data.download=true, or replace it with the official file"
        ) from error
