"""Every method with every net and encoder: the pairs it takes train a step; the others are refused
before training with a message that names the fix."""

from __future__ import annotations

import pytest
from conftest import CONF
from hydra.errors import InstantiationException

from zoo.app.train import build

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
# The base nets; the named size presets (net=dit_b, unet_ddpmpp, ...) are the same classes, run in tests/test_recipes.py.
NETS = sorted(p.stem for p in (CONF / "net").glob("*.yaml") if "defaults:" not in p.read_text())
ENCODERS = sorted(p.stem for p in (CONF / "encoder").glob("*.yaml"))
ONE_STEP = ["trainer=debug", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "callbacks=none"]

# (method, net) -> the data it runs on; every other pair is refused with the message below.
TAKES = {
    ("consistency", "unet"): "digits",
    ("consistency", "dit"): "digits",
    ("consistency", "dit_dh"): "digits",
    ("consistency", "jit_vit"): "digits",
    ("consistency", "mlp"): "manifold",
    ("diffusion", "unet"): "digits",
    ("diffusion", "dit"): "digits",
    ("diffusion", "dit_dh"): "digits",
    ("diffusion", "jit_vit"): "digits",
    ("diffusion", "mlp"): "manifold",
    ("jit", "unet"): "digits",
    ("jit", "dit"): "digits",
    ("jit", "dit_dh"): "digits",
    ("jit", "jit_vit"): "digits",
    ("jit", "mlp"): "manifold",
    ("lightningdit", "unet"): "digits",
    ("lightningdit", "dit"): "digits",
    ("lightningdit", "dit_dh"): "digits",
    ("lightningdit", "jit_vit"): "digits",
    ("lightningdit", "mlp"): "manifold",
    ("moco", "resnet"): "digits",
    ("moco", "vit"): "digits",
    ("repa", "dit"): "digits",
    ("repa", "dit_dh"): "digits",
    ("repa", "jit_vit"): "digits",
}
REFUSED_NET = {
    "consistency": "is not a denoising net",
    "dae": "method=dae takes no net (nothing in its config reads ${net})",
    "diffusion": "is not a denoising net",
    "jit": "is not a denoising net",
    "lightningdit": "is not a denoising net",
    "moco": "MoCo needs a backbone that returns pooled features",
    "rae": "method=rae takes no net (nothing in its config reads ${net})",
    "repa": "aligns the token hidden states of a transformer denoiser",
    "vae": "method=vae takes no net (nothing in its config reads ${net})",
    "vavae": "method=vavae takes no net (nothing in its config reads ${net})",
}
# What a method needs besides its net (REPA: a frozen encoder).
METHOD_ARGS = {"repa": ["encoder=random"]}
# (method, encoder) pairs that train a step, with their extra arguments; every other pair is refused.
ENCODER_TAKES = {("repa", "random"): [], ("repa", "timm"): ["encoder.pretrained=false", "encoder.input_size=32"]}
# VA-VAE aligns its latent grid to an encoder stage's grid (stage 2: 4x4 at 8 px for the random ResNet, at 32 px for timm's).
ENCODER_TAKES.update({
    ("vavae", "random"): ["method.terms.vf.stage=2"],
    ("vavae", "timm"): ["encoder.pretrained=false", "encoder.input_size=32", "method.terms.vf.stage=2"],
})
# (method, encoder) pairs refused with their own message: RAE needs a grid of patch tokens that tiles the image.
ENCODER_REFUSED = {
    ("rae", "random"): "its pooled output alone, no patch tokens",
    ("rae", "timm"): "7x7 token grid does not tile the 8 px image",
    ("rae", "zoo"): "encoder.ckpt=unused.ckpt: no such checkpoint file",
    ("vavae", "zoo"): "encoder.ckpt=unused.ckpt: no such checkpoint file",
}
ENCODER_ARGS = {"zoo": ["encoder.ckpt=unused.ckpt"], "timm": ["encoder.pretrained=false"], "random": []}
NET_PAIRS = [(method, net) for method in METHODS for net in NETS]
ENCODER_PAIRS = [(method, encoder) for method in METHODS for encoder in ENCODERS]


def refusal(overrides: list[str], make_config) -> str:
    with pytest.raises((ValueError, InstantiationException)) as caught:
        build(make_config(*overrides))
    return str(caught.value)


@pytest.mark.parametrize(("method", "net"), NET_PAIRS, ids=[f"{m}-{n}" for m, n in NET_PAIRS])
def test_method_with_net(method: str, net: str, make_config) -> None:
    if (method, net) in TAKES:
        data = f"data={TAKES[method, net]}"
        built = build(make_config(f"method={method}", f"net={net}", data, *METHOD_ARGS.get(method, []), *ONE_STEP))
        built.trainer.fit(built.method, datamodule=built.datamodule)
        assert built.trainer.global_step == 1
        return
    message = refusal([f"method={method}", f"net={net}", "data=digits", *METHOD_ARGS.get(method, [])], make_config)
    assert REFUSED_NET[method] in message
    if method == "dae":
        assert "drop it, or use a method that takes one: method=consistency, method=diffusion, method=jit" in message


@pytest.mark.parametrize(("method", "encoder"), ENCODER_PAIRS, ids=[f"{m}-{e}" for m, e in ENCODER_PAIRS])
def test_method_with_encoder(method: str, encoder: str, make_config) -> None:
    """A method that reads ${encoder} trains a step with it; every other encoder= is refused before anything
    is built (REPA's zoo encoder here names the missing checkpoint)."""
    if (method, encoder) in ENCODER_TAKES:
        built = build(make_config(f"method={method}", f"encoder={encoder}", *ENCODER_TAKES[method, encoder], *ONE_STEP))
        built.trainer.fit(built.method, datamodule=built.datamodule)
        assert built.trainer.global_step == 1
        return
    message = refusal([f"method={method}", f"encoder={encoder}", *ENCODER_ARGS[encoder]], make_config)
    if (method, encoder) in ENCODER_REFUSED:
        assert ENCODER_REFUSED[method, encoder] in message
        return
    if method == "repa":
        assert "encoder.ckpt=unused.ckpt: no such checkpoint file" in message
        return
    assert f"method={method} takes no encoder" in message and f"encoder={encoder} was given" in message


@pytest.mark.parametrize("method", ["diffusion", "jit"])
def test_a_net_on_the_wrong_data_names_the_nets_that_fit(method: str, make_config) -> None:
    assert "use net=mlp" in refusal([f"method={method}", "net=unet", "data=manifold"], make_config)
    on_images = refusal([f"method={method}", "net=mlp", "data=digits"], make_config)
    assert "takes inputs of shape [1] but the data are images of shape [1, 8, 8]: use an image net" in on_images
