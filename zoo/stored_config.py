"""What a config read from a file may build: the zoo's own library classes and a short list of others.

A zoo checkpoint carries its run's resolved config (``zoo_config``), and ``load_method`` rebuilds the
method from it with Hydra's ``instantiate``. Hydra builds whatever importable callable a ``_target_``
names, with nested ``_target_``s as its arguments, so a file that passes ``torch.load(weights_only=True)``
(dicts and strings only) could still name ``builtins.open`` or ``pathlib.Path.write_text`` and run them.
``check_stored`` closes that: before anything is built it walks the whole stored tree and refuses

- any ``_target_``, at any depth, that is not *registered*: a public class or function defined in the
  zoo's library packages (``REGISTERED_PACKAGES``: methods, nets, loss terms, diffusion schedules and time
  samplers, encoders, rewards, schedules of the optimizer, datamodules), a ``torch.optim`` optimizer or
  learning-rate scheduler class, a ``timm.optim`` optimizer class, or one of ``LIBRARY``;
- any interpolation (``${...}``), trusted or not: stored configs are saved resolved, and a resolver
  could rebuild a refused target from a string.

The target is judged by its text and by the object it names, which must be defined in a registered
package (``zoo.methods.base.torch.save`` is refused: ``torch.save`` is not defined there). Only modules
of the registered packages are ever imported to judge a target. A user who trusts a file lifts the
target check for the run with ``trust_checkpoint=true`` (``trusting``); the pickle stays weights-only.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

REGISTERED_PACKAGES = (
    "zoo.methods",
    "zoo.nets",
    "zoo.terms",
    "zoo.diffusion",
    "zoo.encoders",
    "zoo.rewards",
    "zoo.optim",
    "datamodules",
)
"""The packages whose public classes and functions a stored config may build."""

LIBRARY = frozenset({"functools.partial"})
"""Targets outside the zoo that stored configs may name (besides ``torch.optim`` optimizers and schedulers)."""

OPTIMIZER_MODULES = {
    "torch.optim": torch.optim.Optimizer,
    "torch.optim.lr_scheduler": torch.optim.lr_scheduler.LRScheduler,
    "timm.optim": torch.optim.Optimizer,
}
"""Library modules whose classes of the given base are allowed: ``torch.optim.AdamW``, ``...lr_scheduler.LambdaLR``,
``timm.optim.Lars`` (solo-learn's MoCo v3 recipe)."""

TRUSTED: ContextVar[bool] = ContextVar("trust_checkpoint", default=False)
"""Whether the user passed ``trust_checkpoint=true`` for this run (set by ``trusting``)."""


class UnsafeConfig(ValueError):
    """A stored config names code the zoo does not build from files."""


@contextmanager
def trusting(trust: bool) -> Iterator[None]:
    """Within the block, stored configs may name any target (``trust_checkpoint=true``)."""
    token = TRUSTED.set(bool(trust))
    try:
        yield
    finally:
        TRUSTED.reset(token)


def in_packages(name: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in REGISTERED_PACKAGES)


def registered(target: str) -> bool:
    """Whether a stored config may build ``target`` (see the module)."""
    if target in LIBRARY:
        return True
    module_name, _, name = target.rpartition(".")
    if not name or name.startswith("_"):
        return False
    if module_name in OPTIMIZER_MODULES:
        found = getattr(importlib.import_module(module_name), name, None)
        return inspect.isclass(found) and issubclass(found, OPTIMIZER_MODULES[module_name])
    if not in_packages(module_name):
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    found = getattr(module, name, None)
    if not (inspect.isclass(found) or inspect.isfunction(found)):
        return False
    return in_packages(getattr(found, "__module__", "") or "")


def nodes(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every node of a plain tree of dicts and lists, depth first."""
    yield prefix, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from nodes(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from nodes(value, f"{prefix}.{i}" if prefix else str(i))


def check_stored(config: Any, source: str, build: str | None = None) -> None:
    """Refuse a stored ``config`` that holds an interpolation, or whose subtree ``build`` (the whole tree when
    None) names a ``_target_`` that is not registered; ``source`` names the file in the message."""
    for key, value in nodes(config):
        if isinstance(value, str) and "${" in value:
            raise UnsafeConfig(
                f"{source}: its stored config holds an interpolation at {key} ({value[:80]!r}); zoo runs store "
                "their config resolved, so this file was written or edited by something else: it is refused and "
                "nothing was built; re-save the checkpoint from its run"
            )
    if TRUSTED.get():
        return
    tree = config if build is None else config.get(build) if isinstance(config, dict) else None
    for key, value in nodes(tree, build or ""):
        if not isinstance(value, dict) or "_target_" not in value:
            continue
        target = value["_target_"]
        if not isinstance(target, str) or not registered(target):
            raise UnsafeConfig(
                f"{source}: its stored config names {key}._target_={target!r}, which is not a class the zoo builds "
                f"from files (the public classes of {', '.join(REGISTERED_PACKAGES)}, torch.optim's optimizers "
                "and schedulers, timm.optim's optimizers, functools.partial); the file is refused and nothing was built. If you trust "
                "this file and its code, pass trust_checkpoint=true"
            )


def build_stored(config: dict, key: str, source: str) -> Any:
    """``instantiate(config[key])`` for a stored run ``config``, after ``check_stored`` passed on it."""
    check_stored(config, source, build=key)
    return instantiate(OmegaConf.create(config)[key])
