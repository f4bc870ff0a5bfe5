"""What a weight matrix stores: its rows of largest norm, and each row's max cosine to the data points
(a DAE's rows that copy training images; ``callbacks.WeightGrid`` shows them).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def top_norm_rows(weight: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` rows of ``weight`` (units x input dim) with the largest L2 norm, largest first."""
    if not 1 <= k <= weight.shape[0]:
        raise ValueError(f"k={k} must be in [1, {weight.shape[0]}] (the number of weight rows)")
    return weight.detach().double().norm(dim=1).topk(k).indices


def max_cosine_to_data(rows: Tensor, data: Tensor) -> Tensor:
    """For each row ``k, D`` its largest cosine similarity to any sample of ``data`` ``N, D`` (float64).

    Zhang et al. (ICLR 2026, Fig. 4): ``max_n <w_k / |w_k|, x_n / |x_n|>``; data of any shape are flattened.
    """
    rows = F.normalize(rows.detach().double().flatten(1), dim=1)
    data = F.normalize(data.detach().double().flatten(1), dim=1)
    if rows.shape[1] != data.shape[1]:
        raise ValueError(f"rows have {rows.shape[1]} entries but data samples {data.shape[1]}; they must match")
    return (rows @ data.T).max(dim=1).values
