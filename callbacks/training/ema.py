"""Lightning's EMA of the weights, started at step 0 when the run is shorter than its start.

``EMAWeightAveraging(update_starting_at_step=100)`` swaps the average in for validation; before step
100 the average is still the initial weights, so a run of fewer steps (``trainer=debug``: 4) would
validate, sample and test the untrained net and show nothing learned. ``ShortRunEMA`` compares the
start with the run's optimizer steps (``trainer.estimated_stepping_batches``) at fit start and, when
the run ends before it, starts averaging at step 0, saying so once and logging
``ema/starting_at_step``. Longer runs keep the configured start.
"""

from __future__ import annotations

import math
import sys

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.utilities import rank_zero_only


class ShortRunEMA(EMAWeightAveraging):
    """``EMAWeightAveraging`` whose ``update_starting_at_step`` becomes 0 in runs shorter than it."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        start = self.update_starting_at_step
        steps = trainer.estimated_stepping_batches
        if start and math.isfinite(steps) and steps <= start:
            say(
                f"EMA: this run has {int(steps)} optimizer steps, not more than update_starting_at_step={start}; "
                "the average starts at step 0 so that validation shows the trained weights"
            )
            self.update_starting_at_step = 0
        self.starting_at_step = self.update_starting_at_step or 0
        super().on_fit_start(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("ema/starting_at_step", float(self.starting_at_step), sync_dist=False)
        super().on_train_epoch_end(trainer, pl_module)


@rank_zero_only
def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
