"""Improved precision and recall of a generative model (Kynkäänniemi et al., NeurIPS 2019).

Each set of feature vectors approximates its manifold by the union of balls around its points,
the radius of a point's ball being the distance to its k-th nearest neighbour in the same set
(Sec. 2, Eq. 1-2). Precision is the share of generated points inside the real manifold, recall
the share of real points inside the generated one (Eq. 3-4). The paper uses k = 3.
"""

from __future__ import annotations

import torch
from torch import Tensor

_ROWS_PER_CHUNK = 1024


def knn_radii(points: Tensor, k: int) -> Tensor:
    """Distance of each point to its k-th nearest neighbour among the others (Kynkäänniemi et al., Eq. 2).

    ``points`` is ``N, F``; the result is ``N``. The point itself (distance 0) is not counted.
    """
    if not 1 <= k < len(points):
        raise ValueError(
            f"k={k} nearest neighbours need 1 <= k < {len(points)} (the number of points); lower k"
        )
    radii = [
        torch.cdist(chunk, points).topk(k + 1, dim=1, largest=False).values[:, k]
        for chunk in points.split(_ROWS_PER_CHUNK)
    ]
    return torch.cat(radii)


def manifold_coverage(queries: Tensor, points: Tensor, radii: Tensor) -> Tensor:
    """Share of ``queries`` inside at least one ball ``|q - p| <= r_p`` (Kynkäänniemi et al. 2019, Eq. 1).

    ``queries`` is ``M, F``, ``points`` is ``N, F`` and ``radii`` is ``N``; the result is a scalar in [0, 1].
    """
    inside = [
        (torch.cdist(chunk, points) <= radii.unsqueeze(0)).any(dim=1)
        for chunk in queries.split(_ROWS_PER_CHUNK)
    ]
    return torch.cat(inside).float().mean()


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
    """``(precision, recall)`` of generated features ``fake`` against real features ``real`` (Eq. 3-4).

    Kynkäänniemi, Karras, Laine, Lehtinen, Aila, "Improved Precision and Recall Metric for Assessing
    Generative Models", NeurIPS 2019. Both inputs are ``N, F`` (any numbers of rows above ``k``).
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"precision_recall needs two feature matrices N,F of the same width, got {tuple(real.shape)} "
            f"and {tuple(fake.shape)}; flatten or embed the samples first"
        )
    real, fake = real.float(), fake.float()
    precision = manifold_coverage(fake, real, knn_radii(real, k))
    recall = manifold_coverage(real, fake, knn_radii(fake, k))
    return precision, recall
