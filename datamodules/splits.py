"""Deterministic train/val/test index splits."""

from __future__ import annotations

import torch
from torch import Tensor


def split_indices(n: int, seed: int, val: float = 0.1, test: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded permutation of ``range(n)`` cut into train/val/test index tensors."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(n * val), round(n * test)
    n_train = n - n_val - n_test
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
