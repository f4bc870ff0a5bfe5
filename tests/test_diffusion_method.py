"""The diffusion method (and its JiT preset) built from the real configs: training, sampling, guards."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_config
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from zoo.app.train import build, fit
from zoo.diffusion import classifier_free, sample
from zoo.methods.diffusion import Diffusion

# trainer=debug: 500 samples for the end-of-run generative metrics (n_samples=auto), not the default run's 5,000.
FAST = ["trainer=debug", "method.sampler.steps=4", "callbacks.samples.n=8"]


def build_error(cfg: DictConfig) -> str:
    """The message of the error ``build`` raises (Hydra wraps errors raised while instantiating)."""
    with pytest.raises((ValueError, InstantiationException)) as caught:
        build(cfg)
    return str(caught.value)


@pytest.fixture(scope="module")
def conditional(tmp_path_factory: pytest.TempPathFactory) -> Diffusion:
    """A class-conditional diffusion model on the digits, trained for four steps."""
    cfg = compose_config(
        ["method=diffusion", *FAST, "net.num_classes=${num_classes}"], tmp_path_factory.mktemp("conditional")
    )
    built = build(cfg)
    built.trainer.fit(built.method, datamodule=built.datamodule)
    return built.method.eval()


@pytest.mark.parametrize(
    "overrides",
    [["method=diffusion"], ["method=jit"], ["method=diffusion", "net=mlp", "data=manifold"]],
    ids=["diffusion-digits", "jit-digits", "diffusion-mlp-manifold"],
)
def test_a_few_steps_train_validate_and_test(overrides: list[str], make_config) -> None:
    cfg = make_config(*overrides, *FAST)
    metrics = fit(cfg)
    for name in ("train/loss", "val/loss", "test/loss"):
        assert math.isfinite(metrics[name]), name
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    ("name", "eta"), [("euler", 0.0), ("heun", 0.0), ("sde", 0.5), ("ddim", 0.0), ("ddim", 1.0)]
)
def test_every_sampler_gives_finite_reproducible_samples(
    conditional: Diffusion, name: str, eta: float
) -> None:
    def draw(seed: int) -> torch.Tensor:
        return conditional.sample(
            6, generator=torch.Generator().manual_seed(seed), name=name, steps=3, eta=eta
        )

    samples = draw(0)
    assert samples.shape == (6, 1, 8, 8)
    assert torch.isfinite(samples).all()
    assert samples.abs().max() < 10, "samples of an almost untrained net should stay near the prior's scale"
    assert torch.equal(samples, draw(0))
    assert not torch.allclose(samples, draw(1))


def test_guidance_one_is_the_conditional_model_and_guidance_uses_the_null_class(
    conditional: Diffusion,
) -> None:
    y = torch.tensor([0, 3, 7, 9])
    null = torch.full_like(y, conditional.num_classes)

    def reference(denoise: Callable) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return sample(denoise, (4, 1, 8, 8), conditional.schedule, steps=3, sampler="heun", generator=g)

    def draw(scale: float) -> torch.Tensor:
        return conditional.sample(4, y=y, generator=torch.Generator().manual_seed(0), steps=3, guidance=scale)

    def cond(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return conditional.denoise(z, t, y)

    def uncond(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return conditional.denoise(z, t, null)

    torch.testing.assert_close(draw(1.0), reference(cond))
    torch.testing.assert_close(draw(3.0), reference(classifier_free(cond, uncond, 3.0)))
    assert not torch.allclose(draw(3.0), draw(1.0))


def test_guidance_on_an_unconditional_net_fails_before_training(make_config) -> None:
    message = build_error(make_config("method=diffusion", "method.sampler.guidance=2.0"))
    assert "method.sampler.guidance=2.0" in message and "net.num_classes" in message


def test_guidance_asked_of_an_unconditional_model_at_sampling_time(make_config) -> None:
    method = build(make_config("method=diffusion", "net=mlp", "data=manifold")).method
    with pytest.raises(ValueError, match="guidance=2.0 needs a class-conditional net"):
        method.sample(4, steps=2, guidance=2.0)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["method=diffusion", "method.prediction=eps", "method.loss_space=v"], ["t=0.0", "method.min_a > 0"]),
        (["method=jit", "method.min_b=0.0"], ["t=1.0", "method.min_b > 0"]),
    ],
    ids=["eps-as-v-at-pure-noise", "jit-without-the-clamp-at-data"],
)
def test_a_loss_undefined_where_the_time_sampler_reaches_fails_at_build(
    overrides: list[str], expected: list[str], make_config
) -> None:
    message = build_error(make_config(*overrides))
    assert "is undefined at" in message
    for part in expected:
        assert part in message


def test_a_prediction_the_sampler_cannot_turn_into_x_fails_at_build(make_config) -> None:
    message = build_error(make_config("method=diffusion", "method.prediction=eps", "method.loss_space=eps"))
    assert "method.prediction='eps' cannot be turned into a clean estimate at t=0.0" in message
    assert "method.min_a > 0" in message
    clamped = build(
        make_config(
            "method=diffusion",
            "net=mlp",
            "data=manifold",
            "method.prediction=eps",
            "method.loss_space=eps",
            "method.min_a=0.05",
        )
    ).method
    assert torch.isfinite(clamped.sample(4, steps=3)).all()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("method.sampler.eta=1.5", "method.sampler.eta=1.5 is outside [0, 1]"),
        ("method.sampler.name=rk4", "method.sampler.name='rk4'"),
        ("method.sampler.steps=0", "method.sampler.steps=0"),
        ("method.sampler.refine_k=-1", "refine k=-1"),
    ],
)
def test_bad_sampler_settings_fail_at_build(override: str, expected: str, make_config) -> None:
    name = ["method.sampler.name=sde"] if "eta" in override else []
    message = build_error(make_config("method=diffusion", "net=mlp", "data=manifold", *name, override))
    assert expected in message


def test_bad_sampler_overrides_fail_at_sampling(conditional: Diffusion) -> None:
    with pytest.raises(ValueError, match=r"method.sampler.eta=-0.1 is outside \[0, 1\]"):
        conditional.sample(2, name="ddim", eta=-0.1)
    with pytest.raises(ValueError, match="eta=0.5 needs a stochastic sampler"):
        conditional.sample(2, name="euler", eta=0.5)
    with pytest.raises(ValueError, match="unknown sampler option.*'stpes'"):
        conditional.sample(2, stpes=3)


def test_a_patch_size_that_does_not_divide_the_image_fails_at_build(make_config) -> None:
    message = build_error(make_config("method=jit", "net.patch_size=3"))
    assert "net.patch_size=3 does not divide data.image_size=8" in message


def test_embed_shape_depends_on_t_and_checks_the_layer(conditional: Diffusion) -> None:
    x = torch.rand(5, 1, 8, 8) * 2 - 1

    def features(t: float, layer: int | None = None) -> torch.Tensor:
        torch.manual_seed(0)
        return conditional.embed(x, t=t, layer=layer)

    blocks = conditional.denoiser.num_blocks
    for layer in (None, 0, blocks - 1, -1):
        out = features(0.9, layer)
        assert out.ndim == 2 and out.shape[0] == 5 and torch.isfinite(out).all()
    assert torch.equal(features(0.9), features(0.9))
    assert not torch.allclose(features(0.9), features(0.3))
    with pytest.raises(ValueError, match=f"embed layer={blocks}: the net has {blocks} hidden blocks"):
        features(0.9, blocks)


def test_predict_and_perturb_with_k_zero_is_the_base_sampler(conditional: Diffusion) -> None:
    def draw(k: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return conditional.sample(4, generator=g, steps=4, refine_k=k, refine_fraction=1.0, refine_tau=0.0)

    base = conditional.sample(4, generator=torch.Generator().manual_seed(0), steps=4)
    torch.testing.assert_close(draw(0), base)
    refined = draw(2)
    assert torch.isfinite(refined).all() and not torch.allclose(refined, base)


class ParameterTrace(Callback):
    """Records one weight after the last training step and while validation runs."""

    def __init__(self) -> None:
        self.after_training: torch.Tensor | None = None
        self.in_validation: torch.Tensor | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.after_training = first_weight(pl_module)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.in_validation = first_weight(pl_module)


def first_weight(module: L.LightningModule) -> torch.Tensor:
    return next(module.net.parameters()).detach().clone()


def test_validation_and_the_final_weights_are_the_exponential_average(make_config) -> None:
    cfg = make_config(
        "method=diffusion",
        "net=mlp",
        "data=manifold",
        *FAST,
        "callbacks.ema.update_starting_at_step=0",
        "callbacks.ema.decay=0.5",
    )
    built = build(cfg)
    trace = ParameterTrace()
    built.trainer.callbacks.append(trace)
    built.trainer.fit(built.method, datamodule=built.datamodule)
    assert trace.after_training is not None and trace.in_validation is not None
    assert not torch.allclose(trace.in_validation, trace.after_training)
    torch.testing.assert_close(first_weight(built.method), trace.in_validation)
