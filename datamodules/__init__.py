"""LightningDataModules yielding the zoo's batch dict; they import nothing from ``zoo``."""

from datamodules.base import BatchDictDataset, TensorSamples, ZooDataModule
from datamodules.digits import Digits
from datamodules.image_folder import ImageFolder
from datamodules.latents import Latents
from datamodules.manifold import Manifold
from datamodules.torchvision_sets import CIFAR10, MNIST, FashionMNIST

__all__ = [
    "CIFAR10",
    "MNIST",
    "BatchDictDataset",
    "Digits",
    "FashionMNIST",
    "ImageFolder",
    "Latents",
    "Manifold",
    "TensorSamples",
    "ZooDataModule",
]
