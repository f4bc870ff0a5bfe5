"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), fully offline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datamodules.base import TensorSamples, ZooDataModule
from datamodules.splits import split_indices


class Digits(ZooDataModule):
    """Digits in [-1, 1], optionally resized to ``image_size`` (8, 16 or 32 px).

    The split is 80/10/10 train/val/test, deterministic by ``seed``; ``n_train`` keeps a random
    subset of the training split (the memorization studies use 5 or 50).
    """

    def __init__(self, image_size: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        if image_size not in (8, 16, 32):
            raise ValueError(f"data.image_size={image_size}: digits come in 8, 16 or 32 px; pick one of those")
        self.image_size = image_size
        self.shape = (1, image_size, image_size)
        self.num_classes = 10

    def _splits(self) -> tuple[Dataset, Dataset, Dataset]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x01 = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        if self.image_size != 8:
            x01 = F.interpolate(x01, size=self.image_size, mode="bilinear", antialias=False, align_corners=False)
            x01 = x01.clamp(0, 1)
        y = torch.tensor(digits.target, dtype=torch.long)
        return tuple(TensorSamples(x01[i], y[i]) for i in split_indices(len(y), self.seed))
