"""Checks of the composed config before anything is built: values of the wrong type, out of range or not
finite (``check_values``, by the table of ``zoo.app.config_ranges``), values left ``???``.

``trainer.max_steps=abc`` would otherwise fail deep inside Lightning (``'<' not supported between
'str' and 'int'``) and ``seed=abc`` inside ``seed_everything``, neither naming the key. An override
``a.b=value`` is checked against the annotation of argument ``b`` of the ``_target_`` of node ``a``
(``lightning.Trainer``'s ``max_steps: int``); top-level keys against ``TOP_LEVEL``. Types it cannot
judge (containers, classes, unannotated arguments) are left to the target. A key left ``???``
(``encoder=zoo`` without ``encoder.ckpt``) is named as the user sets it, not as the interpolation
that first reads it (``method.terms.align.encoder.ckpt``).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import inspect
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from zoo.app.config_ranges import RANGES
from zoo.app.configs import command_line, conf_dir, locate, overridden_keys

FILLED_BY_THE_RUN = ("shape", "num_classes")
"""Top-level ``???`` keys that ``zoo.app.train.build`` fills from the datamodule."""

TOP_LEVEL: dict[str, Any] = {
    "seed": int, "n": int, "sample_batch_size": int, "compile": bool, "test": bool, "print_config": bool
}
"""The types of the top-level keys of ``conf/config.yaml`` that take a plain value."""


TASKS = ("fit", "sample", "eval", "probe", "fid", "fid_reference", "extract_latents")
"""What ``task=`` takes: train (and validate, test), sample a checkpoint, evaluate a checkpoint, probe its features,
Inception metrics of a sample file, Inception statistics of a dataset, a dataset's latents to shards."""


def check_run(cfg: DictConfig) -> None:
    """Every check of a composed run config before anything is built: types, ``???`` values, ranges, the
    task, the folders it writes."""
    check_override_types(cfg)
    check_missing(cfg)
    check_values(cfg)
    task = cfg.get("task", "fit")
    if task not in TASKS:
        raise ValueError(f"task={task}: choose one of {', '.join(TASKS)}")
    check_writable(cfg)
    check_logger_packages(cfg)


LOGGER_EXTRAS = {"lightning.pytorch.loggers.WandbLogger": "wandb", "lightning.pytorch.loggers.MLFlowLogger": "mlflow"}
"""The loggers whose package is one of the zoo's extras (pyproject.toml), by ``_target_``: the extra's name is the
package's."""


def check_logger_packages(cfg: DictConfig) -> None:
    """A ValueError naming the extra to install for a logger whose package is missing, before anything is built."""
    loggers = cfg.get("logger")
    if loggers is not None and not isinstance(loggers, DictConfig):
        raise ValueError(
            f"logger is {loggers!r}, not a config group choice: pass logger={loggers} on the command line, or in an "
            f"experiment put '- override /logger: {loggers}' in its defaults list instead of 'logger: {loggers}'"
        )
    for key, node in (loggers or {}).items():
        extra = LOGGER_EXTRAS.get(node.get("_target_")) if node is not None else None
        if extra is not None and importlib.util.find_spec(extra) is None:
            raise ValueError(
                f"logger.{key} ({node._target_}) needs the package {extra}, which is not installed: "
                f'pip install -e ".[{extra}]" (or pip install {extra}), or choose another logger (logger=tensorboard)'
            )


def check_override_types(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """A ValueError for the first command-line value whose type the key's target or ``TOP_LEVEL`` refuses."""
    if overrides is None:
        overrides = command_line()
    for override in overrides:
        key, sep, text = override.lstrip("+").partition("=")
        if not sep or key.startswith(("hydra", "~")):
            continue
        expected, owner = expected_type(cfg, key)
        if expected is None:
            continue
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if OmegaConf.is_config(value) or fits(value, expected):
            continue
        raise ValueError(
            f"{key}={text}: {owner} takes {type_name(expected)}, got {type(value).__name__} {value!r}; "
            f"pass {key}=<{type_name(expected)}>"
        )


def expected_type(cfg: DictConfig, key: str) -> tuple[Any, str]:
    """The annotation of ``key`` and who declares it, or ``(None, "")`` when nothing does."""
    parent, _, name = key.rpartition(".")
    if not parent:
        return TOP_LEVEL.get(name), f"the top-level key {name}"
    node = OmegaConf.select(cfg, parent, throw_on_missing=False)
    target = node.get("_target_") if OmegaConf.is_dict(node) else None
    if not isinstance(target, str):
        return None, ""
    try:
        obj = locate(target)
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # an unimportable target or unresolvable annotations: the target judges
        return None, ""
    return hints.get(name), f"{target}({name}=...)"


def fits(value: Any, expected: Any) -> bool:
    """Whether ``value`` (as OmegaConf parsed it) can be of type ``expected``; unknown types fit."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in typing.get_args(expected))
    if origin is typing.Literal:
        return value in typing.get_args(expected)
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    return True


def type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in typing.get_args(expected))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(expected)))
    if expected is type(None):
        return "null"
    return getattr(expected, "__name__", str(expected))


def check_missing(cfg: DictConfig) -> None:
    """A ValueError naming the first ``???`` key the user must set (``encoder.ckpt``) and where it comes from."""
    for key in sorted(literal_missing(OmegaConf.to_container(cfg, resolve=False))):
        if key in FILLED_BY_THE_RUN:
            continue
        group = key.split(".", 1)[0]
        source = ""
        if HydraConfig.initialized() and HydraConfig.get().runtime.choices.get(group):
            source = f" (it is ??? in conf/{group}/{HydraConfig.get().runtime.choices.get(group)}.yaml, whose comment says what it takes)"
        raise ValueError(f"{key} has no value{source}: pass {key}=<value> on the command line")


def literal_missing(tree: object, prefix: str = "") -> list[str]:
    """The keys whose value is the literal ``???`` (interpolations are not followed)."""
    if isinstance(tree, dict):
        return [key for name, value in tree.items() for key in literal_missing(value, f"{prefix}{name}.")]
    if isinstance(tree, list):
        return [key for i, value in enumerate(tree) for key in literal_missing(value, f"{prefix}{i}.")]
    return [prefix[:-1]] if tree == "???" else []


def check_values(cfg: DictConfig) -> None:
    """A ValueError for the first value out of its range in ``RANGES``, or a NaN or infinity anywhere.

    Values that cannot be resolved yet (they read ``${shape}``, filled in when the data are built) are
    left to the build.
    """
    for key in leaf_keys(OmegaConf.to_container(cfg, resolve=False)):
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=True)
            if OmegaConf.is_dict(value):  # an interpolated node (``${net}``): its keys are checked where they live
                continue
            if OmegaConf.is_list(value):
                value = OmegaConf.to_container(value, resolve=True)
        except Exception:  # an interpolation of a value the run fills in later (``${shape}``)
            continue
        allowed = next((rule for pattern, rule in RANGES.items() if fnmatch.fnmatchcase(key, pattern)), None)
        if allowed is not None and not allowed.admits(value):
            means = f" ({allowed.means})" if allowed.means else ""
            raise ValueError(f"{key}={value}: {key}{means} takes {allowed.describe()}; pass {key}=<{allowed.describe()}>")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key}={value}: {key} takes a finite number (not NaN or an infinity); pass a number")


def leaf_keys(tree: object, prefix: str = "") -> list[str]:
    """The dotted keys of a tree's leaves (a list whose items are plain values is one leaf)."""
    if isinstance(tree, dict):
        return [key for name, value in tree.items() for key in leaf_keys(value, f"{prefix}{name}.")]
    if isinstance(tree, list) and any(isinstance(item, (dict, list)) for item in tree):
        return [key for i, value in enumerate(tree) for key in leaf_keys(value, f"{prefix}{i}.")]
    return [prefix[:-1]]


WRITTEN = ("paths.output_dir", "paths.cache_dir")
"""The folders a run writes into: checked for writability before anything is built."""


def check_writable(cfg: DictConfig) -> None:
    """A ValueError naming the first folder of ``WRITTEN`` that cannot be written (tried with a temporary file
    in it or, when it does not exist yet, in its nearest existing parent, which is left as it was)."""
    for key in WRITTEN:
        folder = OmegaConf.select(cfg, key, throw_on_missing=False, default=None)
        if folder is None:
            continue
        existing = Path(folder).absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            if not existing.is_dir():
                raise NotADirectoryError(f"{existing} is a file")
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            raise ValueError(
                f"{key}={folder} cannot be written ({error.strerror or error} at {existing}); pass {key}=<a folder "
                "you can write>"
            ) from None


def check_views(cfg: DictConfig, shape: Sequence[int]) -> None:
    """Vector data under views that the method (not the command line) asked for is refused as the method's
    need, so the fix named is other data, not dropping the views (every recipe of ``datamodules.views``
    augments images)."""
    views = cfg.data.get("views")
    if views is not None and "data.views" not in overridden_keys() and len(shape) != 3:
        raise ValueError(
            f"method={method_name(cfg)} trains on augmented views of images (its config sets data.views={views}), "
            f"but data={choice(cfg, 'data')} holds samples of shape {list(shape)}; use image data "
            "(data=digits, data=mnist, data=fashion_mnist, data=cifar10) or a method for vectors"
        )


SLOTS = ("net", "encoder", "guidance", "autoencoder")
"""The config slots a method reads by interpolation (``${net}``, ``${encoder}``, ...) when it takes them."""


def check_slots(cfg: DictConfig) -> None:
    """Refuse a ``net=`` or ``encoder=`` that nothing in the run reads, naming the methods that take one.

    A slot is taken by whatever interpolates it (the method's arguments, a loss term, a guidance
    reward); a slot set but never read would otherwise be ignored silently.
    """
    tree = OmegaConf.to_container(cfg, resolve=False)
    for slot in SLOTS:
        if tree.get(slot) is None:
            continue
        rest = json.dumps({key: value for key, value in tree.items() if key != slot})
        if "${" + slot + "}" in rest or "${" + slot + "." in rest:
            continue
        takers = methods_reading(slot)
        raise ValueError(
            f"method={method_name(cfg)} takes no {slot} (nothing in its config reads ${{{slot}}}), but "
            f"{slot}={choice(cfg, slot)} was given; drop it, or use a method that takes one: "
            f"{', '.join(f'method={name}' for name in takers) or '(none in conf/method)'}"
        )


def methods_reading(slot: str) -> list[str]:
    """The methods in ``conf/method`` whose config (or a preset's parent) interpolates ``${slot}``."""
    folder = conf_dir() / "method"
    texts = {path.stem: path.read_text() for path in folder.glob("*.yaml")}

    def reads(name: str, seen: frozenset[str] = frozenset()) -> bool:
        text = texts.get(name, "")
        if "${" + slot + "}" in text or "${" + slot + "." in text:
            return True
        parents = [line.strip()[2:].strip() for line in text.splitlines() if line.strip().startswith("- ")]
        return any(parent in texts and parent not in seen and reads(parent, seen | {name}) for parent in parents)

    return sorted(name for name in texts if reads(name))


def method_name(cfg: DictConfig) -> str:
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get("method"))
    return cfg.method.get("_target_", "?").rsplit(".", 1)[-1].lower()


def choice(cfg: DictConfig, group: str) -> str:
    if not OmegaConf.is_config(cfg.get(group)):
        return str(cfg.get(group))
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group))
    return cfg[group].get("_target_", "?").rsplit(".", 1)[-1]


def processes_per_run(trainer_cfg: DictConfig) -> int | None:
    """``trainer.devices * trainer.num_nodes`` when ``devices`` is a count or a list; None for ``auto``."""
    devices = trainer_cfg.get("devices", 1)
    count = len(devices) if OmegaConf.is_list(devices) else devices if isinstance(devices, int) else None
    return None if count is None or count < 0 else count * int(trainer_cfg.get("num_nodes", 1))


def check_launch(cfg: DictConfig) -> None:
    """Refuse the launches that would split one run over several folders or re-run a sweep per rank.

    Processes started one by one (each node, torchrun, srun) each resolve the default folder's
    timestamp on their own, so they would write to different folders and ``resume=auto`` would find
    different checkpoints on different ranks: they must be given the same ``hydra.run.dir``. In a
    multirun (``-m``), Lightning's DDP launcher would start each child with ``-m`` again, so a job of
    several processes needs ``hydra/launcher=slurm``, where SLURM starts the ranks. Lightning's own DDP
    children and submitit's jobs get the folder of the process that started them.
    """
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        processes = processes_per_run(cfg.trainer)
        if processes is not None and processes > 1 and os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
            raise ValueError(
                f"trainer.devices x trainer.num_nodes = {processes} processes in a multirun (-m): only "
                "hydra/launcher=slurm starts several processes per job; use it, or trainer.devices=1 in a "
                "local sweep, or run the multi-device job without -m"
            )
        return
    if any(o.startswith("hydra.run.dir=") for o in command_line("hydra")):
        return
    num_nodes = int(cfg.trainer.get("num_nodes", 1))
    reasons = {
        f"trainer.num_nodes={num_nodes}": num_nodes > 1,
        f"torchrun with WORLD_SIZE={os.environ.get('WORLD_SIZE')}": "TORCHELASTIC_RUN_ID" in os.environ
        and int(os.environ.get("WORLD_SIZE", 1)) > 1,
        f"srun with SLURM_NTASKS={os.environ.get('SLURM_NTASKS')}": int(os.environ.get("SLURM_NTASKS", 1)) > 1,
    }
    for reason, applies in reasons.items():
        if applies:
            raise ValueError(
                f"{reason}: the processes of this run are started separately and would each pick their own "
                "timestamped run folder; pass the same folder to all of them, e.g. "
                "hydra.run.dir=logs/<name>/<data>/<date>, or launch with -m hydra/launcher=slurm"
            )
