"""The joints new methods plug into: the denoiser module, loss terms by config, public sampler steps."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from zoo.app.train import build
from zoo.diffusion import EDM, VP, Denoiser, LinearFlow, convert, heun, heun_step
from zoo.nets.dit import DiT
from zoo.terms import LossTerm, TermInputs

TERM = "+method.terms.probe={_target_: test_extension_points.HiddenProbe, width: 32, weight: 0.1, blocks: [1]}"
FAST = ["method=diffusion", "net=dit", "net.width=32", "trainer=debug", "callbacks=none"]


class HiddenProbe(LossTerm):
    """A term with parameters: the squared output of a linear map of block ``blocks[0]``'s tokens."""

    def __init__(self, width: int, **kw) -> None:
        super().__init__(**kw)
        self.linear = nn.Linear(width, 1)

    def forward(self, inputs: TermInputs) -> Tensor:
        return self.linear(inputs.hidden[self.blocks[0]]).pow(2).mean()


def test_a_term_trains_its_parameters_and_logs_its_value(make_config) -> None:
    built = build(make_config(*FAST, TERM))
    term = built.method.terms["probe"]
    before = term.linear.weight.detach().clone()
    built.trainer.fit(built.method, datamodule=built.datamodule)
    optimized = {id(p) for group in built.trainer.optimizers[0].param_groups for p in group["params"]}
    assert {id(p) for p in term.parameters()} <= optimized
    assert not torch.equal(term.linear.weight, before)
    metrics = built.trainer.callback_metrics
    assert {"train/probe", "train/denoise", "val/probe"} <= set(metrics)
    total = metrics["val/denoise"] + 0.1 * metrics["val/probe"]
    torch.testing.assert_close(metrics["val/loss"], total)


def test_a_term_is_dropped_by_name(make_config) -> None:
    built = build(make_config(*FAST, TERM, "~method.terms.probe"))
    assert len(built.method.terms) == 0


def test_a_term_on_a_block_the_net_lacks_fails_at_build(make_config) -> None:
    bad = TERM.replace("blocks: [1]", "blocks: [9]")
    with pytest.raises(Exception, match=r"method.terms.probe.blocks: block 9 is outside the net's 4 blocks"):
        build(make_config(*FAST, bad))


def test_the_cosine_velocity_term_is_zero_for_the_true_velocity(make_config) -> None:
    built = build(make_config(*FAST, "+method.terms.cos={_target_: zoo.terms.CosineVelocity}"))
    denoiser = built.method.denoiser
    x, eps, t = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.rand(4)
    z = denoiser.schedule.noise(x, t, eps)
    true_v = x - eps  # the linear flow's velocity; the method predicts v
    inputs = TermInputs({"x": x}, x, eps, t, z, None, true_v, {}, denoiser)
    assert built.method.terms["cos"](inputs).item() == pytest.approx(0.0, abs=1e-6)
    inputs.out = -true_v
    assert built.method.terms["cos"](inputs).item() == pytest.approx(2.0)


def test_the_denoiser_gives_x_hat_and_hidden_states_from_one_pass() -> None:
    torch.manual_seed(0)
    net = DiT(image_size=8, in_channels=1, width=32, depth=3)
    for block in net.blocks:  # adaLN-Zero starts as the identity; make the blocks do something
        nn.init.normal_(block.modulation[-1].weight, std=0.1)
    denoiser = Denoiser(net, LinearFlow(), prediction="v")
    z, t = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.7])
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    result = denoiser.output(z, t, blocks=[0, -1])
    assert len(calls) == 1 and set(result.hidden) == {0, -1}
    out, hiddens = net(z * LinearFlow().c_in(t).view(-1, 1, 1, 1), t, return_hidden=True)
    torch.testing.assert_close(result.out, out)
    torch.testing.assert_close(result.hidden[-1], hiddens[2])
    x_hat = z + (1 - t).view(-1, 1, 1, 1) * out  # flow: x = z + (1 - t) v
    torch.testing.assert_close(denoiser(z, t), x_hat)
    with pytest.raises(ValueError, match="block 3 is outside the net's 3 blocks"):
        denoiser.output(z, t, blocks=[3])


def test_the_denoiser_refuses_a_backbone() -> None:
    from zoo.nets.backbones import ResNet

    with pytest.raises(ValueError, match="ResNet is not a denoising net.*net=unet, net=dit"):
        Denoiser(ResNet(in_chans=1, width=8), LinearFlow())


def reference_heun(denoise, z: Tensor, grid: Tensor, schedule) -> Tensor:
    """The Heun sampler as it was written before its step became public (the oracle)."""

    def at(fn, t: float) -> float:
        return float(fn(torch.tensor(t, dtype=torch.float64)))

    def slope(z: Tensor, t: float) -> Tensor:
        times = torch.full((z.shape[0],), t, dtype=z.dtype)
        return convert(denoise(z, times), "x", "v", z, times, schedule) / at(schedule.dnative, t)

    times = grid.tolist()
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        h = at(schedule.native, t_next) - at(schedule.native, t)
        first = slope(z, t)
        z_euler = z + h * first
        z = z_euler if at(schedule.b, t_next) == 0.0 else z + h * (first + slope(z_euler, t_next)) / 2
    t_last = times[-1]
    if at(schedule.b, t_last) == 0.0:
        return z / at(schedule.a, t_last)
    return denoise(z, torch.full((z.shape[0],), t_last, dtype=z.dtype))


@pytest.mark.parametrize("schedule", [LinearFlow(), VP(), EDM()], ids=["flow", "vp", "edm"])
def test_heun_built_from_heun_step_is_the_old_heun(schedule) -> None:
    torch.manual_seed(0)
    weight = torch.randn(3, 3, dtype=torch.float64) * 0.3

    def denoise(z: Tensor, t: Tensor) -> Tensor:
        return torch.tanh(z @ weight) * t.view(-1, 1)

    z = schedule.prior((16, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = schedule.grid(7)
    new, old = heun(denoise, z, grid, schedule), reference_heun(denoise, z, grid, schedule)
    assert torch.equal(new, old)
    x_hat, z_next = heun_step(denoise, z, float(grid[0]), float(grid[1]), schedule)
    assert x_hat.shape == z_next.shape == z.shape
