"""How many samples the generative metrics draw with ``n_samples=auto``: the default run's 5,000, fewer for a
shorter run.

The zoo's default run (``python run.py``: 30 epochs) measures its Fréchet distance on 5,000 samples. A
run of fewer epochs draws ``5,000 × max_epochs / 30``, rounded, and at least 500 (``trainer=debug``'s
1 epoch and a 2-epoch sweep job: 500), so a model trained for seconds is not scored for minutes; a run
of 30 epochs or more, or with no epoch limit (``max_epochs=-1``: ``max_steps`` bounds it), draws 5,000.
The rule reads only the configured epochs, never a measured time, so a figure is the same on every
machine; an explicit ``n_samples=<number>`` is used as given. In ``task=eval`` the trainer's
``max_epochs`` counts too (the default 30 unless given).
"""

from __future__ import annotations

AUTO = "auto"
"""The ``n_samples`` value that asks for this rule."""

FULL_SAMPLES = 5000
"""The default run's sample count."""

FULL_EPOCHS = 30
"""The default run's epochs (``conf/trainer/default.yaml``), from which on a run draws ``FULL_SAMPLES``."""

MIN_SAMPLES = 500
"""The fewest samples ``auto`` draws."""


def auto_sample_count(max_epochs: int | None) -> int:
    """The samples ``n_samples=auto`` draws for a run of ``max_epochs`` epochs (None or -1: no epoch limit)."""
    if max_epochs is None or max_epochs < 0 or max_epochs >= FULL_EPOCHS:
        return FULL_SAMPLES
    return max(MIN_SAMPLES, round(FULL_SAMPLES * max_epochs / FULL_EPOCHS))


def auto_reason(max_epochs: int | None) -> str:
    """Why ``auto`` chose its count, in a few words for the estimate line: ``"n_samples=auto: 2/30 epochs, at least 500"``."""
    if max_epochs is None or max_epochs < 0:
        return "n_samples=auto: no epoch limit"
    if max_epochs >= FULL_EPOCHS:
        return f"n_samples=auto: {max_epochs} epochs"
    return f"n_samples=auto: {max_epochs}/{FULL_EPOCHS} epochs, at least {MIN_SAMPLES:,}"
