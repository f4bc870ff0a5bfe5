"""method=vae and method=vavae: the KL autoencoder, VA-VAE's VF loss and the autoencoder contract."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import unbroken_and_resumed
from hydra.errors import InstantiationException
from test_scale import assert_same_weights

from zoo.app.train import build, fit
from zoo.autoencoder import Autoencoder, is_autoencoder, load_autoencoder
from zoo.encoders import random as random_encoder
from zoo.methods.vae import VAE
from zoo.nets.backbones import ResNet
from zoo.terms.latent import LatentTermInputs
from zoo.terms.vf_loss import VFLoss, adaptive_weight, marginal_cosine, marginal_distance_matrix

# 8 px digits, f2: 4x4 latents; the random encoder's ResNet stage 2 is 4x4 at 8 px.
TINY_VAE = ["method.net.block_out_channels=[16,32]", "trainer=debug", "callbacks=none", "logger=csv"]
VAVAE = ["method=vavae", "encoder=random", "method.terms.vf.stage=2", *TINY_VAE]


def test_marginal_cosine_matches_a_hand_computation() -> None:
    # Two positions of one image: cos = 1 at the first, 0 at the second (orthogonal), m1 = 0.25.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    f = torch.tensor([[2.0, 0.0], [1.0, 0.0]]).T.reshape(1, 2, 1, 2)
    expected = (max(0.0, 1 - 0.25 - 1.0) + max(0.0, 1 - 0.25 - 0.0)) / 2
    assert marginal_cosine(z, f, 0.25).item() == pytest.approx(expected)


def test_marginal_distance_matrix_matches_a_hand_computation() -> None:
    # z: positions at 0 and 90 degrees (cos 0); f: at 0 and 60 degrees (cos 0.5). The 2x2 matrices differ
    # by |0 - 0.5| off the diagonal and 0 on it; with m2 = 0.1 the mean is 2 * 0.4 / 4.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    f = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2]]).T.reshape(1, 2, 1, 2)
    assert marginal_distance_matrix(z, f, 0.1).item() == pytest.approx(2 * 0.4 / 4, abs=1e-6)
    assert marginal_distance_matrix(z, f, 0.5).item() == 0.0


def vf_term(width: int = 8, **kwargs) -> VFLoss:
    term = VFLoss(random_encoder(ResNet(in_chans=1, width=width, layers=[1, 1, 1, 1])), stage=2, **kwargs)
    term.check((2 * width, 4, 4), (1, 8, 8))
    return term


def test_vf_loss_is_exactly_zero_once_the_margins_are_met() -> None:
    torch.manual_seed(0)
    term = vf_term()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    f = term.features(x)
    # W = I and z = f plus a perturbation small enough for cos(z'_i, f_i) > 0.5 and every pairwise
    # cosine within 0.25 of the features' (margins m1 0.5, m2 0.25), but not zero: z' != f.
    with torch.no_grad():
        term.proj.weight.copy_(torch.eye(f.shape[1]).view(f.shape[1], f.shape[1], 1, 1))
    z = (f + 0.02 * f.norm(dim=1, keepdim=True) * torch.randn_like(f)).requires_grad_(True)
    assert F.cosine_similarity(z, f, dim=1).min() < 0.9999
    inputs = LatentTermInputs({}, x, z, x, torch.zeros(()), term.proj.weight)
    value = term(inputs)
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    # Without the margins (VA-VAE's first stages) the same latents are not aligned exactly: the loss is positive.
    term.m1, term.m2 = 0.0, 0.0
    assert term(inputs).item() > 0


def test_adaptive_weight_is_the_ratio_of_the_gradient_norms_on_the_last_layer(make_config) -> None:
    method = build(make_config(*VAVAE)).method
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    z = method.encode(x)
    x_hat = method.decode(z)
    nll = (x - x_hat).abs().sum() / 4
    term = method.terms["vf"]
    inputs = LatentTermInputs({"x": x}, x, z, x_hat, nll, method.last_layer)
    value = term(inputs)
    rec_grad = torch.autograd.grad(nll, method.last_layer, retain_graph=True)[0]
    vf_grad = torch.autograd.grad(value, method.last_layer, retain_graph=True)[0]
    manual = rec_grad.norm() / (vf_grad.norm() + 1e-4)
    assert adaptive_weight(nll, value, method.last_layer, 1e8).item() == pytest.approx(manual.item(), rel=1e-5)
    assert term.coefficient(inputs, value).item() == pytest.approx(0.1 * manual.item(), rel=1e-5)
    assert adaptive_weight(nll, value, method.last_layer, 0.5).item() == min(0.5, manual.item())
    # Without a graph (evaluation) the coefficient is the plain weight.
    assert term.coefficient(inputs, value.detach()).item() == pytest.approx(0.1)


def test_the_vae_meets_the_autoencoder_contract(make_config) -> None:
    method = build(make_config("method=vae", *TINY_VAE)).method
    assert isinstance(method, Autoencoder) and is_autoencoder(method)
    assert method.latent_shape == (4, 4, 4)
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    z = method.encode(x)
    assert z.shape == (5, 4, 4, 4) and torch.equal(z, method.encode(x))
    assert torch.equal(z, method.posterior(x).mean)
    assert method.decode(z).shape == x.shape
    assert torch.allclose(method.embed(x), z.mean(dim=(2, 3)))


def test_the_learned_logvar_divides_the_reconstruction_error(make_config) -> None:
    method = build(make_config("method=vae", "method.learn_logvar=true", "method.logvar_init=0.5", *TINY_VAE)).method
    method.eval()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    parts = method.losses({"x": x})
    error = (x - method.decode(method.encode(x))).abs()
    expected = (error / math.exp(0.5) + 0.5).sum() / 3
    assert parts["nll"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert any(p is method.logvar for group in method.learnable_params for p in group["params"])
    kl = method.posterior(x).kl().sum() / 3
    assert parts["loss"].item() == pytest.approx((expected + 1e-6 * kl).item(), rel=1e-5)


def test_vavae_trains_and_logs_its_vf_loss(make_config, tmp_path: Path) -> None:
    metrics = fit(make_config(*VAVAE, "trainer.max_steps=2"))
    assert {"train/vf", "train/vf_weight", "test/rec_mse", "test/vf"} <= set(metrics), sorted(metrics)
    assert metrics["train/vf_weight"] > 0


def refusal(make_config, *overrides: str) -> str:
    with pytest.raises((ValueError, InstantiationException)) as caught:
        build(make_config(*overrides))
    return str(caught.value)


def test_a_vf_encoder_grid_that_cannot_meet_the_latent_grid_is_refused(make_config) -> None:
    # At 12 px the ResNet's stage 2 is 6x6, which a 4x4 latent grid cannot meet.
    message = refusal(make_config, *VAVAE, "method.terms.vf.input_size=12")
    assert "6x6 feature grid" in message and "4x4 latent grid" in message and "method.terms.vf.stage" in message


def test_the_vae_refuses_bad_settings(make_config) -> None:
    assert "needs method.perceptual_encoder" in refusal(make_config, "method=vae", "method.perceptual_weight=1.0")
    assert "does not divide the image size" in refusal(
        make_config, "method=vae", "method.net.block_out_channels=[8,8,8,8,8]", "method.net.norm_groups=8"
    )
    assert "method=vae encodes images" in refusal(make_config, "method=vae", "data=manifold")


def test_a_perceptual_term_in_a_frozen_encoders_features_trains(make_config) -> None:
    overrides = ["method=vae", "encoder=random", "method.perceptual_weight=0.5", "method.perceptual_encoder=${encoder}"]
    metrics = fit(make_config(*overrides, *TINY_VAE, "trainer.max_steps=1"))
    assert metrics["train/perceptual"] > 0


def trained_vae(make_config, out: Path, *overrides: str) -> Path:
    """A VAE fitted for two steps into ``out``; its last checkpoint."""
    fit(make_config("method=vae", *TINY_VAE, "callbacks=default", "~callbacks.progress", "trainer.limit_train_batches=2",
                    "+test=false", *overrides, output_dir=out))
    return out / "checkpoints" / "last.ckpt"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_resumed_vavae_run_ends_with_the_weights_of_an_unbroken_one(make_config, tmp_path: Path) -> None:
    tiny = [*VAVAE, "callbacks=default", "~callbacks.progress", "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1", "+test=false", "data.n_train=96", "data.batch_size=32"]
    unbroken, resumed = unbroken_and_resumed(make_config, tmp_path, *tiny)
    assert resumed["global_step"] == unbroken["global_step"] == 6
    assert_same_weights(unbroken["state_dict"], resumed["state_dict"])


def test_load_autoencoder_returns_it_frozen_and_checks_the_image_shape(make_config, tmp_path: Path) -> None:
    path = trained_vae(make_config, tmp_path / "vae")
    autoencoder = load_autoencoder(path, (1, 8, 8))
    assert isinstance(autoencoder.method, VAE) and autoencoder.latent_shape == (4, 4, 4)
    assert not any(p.requires_grad for p in autoencoder.parameters())
    assert not autoencoder.train().training and not autoencoder.method.training
    assert len(autoencoder.digest) == 64
    with pytest.raises(ValueError, match=r"trained on images of shape \[1, 8, 8\].*data are \[1, 16, 16\]"):
        load_autoencoder(path, (1, 16, 16))
    with pytest.raises(ValueError, match=r"data are \[3, 8, 8\]"):
        load_autoencoder(path, (3, 8, 8))
