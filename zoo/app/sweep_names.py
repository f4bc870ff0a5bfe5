"""Sweep folders named by what the sweep varies, in a form any path and any Hydra override can hold.

``python run.py -m method.optimizer.lr=1e-3,3e-3 trainer.max_epochs=2`` puts its jobs in
``0_lr-0.001`` and ``1_lr-0.003`` under the sweep root: the job number, then ``<key>-<value>`` for
each swept key (its last dotted part, or as many parts as tell the swept keys apart), in the job's
override order. Constant overrides (``trainer.max_epochs=2``) are in every job, so they name none;
``run.json`` keeps every override. Values keep ``[A-Za-z0-9._+-]`` only (``/``, ``=``, ``,`` and the
rest become ``+``), so a folder pasted into ``ckpt=`` or ``resume=`` never meets Hydra's parser.

``run.py`` finds the swept keys on its command line (``record_swept_keys``) and hands them to the jobs
through ``ZOO_SWEPT_KEYS``, which every launcher passes on (local processes, submitit's SLURM jobs);
the config's ``hydra.sweep.subdir`` calls ``zoo_sweep_subdir`` for each job. Without the variable (a
launcher started by other code) the job's own overrides name it, less the run-folder paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

SWEPT_KEYS = "ZOO_SWEPT_KEYS"
"""The environment variable holding the swept keys, comma-separated."""

RESOLVER = "zoo_sweep_subdir"
"""The resolver ``conf/hydra/default.yaml`` names a sweep job's folder with."""

NOT_NAMES = ("hydra.", "paths.", "resume", "ckpt")
"""Keys that say where a run goes or what it continues: they never name a folder."""

VALUE_LENGTH = 40
"""The longest value kept in a folder name (the job number keeps longer ones apart)."""


def swept_keys(arguments: Sequence[str]) -> list[str]:
    """The keys a multirun command line sweeps (``a=1,2``, ``a=range(3)``, ``a=choice(x,y)``), in order."""
    overrides = [a for a in arguments if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra reports a malformed command line itself, with its own message
        return []
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def record_swept_keys(arguments: Sequence[str]) -> None:
    """Hand the swept keys of ``run.py``'s command line to its jobs (``ZOO_SWEPT_KEYS``)."""
    os.environ[SWEPT_KEYS] = ",".join(swept_keys(arguments))


def sweep_subdir(job_number: int, overrides: Sequence[str]) -> str:
    """``<job number>_<key>-<value>_...`` for the swept keys among a job's ``key=value`` overrides."""
    values = {}
    for override in overrides:
        key, _, value = str(override).partition("=")
        values[key.lstrip("+~")] = value
    recorded = os.environ.get(SWEPT_KEYS)
    keys = recorded.split(",") if recorded is not None else list(values)
    keys = [k for k in keys if k in values and not k.startswith(NOT_NAMES)]
    names = short_names(keys)
    parts = [f"{names[key]}-{path_safe(values[key])}" for key in keys]
    return "_".join([str(job_number), *parts])


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Each key's shortest dotted suffix that no other key shares (``method.optimizer.lr`` -> ``lr``)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
                break
        out[key] = suffix
    return out


def path_safe(value: str) -> str:
    """``value`` with every character but ``[A-Za-z0-9._+-]`` as ``+``, cut to ``VALUE_LENGTH``."""
    return re.sub(r"[^A-Za-z0-9._+-]", "+", value)[:VALUE_LENGTH] or "none"


def register() -> None:
    """Make ``${zoo_sweep_subdir:${hydra.job.num},${hydra.overrides.task}}`` resolvable (once per process)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, lambda num, overrides: sweep_subdir(int(num), list(overrides)))
