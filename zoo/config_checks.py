"""Checks of the composed config before anything is built: values of the wrong type, values left ``???``.

``trainer.max_steps=abc`` would otherwise fail deep inside Lightning (``'<' not supported between
'str' and 'int'``) and ``seed=abc`` inside ``seed_everything``, neither naming the key. An override
``a.b=value`` is checked against the annotation of argument ``b`` of the ``_target_`` of node ``a``
(``lightning.Trainer``'s ``max_steps: int``); top-level keys against ``TOP_LEVEL``. Types it cannot
judge (containers, classes, unannotated arguments) are left to the target. A key left ``???``
(``encoder=zoo`` without ``encoder.ckpt``) is named as the user sets it, not as the interpolation
that first reads it (``method.terms.align.encoder.ckpt``).
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from zoo.errors import locate

FILLED_BY_THE_RUN = ("shape", "num_classes")
"""Top-level ``???`` keys that ``zoo.train.build`` fills from the datamodule."""

TOP_LEVEL: dict[str, Any] = {"seed": int, "n": int, "sample_batch_size": int, "compile": bool, "test": bool}
"""The types of the top-level keys of ``conf/config.yaml`` that take a plain value."""


def check_override_types(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """A ValueError for the first command-line value whose type the key's target or ``TOP_LEVEL`` refuses."""
    if overrides is None:
        overrides = OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False) if HydraConfig.initialized() else []
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
