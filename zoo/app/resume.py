"""Resuming a run folder, and stopping one on a signal, without surprises.

``resume=auto`` takes the checkpoint of the run folder with the highest training step (its
``global_step``), among ``checkpoints/*.ckpt`` (``last.ckpt``, ``last-v1.ckpt``, ``step*.ckpt``)
and Lightning's SLURM preemption checkpoints ``hpc_ckpt_*.ckpt``. Lightning's own
``ckpt_path="last"`` picks the newest file by modification time, which copying a run folder rewrites,
so a copied folder would resume from a stale ``last.ckpt``; the step in the file does not change.
With nothing to resume it says so in one line and starts from step 0. ``resume=null`` (the default)
passes no path, so Lightning's SLURM auto-requeue (``hpc_ckpt_*.ckpt``, found by Lightning) works
unchanged.

Before training, the chosen checkpoint is read weights-only and checked against the run: the same
run (its ``run_id`` is the run folder's, when the folder has one), the same method (a ``dae`` checkpoint
is not resumed as ``diffusion``), the same identity-defining config (``IDENTITY``: method, net, data,
seed, encoder, autoencoder; a checkpoint of ``seed=0`` is not continued as ``seed=1``), weights of the
same names and shapes,
and the same optimizer and schedule (any ``method.*optimizer*`` or ``*scheduler*`` key). Lightning
restores the optimizer's and scheduler's state from the checkpoint, learning rate included, so an
override of those keys would be silently ignored: it is refused, naming the key.

A run stopped by SIGTERM (Lightning ends the loops cleanly) or SIGINT raises ``Interrupted``: one
line naming the last checkpoint and the command that resumes, and exit code 143 or 130.
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from zoo.app.command_line import pasteable
from zoo.loading import (
    CHECKPOINT_FORMAT,
    RENAMED,
    check_file,
    current_state_dict,
    read_weights_only,
    weight_mismatch,
)

RESUME_SENSITIVE = ("optimizer", "scheduler")
"""Config keys whose value Lightning takes from the checkpoint, not the config, on resume."""


class Interrupted(Exception):
    """A run stopped by a signal: ``str`` is the one line to print, ``exit_code`` 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def candidates(output_dir: str | Path) -> list[Path]:
    """The run folder's checkpoint files: ``checkpoints/*.ckpt`` and ``hpc_ckpt_*.ckpt``."""
    folder = Path(output_dir)
    return sorted([*(folder / "checkpoints").glob("*.ckpt"), *folder.glob("hpc_ckpt_*.ckpt")])


def checkpoint_step(path: Path) -> int | None:
    """The ``global_step`` saved in ``path`` (memory-mapped, weights only), None when it cannot be read."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a damaged or foreign file: not a candidate
        return None
    step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
    return int(step) if isinstance(step, int) else None


def newest_checkpoint(output_dir: str | Path) -> tuple[Path, int] | None:
    """``(path, step)`` of the run folder's checkpoint with the highest step (then ``last*``, then the newest
    file), or None."""
    found = []
    for path in candidates(output_dir):
        step = checkpoint_step(path)
        if step is None:
            say(f"resume: skipping {path}, which is not a readable checkpoint")
            continue
        found.append((step, path.name.startswith("last"), path.stat().st_mtime, path))
    if not found:
        return None
    step, _, _, path = max(found)
    return path, step


def resume_path(resume: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint ``trainer.fit`` continues from: ``auto`` (see the module), a path, or None."""
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        newest = newest_checkpoint(output_dir)
        if newest is None:
            say(f"resume=auto: no checkpoint in {output_dir} (checkpoints/*.ckpt or hpc_ckpt_*.ckpt); starting from step 0")
            return None
        say(f"resume=auto: continuing from {newest[0]} (step {newest[1]})")
        return str(newest[0])
    check_file(Path(resume), f"resume={resume}", "a .ckpt path, or resume=auto")
    return str(resume)


def check_resume(path: str, method: L.LightningModule, setting: str, folder_run_id: str | None = None) -> None:
    """Refuse a checkpoint of another run (``folder_run_id``, the run folder's own id, differs from the
    checkpoint's), of another method, config (``IDENTITY``), weights, optimizer or schedule."""
    where = setting if setting == f"resume={path}" else f"{setting} ({path})"
    checkpoint = read_weights_only(Path(path), where)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{where} is not a Lightning checkpoint (it has no state_dict); pass a run's checkpoints/last.ckpt")
    saved = checkpoint.get("zoo_config") or {}
    current = getattr(method, "run_config", None) or {}
    saved_target = (saved.get("method") or {}).get("_target_")
    target = (current.get("method") or {}).get("_target_")
    if saved_target and target and saved_target != target:
        raise ValueError(
            f"{where} is a checkpoint of {saved_target}, but this run builds {target}; resume with the method "
            "the checkpoint was trained with, or start a new run folder without resume="
        )
    saved_id = saved.get("run_id")
    if folder_run_id and isinstance(saved_id, str) and saved_id != folder_run_id:
        raise ValueError(
            f"{where} belongs to run {saved_id}, but this run folder is run {folder_run_id} (its run.json): "
            "resume=auto continues only the folder's own run; start a new run folder without resume=, or pass "
            "the checkpoint of this folder's run"
        )
    differing = identity_changes(saved, current)
    if differing:
        shown = "; ".join(f"{key}: {old!r} in the checkpoint, {new!r} now" for key, (old, new) in list(differing.items())[:4])
        more = f" (and {len(differing) - 4} more)" if len(differing) > 4 else ""
        raise ValueError(
            f"{where} is a checkpoint of another run: {', '.join(differing)} differ ({shown}{more}); resume with "
            "the command of the run that wrote it (its run.json and .hydra/config.yaml), or start a new run "
            "folder without resume="
        )
    version = checkpoint.get("zoo_version")
    if version in RENAMED and current_state_dict(checkpoint, where).keys() != checkpoint["state_dict"].keys():
        raise ValueError(
            f"{where} is of format version {version}, whose weight names this zoo renamed (format {CHECKPOINT_FORMAT}): "
            "it loads for task=sample, task=eval and as an encoder or teacher, but Lightning cannot resume it; "
            "start a new run folder without resume="
        )
    mismatch = weight_mismatch(method.state_dict(), checkpoint["state_dict"])
    if mismatch:
        raise ValueError(
            f"{where}: its weights do not fit this run's method ({mismatch}); resume with the config the "
            "checkpoint was trained with (its .hydra/config.yaml), or start a new run folder without resume="
        )
    for key, (old, new) in changed_keys(saved.get("method") or {}, current.get("method") or {}, "method").items():
        raise ValueError(
            f"{key}={new} differs from the checkpoint's {key}={old} ({path}): a resumed run restores the "
            "checkpoint's optimizer and schedule, so the new value would be ignored; drop the override to "
            "continue, or start a new run folder without resume= to train with it"
        )


IDENTITY = ("method", "net", "data", "seed", "encoder", "autoencoder")
"""The config keys that make a run the run it is: a resumed checkpoint must agree on all of them."""

NOT_IDENTITY = ("root", "data_dir", "cache_dir", "num_workers", "download", "pin_memory", "persistent_workers")
"""Keys under ``IDENTITY`` that say where things are or how they load, not what the run is."""


def identity_changes(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, current)}`` of the identity-defining values that differ (optimizer and schedule keys,
    which ``changed_keys`` names with their own advice, left out); empty when either config is missing."""
    if not saved or not current:
        return {}
    out: dict[str, tuple[Any, Any]] = {}
    for top in IDENTITY:
        flat_saved, flat_current = _flat(saved.get(top), top), _flat(current.get(top), top)
        for key in sorted(flat_saved.keys() | flat_current.keys()):
            parts = key.split(".")
            if parts[-1] in NOT_IDENTITY or any(word in part for part in parts for word in RESUME_SENSITIVE):
                continue
            if flat_saved.get(key) != flat_current.get(key):
                out[key] = (flat_saved.get(key), flat_current.get(key))
    return out


def changed_keys(saved: Any, current: Any, prefix: str) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, current)}`` for the optimizer and schedule keys that differ between two configs."""
    out: dict[str, tuple[Any, Any]] = {}
    flat_saved, flat_current = _flat(saved, prefix), _flat(current, prefix)
    for key in sorted(flat_saved.keys() | flat_current.keys()):
        parts = key.split(".")
        if not any(word in part for part in parts for word in RESUME_SENSITIVE) or parts[-1] == "_partial_":
            continue
        if flat_saved.get(key) != flat_current.get(key):
            out[key] = (flat_saved.get(key), flat_current.get(key))
    return out


def _flat(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}.{key}"))
        return out
    return {prefix: tree}


def stored_run_id(path: str | None) -> str | None:
    """The ``run_id`` in the config of the checkpoint at ``path`` (None for no path, or a checkpoint without one)."""
    if path is None:
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # check_resume names what is wrong with the file
        return None
    config = checkpoint.get("zoo_config") if isinstance(checkpoint, dict) else None
    run_id = config.get("run_id") if isinstance(config, dict) else None
    return run_id if isinstance(run_id, str) else None


def fit(
    trainer: L.Trainer, method: L.LightningModule, datamodule: L.LightningDataModule, cfg: DictConfig, path: str | None
) -> None:
    """``trainer.fit`` from the checkpoint ``path`` that ``resume_path`` chose (and ``check_resume`` passed),
    weights only; a signal becomes ``Interrupted``."""
    try:
        trainer.fit(method, datamodule=datamodule, ckpt_path=path, weights_only=True)
    except SIGTERMException:
        raise interrupted(signal.SIGTERM, trainer, cfg) from None
    except SystemExit as stop:  # Lightning's answer to Ctrl-C (KeyboardInterrupt) is sys.exit(1)
        if trainer.interrupted:
            raise interrupted(signal.SIGINT, trainer, cfg) from None
        raise stop


def interrupted(signum: signal.Signals, trainer: L.Trainer, cfg: DictConfig) -> Interrupted:
    """The one line of a run stopped by ``signum``: where it stopped, its last checkpoint, how to resume."""
    output_dir = str(cfg.paths.output_dir)
    newest = newest_checkpoint(output_dir)
    saved = f"last checkpoint {newest[0]} (step {newest[1]})" if newest else "no checkpoint was written yet"
    kept = [a for a in sys.argv[1:] if not a.startswith(("hydra.run.dir=", "resume="))]
    program = "zoo-run" if Path(sys.argv[0]).name == "zoo-run" else "python run.py"
    command = " ".join([shlex.join([*program.split(), *kept]), pasteable("hydra.run.dir", output_dir), "resume=auto"])
    return Interrupted(
        f"interrupted by {signum.name} at step {trainer.global_step}: {saved}; resume with: {command}", int(signum)
    )


@rank_zero_only
def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
