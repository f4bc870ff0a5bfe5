"""The two protocols through which callbacks talk to a module, the data protocol for probes, and the
protocol of a feature net that trains itself on the data.

Any LightningModule with an ``embed`` method can be probed, any with ``sample`` can be evaluated
as a generator; nothing else about the module is assumed, so the callbacks work in any project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.utils.data import DataLoader


@runtime_checkable
class Embeds(Protocol):
    def embed(self, x: Tensor, **kw) -> Tensor:
        """Features ``B,F`` of a batch ``x``; diffusion models also take ``t=`` (noise level)."""


@runtime_checkable
class Samples(Protocol):
    def sample(self, n: int, **kw) -> Tensor:
        """``n`` generated samples in the data's space and range ([-1, 1])."""


@runtime_checkable
class ProbeData(Protocol):
    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        """Clean, labeled, unaugmented ``(train, val)`` loaders of batch dicts."""


@runtime_checkable
class FitsToData(Protocol):
    def fit_to(self, data: ProbeData, device: torch.device | str = "cpu", cache_dir: str | Path | None = None) -> None:
        """Train (or load from ``cache_dir``) a net built without data, before its first use on ``data``."""
