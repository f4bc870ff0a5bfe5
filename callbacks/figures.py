"""Figures for every logger: TensorBoard, W&B and MLflow get images, the others a PNG in the run folder.

``SampleGrid``, ``WeightGrid`` and ``NoiseLevelProbe`` draw a figure (an image grid ``C,H,W`` in
[0, 1], or a matplotlib ``Figure``). ``show`` adds it to every logger that takes images: TensorBoard
(``add_image``, ``add_figure``), W&B (``WandbLogger.log_image``) and MLflow (``MlflowClient.log_image``,
a time-stepped image of the run), each at the trainer's global step. When the trainer has none of them
(CSV, no logger), it is written to ``<folder>/figures/<tag>/<step>.png`` instead, the folder being the
first logger's ``log_dir`` (the run folder in the zoo) or ``trainer.default_root_dir``, and the first
time a notice says where. wandb and mlflow are imported by their loggers, never here: the callbacks work
without them.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor
from torchvision.utils import save_image

_noticed: set[str] = set()


def show(trainer: L.Trainer, tag: str, figure: Tensor | Figure, owner: str) -> None:
    """Log ``figure`` under ``tag`` at the trainer's global step (call on rank zero only)."""
    writers = [(write, lg) for lg in trainer.loggers for kind, write in WRITERS.items() if isinstance(lg, kind)]
    for write, lg in writers:
        write(lg, tag, figure, trainer.global_step)
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
            f"{owner}: no TensorBoard, W&B or MLflow logger takes its figures here, so they are written as PNG "
            f"files under {root / 'figures'}",
            file=sys.stderr,
            flush=True,
        )


def to_tensorboard(logger: TensorBoardLogger, tag: str, figure: Tensor | Figure, step: int) -> None:
    """``figure`` as a TensorBoard image (a matplotlib figure rendered by TensorBoard's ``add_figure``)."""
    if isinstance(figure, Figure):
        logger.experiment.add_figure(tag, figure, step, close=False)
    else:
        logger.experiment.add_image(tag, figure, step)


def to_wandb(logger: WandbLogger, tag: str, figure: Tensor | Figure, step: int) -> None:
    """``figure`` as an image of the W&B run's history, at ``trainer/global_step`` ``step``."""
    logger.log_image(tag, [picture(figure)], step=step)


def to_mlflow(logger: MLFlowLogger, tag: str, figure: Tensor | Figure, step: int) -> None:
    """``figure`` as a time-stepped image of the MLflow run (written before it returns), its key the tag with
    ``_`` for the characters MLflow refuses in a key (it takes ASCII letters, digits, ``_ - . /`` and spaces)."""
    key = re.sub(r"[^a-zA-Z0-9_\-./ ]", "_", tag)
    logger.experiment.log_image(logger.run_id, picture(figure), key=key, step=step, synchronous=True)


def picture(figure: Tensor | Figure) -> Image.Image:
    """``figure`` as a PIL image: a grid ``C,H,W`` in [0, 1] rounded to 8 bits as ``save_image`` does, a
    matplotlib figure rendered to PNG at the DPI of the PNG files."""
    if isinstance(figure, Figure):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        buffer.seek(0)
        return Image.open(buffer)
    pixels = figure.detach().cpu().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
    return Image.fromarray(pixels.squeeze(-1).numpy() if pixels.shape[-1] == 1 else pixels.numpy())


WRITERS: dict[type[Logger], Callable[..., None]] = {
    TensorBoardLogger: to_tensorboard,
    WandbLogger: to_wandb,
    MLFlowLogger: to_mlflow,
}
"""The loggers that take figures, and how each is given one."""
