"""Weighted k-nearest-neighbour accuracy on cosine similarity (Wu et al. 2018; DINO, Caron et al. 2021).

Each val feature votes with its ``k`` most similar train features (cosine similarity ``s``); a
neighbour adds ``exp(s / T)`` to the score of its class and the class with the largest score wins
(DINO's ``eval_knn.py`` protocol, k 20, T 0.07). ``callbacks.KNNProbe`` is the callback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from callbacks.features import labeled


def knn_accuracy(
    train_feats: Tensor,
    train_y: Tensor,
    val_feats: Tensor,
    val_y: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy of DINO's weighted cosine kNN vote (labels -1 are dropped), in float64.

    Uses ``min(k, number of labeled train samples)`` neighbours; ``num_classes`` defaults to one more
    than the largest label seen.
    """
    correct = knn_correct(train_feats, train_y, val_feats, val_y, k, temperature, num_classes, chunk_size)
    return correct.double().mean().item()


def knn_correct(
    train_feats: Tensor,
    train_y: Tensor,
    val_feats: Tensor,
    val_y: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    """Per labeled val sample, whether ``knn_accuracy``'s vote is right: a bool ``[N_val labeled]`` (for
    bootstrap intervals over the val images)."""
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be positive")
    train_feats, train_y = labeled(train_feats, train_y, "train", "knn_correct")
    val_feats, val_y = labeled(val_feats, val_y, "val", "knn_correct")
    classes = num_classes or int(max(train_y.max(), val_y.max())) + 1
    train_z = F.normalize(train_feats.double().cpu(), dim=1)
    train_y = train_y.cpu()
    neighbours = min(k, len(train_z))
    correct = []
    for start in range(0, len(val_feats), chunk_size):
        query = F.normalize(val_feats[start : start + chunk_size].double().cpu(), dim=1)
        similarity, index = (query @ train_z.T).topk(neighbours, dim=1)
        votes = F.one_hot(train_y[index], classes).double() * (similarity / temperature).exp().unsqueeze(-1)
        correct.append(votes.sum(1).argmax(1).eq(val_y[start : start + chunk_size].cpu()))
    return torch.cat(correct)
