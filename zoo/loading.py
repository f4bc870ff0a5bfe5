"""``load_method``: the one way back from a zoo checkpoint to its method, weights only.

A zoo checkpoint is Lightning's (``state_dict`` and the loops' state) plus what ``Method`` adds on
save: ``zoo_config`` (the run's resolved config, ``shape`` filled in) and ``zoo_version``
(``CHECKPOINT_FORMAT``). The file is read with ``torch.load(weights_only=True)``, so no pickle in it can
run code, and its ``zoo_config`` may build only registered classes (``zoo.stored_config.check_stored``,
before anything is built), so no config in it can either; the method is rebuilt from ``zoo_config`` by
``build_method`` and its weights loaded strictly. Each way a file can fail is one ``ValueError`` (``FileNotFoundError`` when there is
no file) that names the setting, the file and what was expected.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError
from torch import nn

from zoo.stored_config import check_stored

CHECKPOINT_FORMAT = 2
"""The layout of a zoo checkpoint (``zoo_version``): ``zoo_config`` (the resolved run config) beside
Lightning's ``state_dict``. Raise it when that layout changes, with the key map of the old layout in
``RENAMED``; ``load_method`` reads the versions there and refuses others."""

RENAMED: dict[int, dict[str, str]] = {1: {"autoencoder.": "space.autoencoder.", "latent_norm.": "space.norm."}}
"""Per old format, the state-dict key prefixes it wrote and what they are now (format 2 moved a latent
diffusion model's autoencoder and statistics into its ``LatentSpace``)."""

SHOWN_KEYS = 3
"""How many state-dict keys a mismatch message names of each kind."""

UNSAFE = re.compile(r"GLOBAL|Trying to call reduce|Can only (create|build)|persistent_load")
"""What torch's weights-only unpickler says when it refuses an object (rather than a damaged stream)."""


@dataclass(frozen=True)
class Has:
    """``expect=Has("backbone")``: the method has a callable attribute ``name`` (a submodule or a method)."""

    name: str

    def __call__(self, method: nn.Module) -> bool:
        return callable(getattr(method, self.name, None))


Expectation = type | tuple[type, ...] | Callable[[nn.Module], bool]
"""What ``expect=`` takes: a class or tuple of classes (``isinstance``), or a predicate such as ``Has``."""


def load_method(
    path: str | Path, expect: Expectation | None = None, expected: str | None = None, setting: str = "ckpt"
) -> nn.Module:
    """The method a zoo checkpoint was saved from, with its weights, in eval mode, on the CPU.

    ``expect`` says what kind of method the caller needs and ``expected`` says it in words for the
    error (by default it is derived from ``expect``); ``setting`` is the config key the path came
    from (``encoder.ckpt``, ...), named in every error. The returned method's ``run_config`` is the
    checkpoint's ``zoo_config``.
    """
    path = Path(path)
    where = f"{setting}={path}"
    wanted = expected or describe(expect)
    check_file(path, where, wanted)
    checkpoint = read_weights_only(path, where)
    if not isinstance(checkpoint, dict) or "zoo_config" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{where} is not a zoo checkpoint (it lacks zoo_config or state_dict); expected {wanted}")
    state_dict = current_state_dict(checkpoint, where)
    config = checkpoint["zoo_config"]
    check_stored(config, where, build="method")
    method = build_method(OmegaConf.create(config))
    if expect is not None and not satisfies(method, expect):
        raise ValueError(f"{where} is a {type(method).__name__} checkpoint, which {failure(expect)}; expected {wanted}")
    load_state_dict_strictly(method, state_dict, where)
    method.run_config = config
    return method.eval()


def current_state_dict(checkpoint: dict[str, Any], where: str) -> dict:
    """The checkpoint's state dict in this format's key names: a format of ``RENAMED`` has its keys renamed;
    another version is refused naming it."""
    version = checkpoint.get("zoo_version")
    readable = {CHECKPOINT_FORMAT, *RENAMED}
    if version not in readable:
        saved = "no format version (it predates them)" if version is None else f"format version {version}"
        raise ValueError(
            f"{where} is a zoo checkpoint of {saved}, but this zoo reads format version "
            f"{' or '.join(str(v) for v in sorted(readable))}; load it with the zoo that wrote it, or retrain the "
            "run with this one"
        )
    renames = RENAMED.get(version, {})
    out = {}
    for key, value in checkpoint["state_dict"].items():
        old = next((prefix for prefix in renames if key.startswith(prefix)), None)
        out[key if old is None else renames[old] + key[len(old):]] = value
    return out


def check_file(path: Path, where: str, wanted: str) -> None:
    """A clear error when ``path`` is no file: missing, or a folder (the checkpoints in it named)."""
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*.ckpt"))[:3]
        hint = f"e.g. {', '.join(found)}" if found else "there is no .ckpt file in it"
        raise ValueError(f"{where} is a folder, not a checkpoint file: pass the .ckpt file itself ({hint})")
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such checkpoint file; expected {wanted}")


LEGACY_MAGIC = bytes.fromhex("8002")
"""How a file of torch's legacy (pre-1.6, not zip) serialization starts: a protocol-2 pickle."""


def read_weights_only(path: Path, where: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, its failures said in one line without a traceback."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head == LEGACY_MAGIC:
            raise ValueError(
                f"{where} is in torch's legacy serialization format (before torch 1.6, not a zip archive), "
                "which the zoo does not read; zoo runs write zip archives: pass a checkpoint written by a zoo run, "
                "or, if you trust the file, load it yourself without weights-only and save it again with torch.save"
            )
        raise ValueError(
            f"{where} is not a PyTorch checkpoint archive: the file is truncated, empty or of another kind; "
            "pass a run's checkpoints/last.ckpt, or save the run again if that file is damaged"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if UNSAFE.search(str(error)) is None:
            raise damaged(where, error) from None
        found = re.search(r"GLOBAL (\S+)", str(error))
        named = f" ({found.group(1)})" if found else ""
        raise ValueError(
            f"{where} holds objects other than tensors and plain containers{named}; loading it could run code, "
            "so it is refused for safety: pass a checkpoint written by a zoo run"
        ) from None
    except Exception as error:  # reading a zip archive fails otherwise only when it is damaged
        raise damaged(where, error) from None


def damaged(where: str, error: Exception) -> ValueError:
    """The one error for an archive whose contents cannot be read; torch's own text would advise unsafe loading."""
    return ValueError(
        f"{where} is damaged (truncated or corrupted: {type(error).__name__}); pass an intact checkpoint, "
        "e.g. the run's checkpoints/last.ckpt, or save the run again"
    )


def load_state_dict_strictly(method: nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """``method.load_state_dict(state_dict)``, its mismatches counted and a few named."""
    mismatch = weight_mismatch(method.state_dict(), state_dict)
    if mismatch:
        raise ValueError(
            f"{where}: its weights do not fit the method rebuilt from its zoo_config ({mismatch}); "
            "the checkpoint was changed after saving, or the method's code changed since: retrain the run"
        )
    method.load_state_dict(state_dict)


def weight_mismatch(own: Mapping[str, torch.Tensor], weights: Mapping[str, Any]) -> str | None:
    """How ``weights`` fail to fit a module whose state dict is ``own`` (``"2 missing: a, b; 1 of another
    shape: c"``, a few keys of each kind named), or None when they fit."""
    missing, unexpected = own.keys() - weights.keys(), weights.keys() - own.keys()
    reshaped = [key for key in own.keys() & weights.keys() if getattr(weights[key], "shape", None) != own[key].shape]
    parts = [
        summary(keys, label)
        for keys, label in ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape"))
        if keys
    ]
    return "; ".join(parts) or None


def summary(keys: Collection[str], label: str) -> str:
    """``"2 missing: a.weight, a.bias"``, naming at most ``SHOWN_KEYS`` keys."""
    keys = sorted(keys)
    more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return f"{len(keys)} {label}: {', '.join(keys[:SHOWN_KEYS])}{more}"


def satisfies(method: nn.Module, expect: Expectation) -> bool:
    if isinstance(expect, (type, tuple)):
        return isinstance(method, expect)
    return bool(expect(method))


def classes(expect: type | tuple[type, ...]) -> str:
    return " or ".join(c.__name__ for c in (expect if isinstance(expect, tuple) else (expect,)))


def describe(expect: Expectation | None) -> str:
    """What ``expect`` asks for, in words: the default ``expected`` of ``load_method``."""
    if expect is None:
        return "the checkpoint of a zoo run, e.g. a run's checkpoints/last.ckpt"
    if isinstance(expect, (type, tuple)):
        return f"the checkpoint of a {classes(expect)}"
    if isinstance(expect, Has):
        return f"the checkpoint of a method with a {expect.name}"
    return f"the checkpoint of a method that passes {getattr(expect, '__name__', repr(expect))}"


def failure(expect: Expectation) -> str:
    """Why a method fails ``expect``, as the end of "... is a DAE checkpoint, which ..."."""
    if isinstance(expect, (type, tuple)):
        return f"is not a {classes(expect)}"
    if isinstance(expect, Has):
        return f"has no {expect.name}"
    return f"fails {getattr(expect, '__name__', repr(expect))}"


def build_method(cfg: DictConfig) -> nn.Module:
    """The method of a config whose ``shape`` is filled in.

    A method takes its net and frozen encoder through its own config (``net: ${net}``,
    ``encoder: ${encoder}``), so nothing is injected here; a net whose config reads a geometry the
    data do not have fails first with a message naming the nets that fit.
    """
    if cfg.get("net") is not None:
        check_net_fits(cfg)
    return instantiate(cfg.method)


def check_net_fits(cfg: DictConfig) -> None:
    """Resolve ``cfg.net``: a clear error when it reads a geometry (``${shape.1}``) the data do not have."""
    try:
        OmegaConf.to_container(cfg.net, resolve=True)
    except InterpolationKeyError as error:
        kind = "vectors" if len(cfg.shape) == 1 else "images"
        hint = "net=mlp" if kind == "vectors" else "an image net (net=unet, net=dit, net=jit_vit)"
        raise ValueError(
            f"net={cfg.net._target_.rsplit('.', 1)[-1]} does not fit data of shape {list(cfg.shape)} ({kind}): "
            f"{error.msg.splitlines()[0]}; use {hint}"
        ) from None
