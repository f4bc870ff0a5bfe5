"""The Inception Score (Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016, Sec. 4).

``IS = exp(E_x KL(p(y|x) || p(y)))`` with ``p(y|x)`` the Inception's softmax over its 1008 classes and ``p(y)``
the mean of those over the samples. As in the ADM evaluator (after improved-gan's code), the samples are
cut into consecutive parts of ``split_size`` (5,000), the score computed on each and averaged.
"""

from __future__ import annotations

import torch
from torch import Tensor


def inception_score(logits: Tensor, split_size: int = 5000) -> float:
    """Salimans et al. 2016: the mean over parts of ``split_size`` rows of ``exp(mean KL(p(y|x) || p(y)))``."""
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"the Inception Score reads logits N,classes, got shape {tuple(logits.shape)}")
    scores = []
    for part in logits.double().split(split_size):
        log_p = part.log_softmax(dim=1)
        log_marginal = log_p.exp().mean(0, keepdim=True).log()
        kl = (log_p.exp() * (log_p - log_marginal)).sum(1).mean()
        scores.append(kl.exp())
    return float(torch.stack(scores).mean())
