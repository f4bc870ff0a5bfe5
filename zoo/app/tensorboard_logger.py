"""Lightning's TensorBoard logger with the scalar cards in the order a person reads them: the loss first.

TensorBoard's Time Series tab groups cards by the tag's first part and sorts the groups with a natural
sort that compares character codes (TensorBoard 2.21, ``compareTagNames``): with the zoo's names the
first cards were ``ema/starting_at_step`` (a flat 0) and ``epoch``, and the loss came after ``gen``,
``lr-*`` and the probes. This logger writes, to TensorBoard only:

- every loss curve in one group that sorts first, ``Loss``: ``train/loss_step`` as ``Loss/train_step``,
  ``val/loss`` as ``Loss/val``, ``test/loss`` as ``Loss/test`` (an upper-case letter sorts before every
  lower-case one);
- no plumbing: ``epoch`` (TensorBoard's axis is the step; the CSV logger keeps it) and ``ema/*`` (the
  EMA's start, in ``metrics.json``) are not written.

Everything else keeps its name, and ``metrics.json``, ``zoo.compare`` and the other loggers keep every
name as the methods and callbacks log it.
"""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

LOSS_GROUP = "Loss"
"""The group of the loss curves; it sorts before every lower-case group name."""

PLUMBING = ("epoch", "ema/")
"""Values that say how the run is driven, not how it learns: not written to TensorBoard."""


def tensorboard_tag(name: str) -> str | None:
    """The TensorBoard tag of a logged value: ``<stage>/loss<rest>`` as ``Loss/<stage><rest>``, the plumbing
    None, anything else unchanged."""
    if name == PLUMBING[0] or name.startswith(PLUMBING[1:]):
        return None
    stage, _, rest = name.partition("/")
    if rest.startswith("loss") and "/" not in rest:
        return f"{LOSS_GROUP}/{stage}{rest[len('loss'):]}"
    return name


def tag_in(logger: LightningTensorBoardLogger, name: str) -> str | None:
    """The tag ``logger`` writes ``name`` under: renamed by the zoo's logger, as it is by Lightning's."""
    return tensorboard_tag(name) if isinstance(logger, TensorBoardLogger) else name


class TensorBoardLogger(LightningTensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` writing the tags of ``tensorboard_tag``."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float | Tensor], step: int | None = None) -> None:
        tags = {tag: value for name, value in metrics.items() if (tag := tensorboard_tag(name)) is not None}
        if tags:
            super().log_metrics(tags, step)
