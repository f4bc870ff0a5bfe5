"""LightningDataModules yielding the zoo's batch dict; they import nothing from ``zoo``."""

from datamodules.base import BatchDictDataset, TensorSamples, ZooDataModule
from datamodules.digits import Digits

__all__ = ["BatchDictDataset", "Digits", "TensorSamples", "ZooDataModule"]
