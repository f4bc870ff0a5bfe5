"""Timestep and class-label embeddings shared by the denoiser nets.

The timestep embedding is DiT's (Peebles & Xie 2023, Sec. 3.2, after Vaswani et al. 2017 and
DDPM): a sinusoidal embedding of ``1000 * t`` followed by a two-layer SiLU MLP. The label
embedding is a table of ``num_classes + 1`` rows whose last row is the "null" class that
classifier-free guidance (Ho & Salimans 2022) drops labels to.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """``[cos(t f_k), sin(t f_k)]`` with ``f_k = max_period^(-k / (dim/2))`` (Vaswani et al. 2017, Sec. 3.5).

    ``t`` is a float tensor ``[B]`` (fractional values allowed); returns ``[B, dim]``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def batch_time(t: Tensor, batch: int) -> Tensor:
    """The noise level as a float tensor ``[batch]``: a 0-d ``t`` is broadcast, a ``[batch]`` one is kept."""
    if t.dim() == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t has shape {tuple(t.shape)}: pass one noise level per sample, shape ({batch},)")
    return t


class TimestepEmbedding(nn.Module):
    """DiT's timestep embedder: ``MLP(sinusoidal(scale * t))`` to ``width`` (Peebles & Xie 2023, Sec. 3.2).

    ``t`` is the schedule's ``c_noise`` (roughly in [0, 1]); ``scale`` = 1000 puts it on the
    integer-step range the sinusoid's frequencies were designed for.
    """

    def __init__(self, width: int, frequency_dim: int = 256, scale: float = 1000.0) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, width), nn.SiLU(), nn.Linear(width, width))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, t: Tensor) -> Tensor:
        freq = sinusoidal_embedding(self.scale * t, self.frequency_dim)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


def null_labels(y: Tensor | None, num_classes: int, batch: int, device: torch.device) -> Tensor:
    """Labels for a ``num_classes + 1`` table: None and negative labels (unlabeled, -1) become the null class.

    The null class is index ``num_classes``; a label above it raises ValueError.
    """
    if y is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    if y.shape != (batch,):
        raise ValueError(f"y has shape {tuple(y.shape)}: pass one class label per sample, shape ({batch},)")
    if bool((y > num_classes).any()):
        raise ValueError(
            f"y holds label {int(y.max())} but net.num_classes={num_classes}: labels must lie in "
            f"[0, {num_classes}] ({num_classes} is the null class); "
            "set net.num_classes to the data's class count"
        )
    return torch.where(y < 0, torch.full_like(y, num_classes), y.long())


def drop_labels(y: Tensor | None, p: float) -> Tensor | None:
    """Classifier-free guidance's label dropout (Ho & Salimans 2022, Alg. 1): each label becomes -1, which the
    nets read as the null class, with probability ``p``.

    One uniform is drawn per label even at ``p = 0``, so the random stream does not depend on ``p``.
    """
    if y is None:
        return None
    dropped = torch.rand(y.shape, device=y.device) < p
    return torch.where(dropped, torch.full_like(y, -1), y)


class LabelEmbedding(nn.Module):
    """A ``num_classes + 1`` embedding table; row ``num_classes`` is the null class (Ho & Salimans 2022).

    ``forward(y, batch)``: y None means the null class for every sample; negative labels (the batch
    contract's -1 for unlabeled samples) also map to the null class.
    """

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"net.num_classes={num_classes}: a label embedding needs at least one class")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, width)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, y: Tensor | None, batch: int) -> Tensor:
        return self.table(null_labels(y, self.num_classes, batch, self.table.weight.device))
