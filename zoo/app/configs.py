"""The zoo's configs: where they are, composing them as ``run.py`` does, and the command line they came from.

Where: ``conf/`` beside the packages in a checkout, the ``conf`` package in a wheel. A wheel ships
``conf/`` as the package ``conf`` (package data, see ``pyproject.toml``), which Hydra reads through its
``pkg://conf`` search path; a checkout (or an editable install) reads the folder itself, so edits to a
config apply without reinstalling.

Composing: ``compose_run`` (a study's sub-runs, an error's suggestion) and ``compose_as_run_py`` (tests,
benchmarks). The command line: ``command_line`` is the one reader of the overrides a run was started
with (``task``: the user's; ``hydra``: Hydra's own, ``hydra.searchpath=`` and ``hydra.run.dir=``).
``locate`` imports the callable a ``_target_`` names, for the checks that read its signature.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

CHECKOUT_CONF = Path(__file__).resolve().parents[1] / "conf"
PACKAGE = "conf"


def conf_dir() -> Path:
    """The folder holding ``config.yaml`` and the config groups."""
    if (CHECKOUT_CONF / "config.yaml").is_file():
        return CHECKOUT_CONF
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the zoo's configs are neither in {CHECKOUT_CONF} nor in an installed {PACKAGE} package; "
            "reinstall the zoo (pip install <wheel>, or pip install -e . in a checkout)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def hydra_config_path() -> str:
    """``config_path`` for ``hydra.main``: the checkout's folder, else the installed package."""
    return str(CHECKOUT_CONF) if (CHECKOUT_CONF / "config.yaml").is_file() else f"pkg://{PACKAGE}"


def command_line(kind: Literal["task", "hydra"] = "task") -> list[str]:
    """The overrides of the running Hydra job as typed (unresolved): the user's (``task``) or Hydra's own;
    [] outside Hydra."""
    if not HydraConfig.initialized():
        return []
    return list(OmegaConf.to_container(HydraConfig.get().overrides[kind], resolve=False))


def overridden_keys(prefix: str = "") -> list[str]:
    """The keys the user's overrides set (``+``/``~`` stripped), those under ``prefix`` when given."""
    keys = [override.split("=", 1)[0].lstrip("+~") for override in command_line()]
    return [key for key in keys if key.startswith(prefix)]


def search_path() -> list[str]:
    """The ``hydra.searchpath`` override the experiment was started with, if any."""
    return [o for o in command_line("hydra") if o.startswith("hydra.searchpath=")]


def base_overrides() -> list[str]:
    """The overrides the experiment was started with, less Hydra's own."""
    return [o for o in command_line() if not o.startswith("hydra.")]


def compose_run(overrides: Sequence[str]) -> DictConfig:
    """The run config for ``overrides``, composed like ``run.py`` composes it (no ``hydra`` node), with the
    experiment's own config search path (a user's ``hydra.searchpath=[file://my_confs]``)."""
    overrides = [*search_path(), *overrides]
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=overrides)
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def compose_as_run_py(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """The config ``run.py`` gets for ``overrides`` with its run folder at ``output_dir``, with Hydra's
    runtime (``${hydra:...}``, choices, overrides) set as under ``run.py``: for tests and benchmarks."""
    from zoo.app import batch_size

    batch_size.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"hydra.run.dir={output_dir}", f"paths.output_dir={output_dir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def locate(path: str) -> Callable:
    """The object a dotted ``_target_`` path names (a class, a function, or a method of a class)."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return getattr(locate(module), name)
