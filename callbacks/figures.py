"""Figures for every logger: TensorBoard gets images, the others a PNG in the run folder.

``SampleGrid``, ``WeightGrid`` and ``NoiseLevelProbe`` draw a figure (an image grid ``C,H,W`` in
[0, 1], or a matplotlib ``Figure``). ``show`` adds it to every TensorBoard logger; when the trainer has
none (CSV, no logger), it is written to ``<folder>/figures/<tag>/<step>.png`` instead, the folder
being the first logger's ``log_dir`` (the run folder in the zoo) or ``trainer.default_root_dir``, and
the first time a notice says where.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import save_image

_noticed: set[str] = set()


def show(trainer: L.Trainer, tag: str, figure: Tensor | Figure, owner: str) -> None:
    """Log ``figure`` under ``tag`` at the trainer's global step (call on rank zero only)."""
    writers = [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
    for writer in writers:
        if isinstance(figure, Figure):
            writer.add_figure(tag, figure, trainer.global_step, close=False)
        else:
            writer.add_image(tag, figure, trainer.global_step)
    if writers:
        return
    root = next((Path(lg.log_dir) for lg in trainer.loggers if lg.log_dir is not None), Path(trainer.default_root_dir))
    path = root / "figures" / tag / f"{trainer.global_step}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(figure, Figure):
        figure.savefig(path, dpi=100)
    else:
        save_image(figure, path)
    if owner not in _noticed:
        _noticed.add(owner)
        print(
            f"{owner}: no TensorBoard logger takes its figures here, so they are written as PNG files under "
            f"{root / 'figures'}",
            file=sys.stderr,
            flush=True,
        )
