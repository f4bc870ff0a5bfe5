"""RAE (Zheng, Ma, Tong, Xie 2025): stage 1's tokens, statistics, noise-augmented decoding and frozen encoder;
the dimension-dependent shift; the bad inputs; and the width claim of experiment=rae_digits in small."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from zoo.app.studies.rae_digits import dimension_alpha, latent_config
from zoo.app.train import build, fit
from zoo.autoencoder import is_autoencoder, load_autoencoder
from zoo.diffusion.time_samplers import LogitNormal, Shifted, shift
from zoo.encoders import random as random_encoder
from zoo.methods.rae import RAE
from zoo.nets.backbones import ViT
from zoo.nets.token_dit import WIDTH_FINDING, token_dit
from zoo.nets.vit_decoder import ViTDecoder

VIT_ENCODER = [
    "encoder=random",
    "~encoder.net",
    "+encoder.net={_target_: zoo.nets.backbones.ViT, img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 32, "
    "depth: 1, num_heads: 4}",
]
QUICK = ["trainer=debug", "callbacks=none"]
TINY = [
    "method=rae",
    *VIT_ENCODER,
    "method.decoder.width=32",
    "method.decoder.depth=1",
    *QUICK,
]


def tiny_rae(tau: float = 0.8, patch_size: int | None = None) -> RAE:
    encoder = random_encoder(ViT(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=1, num_heads=4))

    def decoder(**kw) -> ViTDecoder:
        return ViTDecoder(**kw, patch_size=patch_size, width=32, depth=1, heads=4)

    return RAE(encoder, (1, 8, 8), decoder, noise_tau=tau, optimizer=torch.optim.AdamW)


@pytest.fixture(scope="module")
def rae_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rae")
    fit(compose_config([*TINY, "+test=false", "callbacks=default", "~callbacks.progress"], out))
    return out / "checkpoints" / "last.ckpt"


def test_alpha_is_computed_from_the_latent_shape() -> None:
    rae = tiny_rae()
    assert rae.latent_shape == (32, 4, 4)
    assert dimension_alpha(rae.latent_shape, 64) == pytest.approx(math.sqrt(32 * 4 * 4 / 64))
    assert dimension_alpha((768, 16, 16), 4096) == pytest.approx(math.sqrt(48.0))  # RAE's DINOv2-B latent


def test_shift_is_raes_mapping_with_fixed_ends() -> None:
    """RAE in noise time u = 1 - t: u_m = alpha u / (1 + (alpha - 1) u); t = 0 and t = 1 stay put."""
    alpha = dimension_alpha((32, 4, 4), 64)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    u = 1 - t
    assert torch.allclose(1 - shift(t, alpha), alpha * u / (1 + (alpha - 1) * u))
    assert float(shift(torch.tensor(0.0), alpha)) == 0.0 and float(shift(torch.tensor(1.0), alpha)) == 1.0
    assert bool((shift(t[1:-1], alpha) < t[1:-1]).all())  # alpha > 1 moves every interior t toward noise
    draws = Shifted(LogitNormal(0.0, 1.0), alpha)(1000, generator=torch.Generator().manual_seed(0))
    base = LogitNormal(0.0, 1.0)(1000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(draws, shift(base, alpha))


def test_dimension_shift_takes_alpha_from_the_latent_shape(rae_checkpoint: Path, make_config) -> None:
    make_config("experiment=rae_digits")
    alpha = dimension_alpha(load_autoencoder(rae_checkpoint, (1, 8, 8)).latent_shape, 64)
    shifted = build(latent_config(["method=diffusion", "net=dit_dh", *QUICK], rae_checkpoint, 64)).method
    assert shifted.shape == (32, 4, 4) and alpha == pytest.approx(math.sqrt(512 / 64))
    assert shifted.shift_alpha == pytest.approx(alpha)
    assert shifted.time_sampler == Shifted(LogitNormal(0.0, 1.0), alpha) and shifted.sampler["shift"] == alpha
    plain = build(latent_config(["method=diffusion", "net=dit_dh", *QUICK], rae_checkpoint, None)).method
    assert plain.time_sampler == LogitNormal(0.0, 1.0) and plain.sampler["shift"] == 1.0
    with pytest.raises((ValueError, InstantiationException), match="method.dimension_shift=64 sets the sampler.s shift"):
        build(latent_config(["method=diffusion", "net=dit_dh", "method.sampler.shift=3.0", *QUICK], rae_checkpoint, 64))


def test_per_position_statistics_of_the_train_split() -> None:
    rae = tiny_rae()
    x = torch.rand(40, 1, 8, 8) * 2 - 1
    rae.fit_stats([{"x": x[:25]}, {"x": x[25:]}])
    with torch.no_grad():
        tokens = rae.encoder(x)[0]
    grid = torch.nn.functional.layer_norm(tokens, (32,)).transpose(1, 2).reshape(40, 32, 4, 4)
    assert torch.allclose(rae.latent_mean, grid.mean(0), atol=1e-5)
    assert torch.allclose(rae.latent_var, grid.var(0, unbiased=False), atol=1e-5)
    assert int(rae.stats_count) == 40
    z = rae.encode(x)
    assert torch.allclose(z.mean(0), torch.zeros(32, 4, 4), atol=1e-4)
    assert torch.allclose(z.var(0, unbiased=False), rae.latent_var / (rae.latent_var + rae.eps), atol=1e-4)
    assert torch.allclose(rae.to_grid(rae.to_tokens(z)), z)


def test_noise_augmentation_only_in_training() -> None:
    """sigma ~ U(0, tau) per sample: each sample's noise has std sigma, so the stds spread over [0, tau]."""
    rae = tiny_rae(tau=0.8)
    tokens = torch.zeros(4000, 16, 32)
    rae.train()
    torch.manual_seed(0)
    sigmas = rae.augment(tokens).flatten(1).std(dim=1)
    assert float(sigmas.max()) < 0.8 * 1.15 and float(sigmas.min()) < 0.05  # std of 512 draws: ~3% error
    assert float(sigmas.mean()) == pytest.approx(0.4, abs=0.02)
    assert float(sigmas.var()) == pytest.approx(0.8**2 / 12, rel=0.1)
    rae.eval()
    assert torch.equal(rae.augment(tokens + 1), tokens + 1)
    batch = {"x": torch.rand(8, 1, 8, 8) * 2 - 1}
    assert torch.equal(rae.losses(batch)["loss"], rae.losses(batch)["loss"])
    assert torch.equal(tiny_rae(tau=0.0).train().augment(tokens + 1), tokens + 1)


def test_encode_is_deterministic_and_decodes_to_pixels() -> None:
    rae = tiny_rae().train()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    assert is_autoencoder(rae)
    assert torch.equal(rae.encode(x), rae.encode(x))
    assert rae.decode(rae.encode(x)).shape == x.shape
    assert rae.embed(x).shape == (3, 32)
    with pytest.raises(ValueError, match=r"decodes B x 32 x 4 x 4"):
        rae.decode(torch.zeros(3, 16, 4, 4))


def test_perceptual_term_in_the_frozen_token_space() -> None:
    rae = tiny_rae(tau=0.0)
    rae.perceptual_weight = 0.5
    parts = rae.eval().losses({"x": torch.rand(4, 1, 8, 8) * 2 - 1})
    assert set(parts) == {"loss", "l1", "perceptual"} and float(parts["perceptual"].detach()) > 0
    assert torch.allclose(parts["loss"], parts["l1"] + 0.5 * parts["perceptual"])


def test_training_leaves_the_encoder_unchanged_and_stores_the_statistics(make_config) -> None:
    built = build(make_config(*TINY))
    before = {k: v.clone() for k, v in built.method.encoder.state_dict().items()}
    decoder_before = [p.clone() for p in built.method.decoder.parameters()]
    built.trainer.fit(built.method, datamodule=built.datamodule)
    assert built.trainer.global_step == 4
    assert all(torch.equal(before[k], v) for k, v in built.method.encoder.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, built.method.decoder.parameters()))
    assert int(built.method.stats_count) == len(built.datamodule.splits[0])
    assert {"latent_mean", "latent_var", "stats_count"} <= set(built.method.state_dict())


def test_checkpoint_loads_as_an_autoencoder_and_refuses_other_data(rae_checkpoint: Path) -> None:
    rae = load_autoencoder(rae_checkpoint, (1, 8, 8))
    assert rae.latent_shape == (32, 4, 4) and int(rae.method.stats_count) > 0
    with pytest.raises(ValueError, match=r"trained on images of shape \[1, 8, 8\].*data are \[1, 16, 16\]"):
        load_autoencoder(rae_checkpoint, (1, 16, 16))


def test_resume_is_exact(tmp_path: Path) -> None:
    tiny = [*TINY, "callbacks=default", "~callbacks.progress", "~callbacks.lr_monitor", "+test=false",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    fit(compose_config([*tiny, "trainer.max_epochs=2"], tmp_path / "unbroken"))
    fit(compose_config([*tiny, "trainer.max_epochs=1"], tmp_path / "resumed"))
    fit(compose_config([*tiny, "trainer.max_epochs=2", "resume=auto"], tmp_path / "resumed"))
    unbroken, resumed = (
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for run in ("unbroken", "resumed")
    )
    assert [k for k in unbroken if not torch.equal(unbroken[k], resumed[k])] == []


def test_an_encoder_without_patch_tokens_is_refused(make_config) -> None:
    with pytest.raises((ValueError, InstantiationException), match="its pooled output alone, no patch tokens"):
        build(make_config("method=rae", "encoder=random"))  # a ResNet: 1x1 map on 8 px
    with pytest.raises((ValueError, InstantiationException), match="needs a frozen representation encoder"):
        build(make_config("method=rae"))


def test_a_decoder_patch_that_does_not_tile_the_grid_is_refused() -> None:
    with pytest.raises(ValueError, match=r"method.decoder.patch_size=4 does not tile the 4x4 token grid.*patch_size=2"):
        tiny_rae(patch_size=4)
    encoder = random_encoder(ViT(img_size=12, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=4), 12)
    with pytest.raises(ValueError, match="3x3 token grid does not tile the 8 px image"):
        RAE(encoder, (1, 8, 8), ViTDecoder, optimizer=torch.optim.AdamW)


def test_a_dit_narrower_than_the_tokens_warns_with_the_papers_finding() -> None:
    with pytest.warns(UserWarning, match="net.width=16 is below the token dimension 32") as caught:
        token_dit(image_size=4, in_channels=32, width=16)
    assert WIDTH_FINDING in str(caught[0].message) and "net.head_depth=2" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token_dit(image_size=4, in_channels=32, width=64)
        token_dit(image_size=4, in_channels=32, width=16, head_depth=2, head_width=64)
        cfg = compose_config(["method=diffusion", "net=dit_dh"], Path("unused"))
        cfg.shape = [32, 4, 4]
        instantiate(cfg.net)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])  # seed 1 passed too; one seed keeps CI short
def test_width_claim_in_small(seed: int, tmp_path: Path) -> None:
    """RAE's width claim: below the token dim the loss stays high; at/above it, or with the DDT head, it does not."""
    overrides = [
        "experiment=rae_digits",
        "study_jobs=2",
        f"seed={seed}",
        "study.encoder_run=['method=moco','net=vit','net.embed_dim=32','net.num_heads=4','data.views=mocov2_noflip',"
        "'trainer.max_epochs=3']",
        "study.rae_run=['method=rae','encoder=zoo','method.decoder.width=64','method.decoder.depth=2','trainer.max_epochs=3']",
        "study.taus=[0.8]",
        "study.diffusion_run=['method=diffusion','net=dit_dh','net.depth=2','method.sampler.steps=4',"
        "'method.cache_latents=true','data.batch_size=64','trainer.max_epochs=8','trainer.check_val_every_n_epoch=4',"
        "'~callbacks.generative','~callbacks.samples','+test=false']",
        "study.n_samples=200",
    ]
    cfg = compose_config(overrides, tmp_path)
    instantiate(cfg.study, _partial_=True)(cfg)
    width = json.loads((tmp_path / "rae_digits.json").read_text())["width"]
    assert width["narrow"]["loss"] > 1.2 * width["wide"]["loss"]
    assert width["narrow"]["loss"] > 1.2 * width["narrow_dh"]["loss"]


def test_diffusion_trains_on_rae_tokens_through_the_autoencoder_slot(rae_checkpoint: Path, make_config) -> None:
    built = build(make_config("method=diffusion", "net=dit_dh", f"autoencoder={rae_checkpoint}", *QUICK))
    assert built.method.shape == (32, 4, 4) and built.method.net.patch_size == 1
    built.trainer.fit(built.method, datamodule=built.datamodule)
    assert built.method.sample(2).shape == (2, 1, 8, 8)


def test_the_autoencoder_slot_refuses_an_rae_of_another_image_size(rae_checkpoint: Path, make_config) -> None:
    with pytest.raises(ValueError, match=r"trained on images of shape \[1, 8, 8\].*data are \[1, 16, 16\]"):
        build(make_config("method=diffusion", "net=dit_dh", f"autoencoder={rae_checkpoint}", "data.image_size=16"))
