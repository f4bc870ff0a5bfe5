"""Memorization ratio: the share of generated samples that are near-copies of one training example.

A sample counts as memorized when its nearest training example is much closer than the second
nearest, ``d1 / d2 < threshold`` with Euclidean distances in the data space. The criterion and its
threshold 1/3 are those of Yoon, Choi, Kwon, Ryu, "Diffusion Probabilistic Models Generalize when
They Fail to Memorize" (ICML 2023 workshop), used again by Gu, Du, Pang, Li, Lin, Wang, "On
Memorization in Diffusion Models" (TMLR 2025, ``sail-sg/DiffMemorize:mem_ratio.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

MEMORIZATION_THRESHOLD = 1 / 3
"""``d1 / d2`` below which a sample is a copy (Yoon et al. 2023; Gu et al. 2025)."""


def two_nearest_distances(samples: Tensor, references: Tensor | Iterable[Tensor]) -> Tensor:
    """Distances ``n, 2`` from each sample to its nearest and second-nearest reference.

    ``references`` is one tensor or an iterable of batches (a whole training set streamed batch by
    batch); samples and references are flattened to vectors and compared in the Euclidean norm.
    """
    flat = samples.flatten(1).float()
    best = torch.full((len(flat), 2), float("inf"), device=flat.device)
    for batch in [references] if isinstance(references, Tensor) else references:
        distances = torch.cdist(flat, batch.to(flat.device).flatten(1).float())
        best = torch.cat([best, distances], dim=1).topk(2, dim=1, largest=False).values
    if torch.isinf(best[:, 1]).any():
        raise ValueError("the memorization ratio needs at least two reference (training) examples")
    return best


def memorization_ratio(
    samples: Tensor, references: Tensor | Iterable[Tensor], threshold: float = MEMORIZATION_THRESHOLD
) -> Tensor:
    """Share of ``samples`` with ``d1 < threshold * d2`` to ``references`` (Yoon et al. 2023; Gu et al. 2025).

    ``d1``, ``d2`` are the distances to the nearest and second-nearest reference. Written as a product,
    a sample equidistant to two identical references (``d1 = d2 = 0``) is not counted as memorized.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"memorization threshold={threshold} must be in (0, 1]; the usual value is 1/3")
    best = two_nearest_distances(samples, references)
    return (best[:, 0] < threshold * best[:, 1]).float().mean()
