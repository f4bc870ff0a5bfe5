"""The denoiser nets: interface, conditioning, adaLN-Zero init, geometry errors, RoPE, configs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from timm.layers import apply_rot_embed_cat
from torch import Tensor, nn

from zoo.nets.dit import DiT
from zoo.nets.mlp import MLP
from zoo.nets.pixel_vit import PixelViT
from zoo.nets.unet import UNet

CONF = Path(__file__).resolve().parents[1] / "conf"
CLASSES = 3
PLAIN_VIT = dict(bottleneck=None, swiglu=False, rmsnorm=False, rope=False, qk_norm=False)

# name -> (factory(num_classes), input shape, expected hidden shapes without the batch dim)
NETS: dict[str, tuple[Callable[[int], nn.Module], tuple[int, ...], list[tuple[int, ...]]]] = {
    "unet": (
        lambda k: UNet(
            8, 1, block_out_channels=(8, 16), attention=(False, True), norm_groups=4, num_classes=k
        ),
        (1, 8, 8),
        [(8, 4, 4), (16, 4, 4), (16, 4, 4), (16, 8, 8), (8, 8, 8)],
    ),
    "dit": (
        lambda k: DiT(8, 2, patch_size=2, width=16, depth=2, heads=2, num_classes=k),
        (2, 8, 8),
        [(16, 16)] * 2,
    ),
    "dit_dh": (
        lambda k: DiT(
            8, 1, patch_size=2, width=16, depth=2, heads=2, num_classes=k, head_depth=1, head_width=32
        ),
        (1, 8, 8),
        [(16, 16), (16, 16), (16, 32)],
    ),
    "jit": (
        lambda k: PixelViT(8, 1, patch_size=2, width=16, depth=3, heads=2, bottleneck=4, num_classes=k),
        (1, 8, 8),
        [(16, 16)] * 3,
    ),
    "jit_plain": (
        lambda k: PixelViT(8, 1, 2, 16, 2, 2, num_classes=k, **PLAIN_VIT),
        (1, 8, 8),
        [(16, 16)] * 2,
    ),
    "mlp": (lambda k: MLP(6, hidden=16, depth=3, num_classes=k), (6,), [(16,), (16,)]),
}
ZERO_INIT = ["dit", "dit_dh", "jit", "jit_plain"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets run ~100x slower with 2 OpenMP threads on a shared, oversubscribed CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def in_context_jit(num_classes: int) -> PixelViT:
    return PixelViT(
        8, 1, 2, 16, 3, 2, bottleneck=4, num_classes=num_classes, in_context_tokens=3, in_context_start=1
    )


def perturb_zero_params(net: nn.Module) -> nn.Module:
    """Give every all-zero parameter (adaLN-Zero, zero-init output layers) small random values."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return net


def inputs(shape: tuple[int, ...], batch: int = 4) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, *shape, generator=gen), torch.rand(batch, generator=gen)


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("num_classes", [0, CLASSES])
def test_output_and_hidden_shapes(name: str, num_classes: int) -> None:
    factory, shape, hidden_shapes = NETS[name]
    net = factory(num_classes)
    x, t = inputs(shape)
    y = torch.tensor([0, 1, 2, -1]) if num_classes else None
    out, hiddens = net(x, t, y, return_hidden=True)
    assert out.shape == x.shape
    assert net.num_blocks == len(hiddens) == len(hidden_shapes)
    assert [tuple(h.shape) for h in hiddens] == [(4, *s) for s in hidden_shapes]
    assert net.num_classes == num_classes
    assert torch.equal(net(x, t, y), out)


def test_in_context_tokens_are_removed_from_hiddens_and_output() -> None:
    net = in_context_jit(CLASSES)
    x, t = inputs((1, 8, 8))
    out, hiddens = net(x, t, torch.tensor([0, 1, 2, 0]), return_hidden=True)
    assert out.shape == x.shape
    assert [tuple(h.shape) for h in hiddens] == [(4, 16, 16)] * 3


@pytest.mark.parametrize("name", ZERO_INIT)
def test_adaln_zero_output_is_exactly_zero_at_init(name: str) -> None:
    factory, shape, _ = NETS[name]
    x, t = inputs(shape)
    for net in (factory(0), factory(CLASSES)):
        assert torch.equal(net(x, t), torch.zeros_like(x))


def test_in_context_jit_output_is_exactly_zero_at_init() -> None:
    x, t = inputs((1, 8, 8))
    assert torch.equal(in_context_jit(CLASSES)(x, t), torch.zeros_like(x))


@pytest.mark.parametrize("name", [*NETS, "jit_in_context"])
def test_class_conditioning_and_null_class(name: str) -> None:
    factory, shape, _ = NETS.get(name, (in_context_jit, (1, 8, 8), []))
    net = perturb_zero_params(factory(CLASSES))
    x, t = inputs(shape)
    x, t = x[:3], t[:3]
    null = torch.full((3,), CLASSES)
    assert not torch.allclose(net(x, t, torch.tensor([0, 1, 2])), net(x, t, torch.tensor([1, 2, 0])))
    assert torch.equal(net(x, t, None), net(x, t, null))
    assert torch.equal(net(x, t, torch.full((3,), -1)), net(x, t, null))
    with pytest.raises(ValueError, match="net.num_classes"):
        net(x, t, torch.tensor([0, 1, CLASSES + 1]))


@pytest.mark.parametrize("name", NETS)
def test_unconditional_net_ignores_labels(name: str) -> None:
    factory, shape, _ = NETS[name]
    net = perturb_zero_params(factory(0))
    x, t = inputs(shape)
    assert torch.equal(net(x, t, torch.tensor([0, 1, 2, 3])), net(x, t))


@pytest.mark.parametrize("name", [*NETS, "jit_in_context"])
def test_gradients_reach_every_parameter(name: str) -> None:
    factory, shape, _ = NETS.get(name, (in_context_jit, (1, 8, 8), []))
    net = perturb_zero_params(factory(CLASSES))
    x, t = inputs(shape)
    net(x, t, torch.tensor([0, 1, 2, -1])).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_time_changes_the_output_and_scalar_time_broadcasts() -> None:
    net = perturb_zero_params(NETS["dit"][0](0))
    x, _ = inputs((2, 8, 8))
    assert not torch.allclose(net(x, torch.full((4,), 0.2)), net(x, torch.full((4,), 0.8)))
    assert torch.equal(net(x, torch.tensor(0.3)), net(x, torch.full((4,), 0.3)))
    with pytest.raises(ValueError, match="one noise level per sample"):
        net(x, torch.rand(3))


@pytest.mark.parametrize(
    ("build", "setting"),
    [
        (lambda: DiT(16, 1, patch_size=3), "net.patch_size"),
        (lambda: PixelViT(16, 1, patch_size=5), "net.patch_size"),
        (lambda: UNet(10, 1, block_out_channels=(8, 8, 8), norm_groups=4), "data.image_size"),
        (lambda: DiT(16, 1, width=30, heads=4), "net.width"),
        (lambda: DiT(16, 1, head_depth=1, head_width=30, heads=4), "net.head_width"),
        (lambda: DiT(16, 1, pos_embed="rope"), "net.pos_embed"),
        (lambda: DiT(16, 1, head_width=128), "net.head_width"),
        (lambda: PixelViT(16, 1, in_context_start=1), "net.in_context_start"),
        (lambda: PixelViT(16, 1, width=24, heads=4), "net.width"),
        (lambda: PixelViT(16, 1, in_context_tokens=4), "net.in_context_tokens"),
        (
            lambda: PixelViT(16, 1, num_classes=3, in_context_tokens=4, in_context_start=4),
            "net.in_context_start",
        ),
        (lambda: PixelViT(16, 1, bottleneck=0), "net.bottleneck"),
        (lambda: UNet(16, 1, attention=[True]), "net.attention"),
        (lambda: UNet(16, 1, block_out_channels=(12, 24)), "net.norm_groups"),
        (lambda: MLP(4, depth=1), "net.depth"),
    ],
)
def test_bad_settings_raise_naming_the_setting(build: Callable[[], nn.Module], setting: str) -> None:
    with pytest.raises(ValueError, match=setting.replace(".", r"\.")):
        build()


def test_patch_size_error_lists_working_sizes() -> None:
    with pytest.raises(ValueError, match=r"\[1, 2, 4, 8, 16\]"):
        DiT(16, 1, patch_size=3)


@pytest.mark.parametrize("name", NETS)
def test_wrong_input_shape_raises(name: str) -> None:
    factory, shape, _ = NETS[name]
    x, t = inputs(shape)
    with pytest.raises(ValueError, match="built for"):
        factory(0)(torch.cat([x, x], dim=1), t)


def test_rope_attention_score_depends_only_on_the_offset() -> None:
    net = PixelViT(16, 1, patch_size=2, width=32, depth=1, heads=2)
    rope, grid = net.rotary.get_embed(), net.grid_size
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    rq = apply_rot_embed_cat(q.expand(grid * grid, 16), rope)
    rk = apply_rot_embed_cat(k.expand(grid * grid, 16), rope)
    scores = rq @ rk.T

    def index(i: int, j: int) -> int:
        return i * grid + j

    for di, dj in [(0, 0), (1, 0), (0, 3), (2, -1), (-3, 4)]:
        pairs = [
            scores[index(i, j), index(i + di, j + dj)]
            for i in range(grid)
            for j in range(grid)
            if 0 <= i + di < grid and 0 <= j + dj < grid
        ]
        assert torch.allclose(torch.stack(pairs), pairs[0].expand(len(pairs)), atol=1e-5)
    assert not torch.allclose(scores[index(0, 0), index(0, 1)], scores[index(0, 0), index(1, 0)])


def test_unet_hidden_hooks_follow_a_deep_copy() -> None:
    net = NETS["unet"][0](0)
    twin = copy.deepcopy(net)
    x, t = inputs((1, 8, 8))
    _, hiddens = twin(x, t, return_hidden=True)
    assert len(hiddens) == twin.num_blocks
    assert net._captured is None and twin._captured is None


def test_learned_positions_are_trained() -> None:
    names = {n for n, _ in DiT(8, 1, width=16, heads=2, pos_embed="learned").named_parameters()}
    assert "pos_embed" in names
    assert "pos_embed" not in {n for n, _ in DiT(8, 1, width=16, heads=2).named_parameters()}


@pytest.mark.parametrize(
    ("name", "shape"), [("unet", [1, 16, 16]), ("dit", [1, 16, 16]), ("jit_vit", [3, 16, 16]), ("mlp", [8])]
)
@pytest.mark.parametrize("conditional", [False, True])
def test_config_composes_and_instantiates(name: str, shape: list[int], conditional: bool) -> None:
    overrides = [f"net={name}", f"shape=[{','.join(map(str, shape))}]", "num_classes=10"]
    if conditional:
        overrides.append("net.num_classes=${num_classes}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    net = instantiate(cfg.net)
    assert net.num_classes == (10 if conditional else 0)
    x, t = inputs(tuple(shape), batch=2)
    y = torch.tensor([3, 7]) if conditional else None
    out, hiddens = net(x, t, y, return_hidden=True)
    assert out.shape == x.shape and len(hiddens) == net.num_blocks
