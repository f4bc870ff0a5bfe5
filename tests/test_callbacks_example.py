"""``docs/callbacks_example.py`` runs, logs exactly the metric names ``docs/callbacks.md`` lists, and writes its
figures where that page says, under TensorBoard and under CSVLogger.

The names and places are read from the page's two tables, so the page and the example cannot drift apart.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import lightning as L
import pytest
import torch
from conftest import ROOT
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EXAMPLE = ROOT / "docs" / "callbacks_example.py"
DOC = ROOT / "docs" / "callbacks.md"
LOGGERS = ("tensorboard", "csv")
NOT_FROM_CALLBACKS = {"epoch", "hp_metric", "train/loss", "val/loss"}
"""Logged names that the page leaves out: the example model's own losses and Lightning's bookkeeping."""


def doc_table(heading: str) -> list[list[str]]:
    """The cells of the body rows of the first markdown table under ``## heading`` in the page."""
    section = DOC.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split(" | ") for line in section.splitlines() if line.startswith("|")]
    return rows[2:]


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def documented_metric_names() -> set[str]:
    return {name for row in doc_table("Metric names the example logs") for name in backticked(row[1])}


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("callbacks_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root for both runs, so the second reads the reference classifier from the first's cache."""
    return tmp_path_factory.mktemp("callbacks_example")


@pytest.fixture(scope="module", params=LOGGERS)
def fitted(request: pytest.FixtureRequest, example_root: Path) -> L.Trainer:
    return load_example().main(max_epochs=1, root=example_root, logger=request.param)


def logged_names(trainer: L.Trainer) -> set[str]:
    """The scalar names the run wrote: TensorBoard's scalar tags, or the columns of ``metrics.csv`` with a value."""
    log_dir = Path(trainer.logger.log_dir)
    if trainer.logger.__class__.__name__ == "TensorBoardLogger":
        events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
        events.Reload()
        return set(events.Tags()["scalars"])
    with open(log_dir / "metrics.csv") as file:
        return {key for row in csv.DictReader(file) for key, value in row.items() if value and key != "step"}


def test_the_example_logs_exactly_the_documented_metric_names(fitted: L.Trainer) -> None:
    documented = documented_metric_names()
    assert len(documented) > 60, "the page's metric table was not found or not parsed"
    assert logged_names(fitted) - NOT_FROM_CALLBACKS == documented


def test_figures_land_where_the_page_says(fitted: L.Trainer, example_root: Path) -> None:
    log_dir = Path(fitted.logger.log_dir)
    places = {"<log_dir>": str(log_dir), "<figure_dir>": str(log_dir), "<step>": str(fitted.global_step)}
    tensorboard = fitted.logger.__class__.__name__ == "TensorBoardLogger"
    if tensorboard:
        events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
        events.Reload()
        images = set(events.Tags()["images"])
    rows = doc_table("Where the figures land")
    assert len(rows) == 4, "the page's figure table was not found or not parsed"
    for callback, tensorboard_cell, csv_cell in rows:
        for place in backticked(tensorboard_cell if tensorboard else csv_cell):
            if place.startswith("<"):
                path = Path(re.sub(r"<\w+>", lambda match: places[match.group(0)], place))
                assert path.is_file(), (callback, place, sorted(p.name for p in path.parent.glob("*")))
            else:
                assert place in images, (callback, place, images)
    assert (log_dir / "figures").is_dir() != tensorboard, (
        "PNG figures are written exactly when TensorBoard is absent"
    )
    assert not (example_root / "figures").exists(), (
        "no figure goes to <default_root_dir>/figures under a logger"
    )


def test_checkpoints_hold_the_training_callbacks_state(fitted: L.Trainer) -> None:
    checkpoint = torch.load(Path(fitted.logger.log_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert {"RNGState", "ShortRunEMA"} <= set(checkpoint["callbacks"])
    assert len(checkpoint["callbacks"]["RNGState"]["ranks"]) == 1
