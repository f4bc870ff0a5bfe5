"""One run, one folder: a run never starts in a folder that holds another run's records.

A folder *holds a run* when it has ``run.json`` or ``metrics.json``, a checkpoint under
``checkpoints/``, or sub-runs with their own ``run.json`` (a study). Starting there without
``resume=`` would overwrite that run's records and leave its checkpoints beside a config that no
longer describes them, so it is refused, naming the folder and both ways out. ``OneRunPerFolder``
checks Hydra's run folder before Hydra writes ``.hydra/`` into it (Hydra's ``on_run_start``);
``check_fresh`` is the same check for a study's sub-runs, which ``zoo.app.train.fit`` starts itself. A
resumed run (``resume=``) keeps the first launch's ``.hydra/`` and writes its own config beside it, in
``.hydra/resumed-<time>/``.

Each run gets an id (``run_id``, a UUID) when it starts: written to ``run.json`` at once and stored
in every checkpoint's config, and kept when the run is resumed, so a checkpoint names the run it
belongs to (``zoo.app.resume.check_resume`` compares them).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from zoo.app.configs import base_overrides

RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "JSM_NAMESPACE_RANK")
"""Environment variables by which launchers (torchrun, SLURM, Lightning's DDP children) give a process its rank."""


class RunFolderTaken(ValueError):
    """A run would start in a folder that holds another run."""


def launched_as_rank_zero() -> bool:
    """Whether this process starts the run (rank 0 of every launcher), not a rank that joins it."""
    return all(os.environ.get(name, "0") in ("0", "") for name in RANK_VARIABLES)


def run_records(folder: str | Path) -> list[str]:
    """What in ``folder`` belongs to a run: ``run.json``, ``metrics.json``, checkpoints, sub-runs' records."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [name for name in ("run.json", "metrics.json") if (folder / name).is_file()]
    checkpoints = sorted((folder / "checkpoints").glob("*.ckpt"))
    if checkpoints:
        found.append(f"checkpoints/{checkpoints[0].name}" + (f" and {len(checkpoints) - 1} more" if len(checkpoints) > 1 else ""))
    subs = sorted(folder.glob("*/run.json"))
    if subs:
        found.append(f"sub-run {subs[0].parent.name}" + (f" and {len(subs) - 1} more" if len(subs) > 1 else ""))
    return found


def check_fresh(folder: str | Path, resume: Any, key: str = "hydra.run.dir") -> None:
    """Refuse to start a run in ``folder`` when it holds one and ``resume`` is not set; ``key`` sets the folder."""
    if resume not in (None, "", "none"):
        return
    found = run_records(folder)
    if found:
        raise RunFolderTaken(
            f"{folder} already holds a run ({', '.join(found)}); starting another there would overwrite its "
            f"records: start this run in a new folder ({key}=<new folder>, or no {key} for a timestamped one), "
            "or continue that run with resume=auto"
        )


def read_run_id(folder: str | Path) -> str | None:
    """The ``run_id`` in ``folder/run.json``, or None."""
    path = Path(folder) / "run.json"
    try:
        value = json.loads(path.read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def new_run_id() -> str:
    return uuid.uuid4().hex


def write_record(folder: str | Path, record: dict[str, Any]) -> None:
    """``run.json`` in ``folder``: the run's id and what names it in comparisons."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(record, indent=2))


class Escalated(BaseException):
    """Carries an error out of a Hydra callback: Hydra 1.3 turns a callback's ``Exception`` into a warning and
    goes on, but lets a ``BaseException`` through; ``run.py`` says ``error`` like any other."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class OneRunPerFolder(Callback):
    """Hydra callback: a single run (not a sweep's jobs, which get new folders) refuses a folder holding a run,
    before Hydra writes its ``.hydra/`` there. Registered in ``conf/hydra/default.yaml``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not launched_as_rank_zero():
            return
        HydraConfig.instance().set_config(config)  # the folder's ${hydra:...} parts resolve (run_job sets it too)
        folder = OmegaConf.select(config, "hydra.run.dir")
        try:
            check_fresh(folder, config.get("resume"))
        except RunFolderTaken as error:
            raise Escalated(error) from None
        if run_records(folder) and config.hydra.output_subdir is not None:
            with read_write(config.hydra), open_dict(config.hydra):  # a resumed run keeps the first launch's .hydra/ and records its own beside it
                config.hydra.output_subdir = f"{config.hydra.output_subdir}/resumed-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def run_info(cfg: DictConfig) -> dict[str, Any]:
    """What names the run in comparisons: method and data choices and every command-line override but Hydra's."""
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        choices = hydra_cfg.runtime.choices
        return {"method": choices.get("method"), "data": choices.get("data"), "overrides": base_overrides()}
    return {"method": cfg.method.get("_target_", "?").rsplit(".", 1)[-1].lower(), "data": "?", "overrides": []}
