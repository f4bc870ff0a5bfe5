"""Any error that reaches ``run.py`` as one paragraph naming the config key or file and the fix.

``describe(error)`` unwraps Hydra's and OmegaConf's wrappers (``InstantiationException``, a
composition error, a missing ``???`` value) to the key they name, turns the ``+key`` that Hydra
suggests for a misspelt key into the closest existing key (or into ``+key`` only when the target
really takes that argument), and says file-system errors with their path. What it does not know is
said as ``<type>: <message>``, still on one paragraph. ``run.py`` prints it and exits with 1; the
traceback is shown only under ``HYDRA_FULL_ERROR=1``.
"""

from __future__ import annotations

import difflib
import inspect
import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, InstantiationException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from zoo.app.command_line import pasteable
from zoo.app.configs import compose_run, locate


def describe(error: BaseException, overrides: list[str] | None = None) -> str:
    """One paragraph for ``error``; ``overrides`` (the command line) lets a misspelt key get a suggestion."""
    text = _describe(error, overrides or [])
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _describe(error: BaseException, overrides: list[str]) -> str:
    if type(error).__name__ == "OverrideParseException" or "Error parsing override" in str(error):
        return unparsable(error, overrides)
    if isinstance(error, InstantiationException):
        return instantiation(error)
    if isinstance(error, ConfigCompositionException):
        return composition(error, overrides)
    if isinstance(error, MissingMandatoryValue) or "MissingMandatoryValue" in type(error).__name__:
        return missing(error)
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"{key}: {first}" if key else first
    if isinstance(error, PermissionError):
        return (
            f"cannot write {error.filename} ({error.strerror}); run into a folder you can write, "
            "e.g. hydra.run.dir=<writable folder> or paths.log_dir=<writable folder>"
        )
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror or error}; check the path given on the command line or in the config"
    if isinstance(error, (ValueError, TypeError, KeyError, FileNotFoundError, RuntimeError, ArithmeticError)):
        return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return f"{type(error).__name__}: {error}"


def unparsable(error: BaseException, overrides: list[str]) -> str:
    """The override Hydra's parser cannot read, named, with its quoted form to paste instead."""
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except Exception:  # the parser's own exception: this is the override that fails
            key, _, value = override.partition("=")
            return (
                f"{key}: Hydra cannot parse the value {value!r} ({str(error).splitlines()[0]}); quote it for Hydra "
                f"(list items one by one), e.g. {pasteable(key, value)}"
            )
    return f"{type(error).__name__}: {error}"


def missing(error: BaseException) -> str:
    key = getattr(error, "full_key", None) or _full_key(str(error)) or "?"
    return f"{key} has no value (it is ??? in its config and must be given): pass {key}=<value> on the command line"


def instantiation(error: InstantiationException) -> str:
    """``Error in call to target 'x.Y': TypeError(...) full_key: k`` as the cause's message, its key named."""
    cause = error.__cause__
    text = str(error)
    key = _full_key(text)
    target = re.search(r"target '([^']+)'", text)
    if cause is None:
        return text
    if isinstance(cause, (MissingMandatoryValue, OmegaConfBaseException)) or "MissingMandatory" in type(cause).__name__:
        return _describe(cause, [])
    unexpected = re.search(r"unexpected keyword argument '([^']+)'", str(cause))
    if unexpected and target:
        return unknown_argument(f"{key}.{unexpected.group(1)}" if key else unexpected.group(1), target.group(1))
    where = f" (building {key}: {target.group(1)})" if key and target else ""
    message = str(cause) if isinstance(cause, (ValueError, FileNotFoundError)) else f"{type(cause).__name__}: {cause}"
    return f"{message}{where}"


def unknown_argument(key: str, target: str) -> str:
    """``key`` is not an argument of ``target``: the closest arguments it takes."""
    name = key.rsplit(".", 1)[-1]
    parameters = _parameters(target)
    close = difflib.get_close_matches(name, parameters, n=3, cutoff=0.6)
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    if close:
        hint = f"did you mean {' or '.join(parent + c for c in close)}?"
    else:
        hint = f"it takes {', '.join(parameters)}" if parameters else "check the spelling"
    return f"{key} is not an argument of {target}: {hint} (drop the key, or use one of its arguments)"


def composition(error: ConfigCompositionException, overrides: list[str]) -> str:
    """A misspelt key: the closest key of its node, or ``+key`` when the node's target takes that argument."""
    text = str(error)
    found = re.search(r"Could not override '([^']+)'", text)
    if not found or "not in struct" not in text + str(error.__cause__ or ""):
        cause = f" ({error.__cause__})" if error.__cause__ is not None else ""
        return text + cause
    key = found.group(1)
    parent, _, name = key.rpartition(".")
    node = _node_without(parent, key, overrides)
    if node is None:
        return f"{key} is not a key of the config: check its spelling (python run.py --cfg job prints every key)"
    target = node.get("_target_")
    if isinstance(target, str) and name in _parameters(target):
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "<value>")
        return f"{key} is not in the config but {target} takes it: add it with +{key}={value}"
    close = difflib.get_close_matches(name, [str(k) for k in node.keys()], n=3, cutoff=0.6)
    prefix = f"{parent}." if parent else ""
    hint = f"did you mean {' or '.join(prefix + c for c in close)}?" if close else "check its spelling"
    return f"{key} is not a key of the config: {hint} (python run.py --cfg job prints every key)"


def _node_without(parent: str, key: str, overrides: list[str]):
    """The config node ``parent`` composed from the other overrides, or None when that fails."""
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key and not o.startswith("hydra")]
    try:
        cfg = compose_run(rest)
    except Exception:  # the other overrides may be wrong too; then there is no suggestion
        return None
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return node if OmegaConf.is_dict(node) else None


def _full_key(text: str) -> str | None:
    found = re.search(r"full_key: (\S+)", text) or re.search(r"Missing mandatory value: (\S+)", text)
    return found.group(1) if found else None


def _parameters(target: str) -> list[str]:
    """The keyword arguments of the callable ``target`` (a dotted path); [] when it cannot be imported."""
    try:
        obj = locate(target)
        return [p for p in inspect.signature(obj).parameters if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
