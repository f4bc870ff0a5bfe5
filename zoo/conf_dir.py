"""Where the zoo's configs are: ``conf/`` beside the packages in a checkout, the ``conf`` package in a wheel.

A wheel ships ``conf/`` as the package ``conf`` (package data, see ``pyproject.toml``), which
Hydra reads through its ``pkg://conf`` search path; a checkout (or an editable install) reads the
folder itself, so edits to a config apply without reinstalling.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
