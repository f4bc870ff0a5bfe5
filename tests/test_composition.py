"""Every method with every net and encoder: the pairs it takes train a step; the others are refused
before training with a message that names the fix."""

from __future__ import annotations

import pytest
from conftest import CONF
from hydra.errors import InstantiationException

from zoo.train import build

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
NETS = sorted(p.stem for p in (CONF / "net").glob("*.yaml"))
ENCODERS = sorted(p.stem for p in (CONF / "encoder").glob("*.yaml"))
ONE_STEP = ["trainer=debug", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "callbacks=none"]

# (method, net) -> the data it runs on; every other pair is refused with the message below.
TAKES = {
    ("consistency", "unet"): "digits",
    ("consistency", "dit"): "digits",
    ("consistency", "jit_vit"): "digits",
    ("consistency", "mlp"): "manifold",
    ("diffusion", "unet"): "digits",
    ("diffusion", "dit"): "digits",
    ("diffusion", "jit_vit"): "digits",
    ("diffusion", "mlp"): "manifold",
    ("jit", "unet"): "digits",
    ("jit", "dit"): "digits",
    ("jit", "jit_vit"): "digits",
    ("jit", "mlp"): "manifold",
    ("moco", "resnet"): "digits",
    ("moco", "vit"): "digits",
}
REFUSED_NET = {
    "consistency": "is not a denoising net",
    "dae": "method=dae takes no net (nothing in its config reads ${net})",
    "diffusion": "is not a denoising net",
    "jit": "is not a denoising net",
    "moco": "MoCo needs a backbone that returns pooled features",
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
        built = build(make_config(f"method={method}", f"net={net}", f"data={TAKES[method, net]}", *ONE_STEP))
        built.trainer.fit(built.method, datamodule=built.datamodule)
        assert built.trainer.global_step == 1
        return
    message = refusal([f"method={method}", f"net={net}", "data=digits"], make_config)
    assert REFUSED_NET[method] in message
    if method == "dae":
        assert "drop it, or use a method that takes one: method=consistency, method=diffusion, method=jit, method=moco" in message


@pytest.mark.parametrize(("method", "encoder"), ENCODER_PAIRS, ids=[f"{m}-{e}" for m, e in ENCODER_PAIRS])
def test_method_with_encoder(method: str, encoder: str, make_config) -> None:
    """No method in conf/method reads ${encoder} yet: every encoder= is refused before anything is built."""
    message = refusal([f"method={method}", f"encoder={encoder}", *ENCODER_ARGS[encoder]], make_config)
    assert f"method={method} takes no encoder" in message and f"encoder={encoder} was given" in message


@pytest.mark.parametrize("method", ["diffusion", "jit"])
def test_a_net_on_the_wrong_data_names_the_nets_that_fit(method: str, make_config) -> None:
    assert "use net=mlp" in refusal([f"method={method}", "net=unet", "data=manifold"], make_config)
    on_images = refusal([f"method={method}", "net=mlp", "data=digits"], make_config)
    assert "takes inputs of shape [1] but the data are images of shape [1, 8, 8]: use an image net" in on_images
