"""Every option of every config group composes and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONF
from hydra.utils import instantiate
from lightning.pytorch.callbacks import WeightAveraging

from zoo.app.train import build

GROUPS = ["data", "method", "net", "encoder", "trainer", "callbacks", "logger", "experiment"]
# Options that need something from outside the config to instantiate (a checkpoint path).
NEEDS = {("encoder", "zoo"): "a checkpoint; built in tests/test_encoders.py"}
NEEDS[("method", "rae")] = "a frozen encoder with patch tokens; built in tests/test_rae.py"
NEEDS[("method", "repa")] = "a frozen encoder; built in tests/test_repa.py"
NEEDS[("method", "vavae")] = "a frozen encoder whose grid meets the latent's; built in tests/test_vae.py"
NEEDS[("data", "latents")] = "an autoencoder's extracted latents; built and trained on in tests/test_extracted_latents.py"
for _folder in ("cifar10", "imagenet256"):
    for _recipe in (CONF / "experiment" / _folder).glob("*.yaml"):
        NEEDS[("experiment", f"{_folder}/{_recipe.stem}")] = "data files and weights; run at tiny width in tests/test_recipes.py"
for _preset in (CONF / "net").glob("*.yaml"):
    if "defaults:" in _preset.read_text():
        NEEDS[("net", _preset.stem)] = "a named size preset; built at tiny width in tests/test_recipes.py"
if not torch.cuda.is_available():
    NEEDS[("trainer", "fsdp")] = "FSDP needs a GPU"


def options(group: str) -> list[str]:
    """The group's options; experiments in subfolders as ``<folder>/<name>`` (``experiment=fashion/moco``); other
    groups' subfolders are groups of their own (``method/time_sampler``)."""
    pattern = "**/*.yaml" if group == "experiment" else "*.yaml"
    return sorted(p.relative_to(CONF / group).with_suffix("").as_posix() for p in (CONF / group).glob(pattern))


CASES = [(group, option) for group in GROUPS for option in options(group)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_instantiates(group: str, option: str, make_config, tmp_path: Path) -> None:
    if (group, option) in NEEDS:
        pytest.skip(NEEDS[(group, option)])
    overrides = [f"{group}={option}"]
    if group == "data":
        overrides.append("method=dae")
    if (group, option) == ("encoder", "timm"):
        overrides.append("encoder.pretrained=false")
    if (group, option) == ("data", "image_folder"):
        overrides.append(f"data.root={write_image_folder(tmp_path / 'images')}")
    if group == "net":
        method = "moco" if option in ("resnet", "vit") else "diffusion"
        overrides += [f"method={method}", *(["data=manifold"] if option == "mlp" else ["data.image_size=16"])]
    cfg = make_config(*overrides)
    if group == "encoder":
        cfg.shape, cfg.num_classes = list(instantiate(cfg.data).shape), 10
        assert instantiate(cfg.encoder) is not None
        return
    built = build(cfg)
    assert built.method is not None and built.trainer is not None
    if group == "net":
        assert (built.method.backbone if method == "moco" else built.method.net) is not None


def write_image_folder(root: Path) -> Path:
    """Two classes of three tiny PNGs each."""
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (12, 12), (40 * i, 200 if label == "a" else 0, 90)).save(root / label / f"{i}.png")
    return root


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"


@pytest.mark.parametrize("method", ["diffusion", "jit", "moco", "dae"])
def test_callbacks_none_means_no_callback(method: str, make_config) -> None:
    cfg = make_config(f"method={method}", "callbacks=none")
    assert not cfg.callbacks
    trainer = build(cfg).trainer
    configured = [c for c in trainer.callbacks if type(c).__module__.startswith("callbacks.") or isinstance(c, WeightAveraging)]
    assert configured == []


def test_a_methods_own_callback_is_dropped_by_name(make_config) -> None:
    assert {"ema", "samples"} <= set(make_config("method=diffusion").callbacks)
    assert "ema" not in make_config("method=diffusion", "~callbacks.ema").callbacks
