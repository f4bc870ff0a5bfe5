"""The range of every numeric config key the zoo owns or passes on to Lightning, in one table.

``RANGES`` maps a key pattern (``fnmatch``: ``*`` spans dots, so ``*.lr`` is every learning rate) to
``Allowed``: the kind of number, its bounds, the extra values it takes (``-1`` for "no limit"), and
whether ``null`` is allowed. ``zoo.app.config_checks.check_values`` applies it to the composed config
before anything is built, and refuses NaN and infinities wherever a number stands; the message names
the key, the value, what is allowed and the fix. Checks that need more than one value (a queue size
that is a multiple of the batch size, a net that fits the data) stay with the class that knows them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SEED_MAX = 2**32 - 1
"""The largest seed numpy and ``seed_everything`` take."""


@dataclass(frozen=True)
class Allowed:
    """Numbers of ``kind`` (``int``, ``float``; None: no number but ``also``) in ``[low, high]`` (an end in ``open`` excluded), or one of
    ``also``, or null when ``nullable``; ``lists`` also takes a list of such numbers; ``means`` says what the
    key is, for the message."""

    kind: type | None = float
    low: float | None = None
    high: float | None = None
    open: tuple[str, ...] = ()
    also: tuple[Any, ...] = ()
    nullable: bool = False
    lists: bool = False
    means: str = ""

    def admits(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if any(value == other and type(value) is type(other) for other in self.also):
            return True
        if self.lists and isinstance(value, (list, tuple)):
            return len(value) > 0 and all(self.admits(item) for item in value)
        if self.kind is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or ("low" in self.open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or ("high" in self.open and value == self.high)))

    def describe(self) -> str:
        """``"an integer >= 1"``, ``"-1 or an integer >= 1"``, ``"null or a number in [0, 1]"``, ..."""
        extras = [repr(v) if isinstance(v, str) else str(v) for v in self.also] + (["null"] if self.nullable else [])
        if self.kind is None:
            return "one of " + ", ".join(extras)
        noun = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if "low" in self.open else "[", ")" if "high" in self.open else "]"
            text = f"{noun} in {left}{fmt(self.low)}, {fmt(self.high)}{right}"
        elif self.low is not None:
            text = f"{noun} {'>' if 'low' in self.open else '>='} {fmt(self.low)}"
        elif self.high is not None:
            text = f"{noun} {'<' if 'high' in self.open else '<='} {fmt(self.high)}"
        else:
            text = noun
        if self.lists:
            text += " (or a list of them)"
        return " or ".join([*extras, text])


def fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


COUNT = Allowed(int, low=1)
PROBABILITY = Allowed(float, low=0, high=1)
POSITIVE = Allowed(float, low=0, open=("low",))
NON_NEGATIVE = Allowed(float, low=0)

PRECISIONS = (64, 32, 16, "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed",
              "bf16-mixed", "transformer-engine", "transformer-engine-float16")
"""Lightning's ``Trainer(precision=...)`` values."""

RANGES: dict[str, Allowed] = {
    # The top level (conf/config.yaml).
    "seed": Allowed(int, low=0, high=SEED_MAX),
    "n": Allowed(int, low=1, means="how many samples task=sample draws"),
    "sample_batch_size": Allowed(int, low=1, means="task=sample's batch"),
    "probe.layer": Allowed(int, low=0, nullable=True, means="the block task=probe reads"),
    "probe.t": Allowed(float, low=0, high=1, nullable=True, means="task=probe's noise level (1 = data)"),
    "probe.draws": Allowed(int, low=1, means="noise draws task=probe averages"),
    "probe.k": Allowed(int, low=1, means="task=probe's kNN neighbours"),
    "probe.temperature": Allowed(float, low=0, open=("low",), means="task=probe's kNN temperature"),
    "probe.weight_decay": Allowed(float, low=0, means="task=probe's linear-probe weight decay"),
    "probe.max_iter": Allowed(int, low=1, means="task=probe's linear-probe iterations"),
    "fid.batch_size": Allowed(int, low=1, means="images per Inception batch of task=fid"),
    "latents.shard_size": Allowed(int, low=1, means="rows per shard of task=extract_latents"),
    "latents.batch_size": Allowed(int, low=1, means="images per encoder batch of task=extract_latents"),
    "study_jobs": Allowed(int, low=1, means="how many of a study's runs fit side by side"),
    # Lightning's trainer, as the zoo passes it on.
    "trainer.max_steps": Allowed(int, low=1, also=(-1,)),
    "trainer.max_epochs": Allowed(int, low=1, also=(-1,), nullable=True),
    "trainer.min_steps": Allowed(int, low=0, nullable=True),
    "trainer.min_epochs": Allowed(int, low=0, nullable=True),
    "trainer.accumulate_grad_batches": COUNT,
    "trainer.gradient_clip_val": Allowed(float, low=0, nullable=True),
    "trainer.check_val_every_n_epoch": Allowed(int, low=1, nullable=True),
    "trainer.log_every_n_steps": COUNT,
    "trainer.num_nodes": COUNT,
    "trainer.num_sanity_val_steps": Allowed(int, low=0, also=(-1,)),
    "trainer.limit_*_batches": Allowed(float, low=0, nullable=True),
    "trainer.val_check_interval": Allowed(float, low=0, open=("low",), nullable=True),
    "trainer.precision": Allowed(None, also=PRECISIONS),
    "trainer.devices": Allowed(int, low=1, also=(-1, "auto"), lists=True),
    # Optimizers and schedules, wherever they are.
    "*.optimizer.lr": POSITIVE,
    "*.optimizer.weight_decay": NON_NEGATIVE,
    "*.scheduler.warmup_steps": Allowed(int, low=0),
    # Net sizes (the nets' own configs and the copies methods hold of them).
    "net.width": COUNT,
    "net.depth": COUNT,
    "net.heads": COUNT,
    "net.num_heads": COUNT,
    "net.hidden": COUNT,
    "net.patch_size": COUNT,
    "net.mlp_ratio": POSITIVE,
    "net.num_classes": Allowed(int, low=0),
    # Methods.
    "method.hidden": Allowed(int, low=1, nullable=True),
    "method.dim": COUNT,
    "method.label_dropout": PROBABILITY,
    "method.embed_t": PROBABILITY,
    "method.temperature": POSITIVE,
    "method.momentum": PROBABILITY,
    "method.queue_size": COUNT,
    "method.sampler.steps": COUNT,
    "method.sampler.eta": PROBABILITY,
    "method.sampler.shift": POSITIVE,
    "method.sampler.guidance": NON_NEGATIVE,
    "method.sampler.interval": Allowed(float, low=0, high=1, lists=True),
    "method.sampler.refine_k": Allowed(int, low=0),
    "method.sampler.refine_tau": PROBABILITY,
    "method.sampler.refine_fraction": PROBABILITY,
    "method.terms.*.weight": NON_NEGATIVE,
    # Sampling-time reward guidance.
    "guidance.scale": NON_NEGATIVE,
    "guidance.best_of": COUNT,
    # Data.
    "data.batch_size": COUNT,
    "data.image_size": Allowed(int, low=1, nullable=True),
    "data.probe_size": Allowed(int, low=1, nullable=True),
    "data.crop_min": Allowed(float, low=0, high=1, open=("low",), nullable=True),
    "data.num_workers": Allowed(int, low=0),
    "data.n_train": Allowed(int, low=1, nullable=True),
    "data.train_repeats": COUNT,
    # Callbacks.
    "callbacks.generative.n_samples": Allowed(int, low=2, also=("auto",), means="how many samples the generative metrics draw"),
    "callbacks.generative.batch_size": COUNT,
    "callbacks.generative.interval": Allowed(float, low=0, high=1, open=("low", "high")),
    "callbacks.ema.decay": PROBABILITY,
}
"""Key pattern -> what it takes. The first pattern that matches a key decides."""
