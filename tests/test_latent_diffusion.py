"""The autoencoder slot of the diffusion method (``autoencoder=<ckpt>``), the latent cache and the LightningDiT preset."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import flip_stored_float, unbroken_and_resumed
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from test_scale import assert_same_weights
from torch import Tensor

from callbacks.training.files import tensor_digest
from zoo import latent_cache
from zoo.app.tasks import method_to_evaluate
from zoo.app.train import build, fit
from zoo.autoencoder import FrozenAutoencoder
from zoo.latent_cache import cache_file, cached_latents, fingerprint
from zoo.loading import load_method
from zoo.methods.base import Method
from zoo.methods.diffusion import Diffusion

ENDS = ["callbacks=default", "~callbacks.progress", "+test=false"]
TINY_VAE = ["method=vae", "method.net.block_out_channels=[16,32]", "trainer=debug", "trainer.limit_train_batches=2",
            "logger=csv", *ENDS]
LATENT_DIT = ["net=dit", "net.patch_size=1", "net.width=32", "net.depth=1", "trainer=debug", "logger=csv"]


def trained(make_config, out: Path, *overrides: str) -> Path:
    fit(make_config(*overrides, output_dir=out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory) -> Path:
    from conftest import compose_config

    out = tmp_path_factory.mktemp("vae")
    fit(compose_config(TINY_VAE, out))
    return out / "checkpoints" / "last.ckpt"


class Identity(Method):
    """The identity autoencoder: ``encode = decode = id`` on images of ``shape``."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(optimizer=torch.optim.SGD)
        self.latent_shape = tuple(shape)

    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, z: Tensor) -> Tensor:
        return z


def identity_diffusion(make_config) -> tuple[Diffusion, L.LightningDataModule]:
    cfg = make_config("method=diffusion", *LATENT_DIT, "callbacks=none")
    built = build(cfg)
    autoencoder = FrozenAutoencoder(Identity((1, 8, 8)), (1, 8, 8), digest="identity")
    return instantiate(cfg.method, autoencoder=autoencoder, data_shape=[1, 8, 8]), built.datamodule


def test_the_identity_autoencoder_round_trips_through_the_slot_and_normalises_by_the_train_split(make_config) -> None:
    method, datamodule = identity_diffusion(make_config)
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(method, datamodule=datamodule)
    pixels, _ = datamodule.train_tensor()
    values = pixels.double().transpose(0, 1).flatten(1)
    assert torch.allclose(method.space.norm.mean.flatten().double(), values.mean(dim=1), atol=1e-6)
    assert torch.allclose(method.space.norm.std.flatten().double(), values.std(dim=1), atol=1e-6)
    x = pixels[:16]
    z = method.space.encode(x)
    assert torch.allclose(z, (x - values.mean().float()) / values.std().float(), atol=1e-5)
    assert torch.allclose(method.space.decode(z), x, atol=1e-5)
    assert method.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 8, 8)


def test_latent_statistics_of_a_seeded_subset_of_the_train_split(make_config) -> None:
    """``method.latent_statistics_images=n``: the moments of n training images, the same seeded n on every rank (an
    ImageNet split is not encoded whole before the first step)."""
    cfg = make_config("method=diffusion", *LATENT_DIT, "callbacks=none", "method.latent_statistics_images=100")
    built = build(cfg)
    autoencoder = FrozenAutoencoder(Identity((1, 8, 8)), (1, 8, 8), digest="identity")
    method = instantiate(cfg.method, autoencoder=autoencoder, data_shape=[1, 8, 8])
    built.datamodule.setup("fit")
    method.space.fit(built.datamodule, torch.device("cpu"))
    subset = torch.cat([batch["x"] for batch in built.datamodule.clean_train_dataloader(100)])
    again = torch.cat([batch["x"] for batch in built.datamodule.clean_train_dataloader(100)])
    assert len(subset) == 100 and torch.equal(subset, again)
    assert not torch.equal(subset, built.datamodule.train_tensor()[0][:100]), "a random subset, not the first images"
    values = subset.double().flatten()
    assert float(method.space.norm.mean) == pytest.approx(float(values.mean()), abs=1e-6)
    assert float(method.space.norm.std) == pytest.approx(float(values.std()), abs=1e-6)
    with pytest.raises((ValueError, InstantiationException), match="latent_statistics_images=1: .* at least 2"):
        instantiate(cfg.method, autoencoder=autoencoder, data_shape=[1, 8, 8], latent_statistics_images=1)


def test_an_unfitted_latent_model_outside_a_trainer_is_an_error(make_config) -> None:
    method, _ = identity_diffusion(make_config)
    with pytest.raises(RuntimeError, match="latent statistics are not fitted"):
        method.sample(2)


def test_latent_diffusion_trains_in_the_latents_and_samples_pixels(make_config, vae_ckpt: Path, tmp_path: Path) -> None:
    cfg = make_config("method=diffusion", *LATENT_DIT, f"autoencoder={vae_ckpt}", *ENDS, output_dir=tmp_path / "ldm")
    fit(cfg)
    path = tmp_path / "ldm" / "checkpoints" / "last.ckpt"
    model = load_method(path)
    assert model.shape == (4, 4, 4) and model.data_shape == (1, 8, 8)
    assert model.run_config["shape"] == [4, 4, 4] and model.run_config["data_shape"] == [1, 8, 8]
    assert bool(model.space.norm.fitted) and not any(p.requires_grad for p in model.space.autoencoder.parameters())
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 8, 8) and torch.isfinite(samples).all()
    assert model.embed(torch.zeros(2, 1, 8, 8)).shape[0] == 2
    evaluate = make_config(f"ckpt={path}", "task=eval", output_dir=tmp_path / "eval")
    assert method_to_evaluate(evaluate, instantiate(evaluate.data)) is not None


def test_lightningdit_is_the_rectified_flow_recipe_and_trains_in_a_latent_space(make_config, vae_ckpt: Path) -> None:
    cfg = make_config("method=lightningdit", *LATENT_DIT, f"autoencoder={vae_ckpt}", "callbacks=none",
                      "trainer.max_steps=1")
    method = build(cfg).method
    assert (method.prediction, method.loss_space, method.sampler["name"], method.sampler["shift"]) == ("v", "v", "euler", 0.3)
    assert type(method.time_sampler).__name__ == "LogitNormal" and list(method.terms) == ["cosine_velocity"]
    metrics = fit(cfg)
    assert "train/cosine_velocity" in metrics


def test_a_resumed_latent_diffusion_run_ends_with_the_weights_of_an_unbroken_one(
    make_config, vae_ckpt: Path, tmp_path: Path
) -> None:
    tiny = ["method=diffusion", *LATENT_DIT, f"autoencoder={vae_ckpt}", *ENDS, "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1", "data.n_train=96", "data.batch_size=32", "method.cache_latents=true",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    unbroken, resumed = unbroken_and_resumed(make_config, tmp_path, *tiny)
    assert resumed["global_step"] == unbroken["global_step"] == 6
    assert_same_weights(unbroken["state_dict"], resumed["state_dict"])


def frozen(path: Path) -> FrozenAutoencoder:
    from zoo.autoencoder import load_autoencoder

    return load_autoencoder(path, (1, 8, 8))


def test_the_cache_is_read_once_built_and_rebuilt_when_the_checkpoint_changes(
    make_config, vae_ckpt: Path, tmp_path: Path, monkeypatch
) -> None:
    pixels = torch.rand(20, 1, 8, 8) * 2 - 1
    first = frozen(vae_ckpt)
    cache = cached_latents(first, first.digest, pixels, tmp_path, torch.device("cpu"))
    assert torch.allclose(cache.latents, first.encode(pixels), atol=1e-6)
    assert torch.equal(cache.lookup(pixels[[3, 1]]), cache.latents[[3, 1]])
    calls = []
    encode_all = latent_cache.encode_all
    monkeypatch.setattr(latent_cache, "encode_all", lambda e, p, d: calls.append(len(p)) or encode_all(e, p, d))
    cached_latents(first, first.digest, pixels, tmp_path, torch.device("cpu"))
    assert calls == [latent_cache.SPOT_CHECK]  # read: only the spot check is encoded
    other = frozen(trained(make_config, tmp_path / "other", *TINY_VAE, "seed=1"))
    assert other.digest != first.digest
    rebuilt = cached_latents(other, other.digest, pixels, tmp_path, torch.device("cpu"))
    assert calls[-1] == len(pixels) and torch.allclose(rebuilt.latents, other.encode(pixels), atol=1e-6)
    assert len(list((tmp_path / "latents").glob("*.pt"))) == 2


def test_a_corrupt_or_stale_cache_is_rebuilt_with_a_message(vae_ckpt: Path, tmp_path: Path) -> None:
    pixels = torch.rand(12, 1, 8, 8) * 2 - 1
    autoencoder = frozen(vae_ckpt)
    path = cache_file(tmp_path, autoencoder.digest, fingerprint(pixels))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match=r"is not used: it cannot be read .*truncated or corrupted.*rebuilding"):
        cache = cached_latents(autoencoder, autoencoder.digest, pixels, tmp_path, torch.device("cpu"))
    assert torch.allclose(cache.latents, autoencoder.encode(pixels), atol=1e-6)
    torch.save({"key": path.stem, "latents": cache.latents + 1, "sha256": tensor_digest(cache.latents + 1)}, path)
    with pytest.warns(UserWarning, match="differ from a fresh encoding"):
        cached_latents(autoencoder, autoencoder.digest, pixels, tmp_path, torch.device("cpu"))
    torch.save({"key": "another", "latents": cache.latents}, path)
    with pytest.warns(UserWarning, match="another checkpoint or other data"):
        cached_latents(autoencoder, autoencoder.digest, pixels, tmp_path, torch.device("cpu"))
    with pytest.raises(ValueError, match="not in the latent cache"):
        cache.lookup(-pixels[:2])


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_a_cache_damaged_past_its_first_rows_is_rebuilt_with_a_message(
    vae_ckpt: Path, tmp_path: Path, fraction: float
) -> None:
    """One flipped bit in a late row, which the spot check of the first rows cannot see: the digest does."""
    pixels = torch.rand(40, 1, 8, 8) * 2 - 1
    autoencoder = frozen(vae_ckpt)
    built = cached_latents(autoencoder, autoencoder.digest, pixels, tmp_path, torch.device("cpu"))
    path = cache_file(tmp_path, autoencoder.digest, fingerprint(pixels))
    flip_stored_float(path, "data/0", fraction)
    damaged = torch.load(path, map_location="cpu", weights_only=True)["latents"]
    changed = (damaged != built.latents).flatten(1).any(1).nonzero().flatten().tolist()
    assert len(changed) == 1 and changed[0] >= latent_cache.SPOT_CHECK
    with pytest.warns(UserWarning, match=r"is not used: its latents do not match their stored SHA-256.*rebuilding"):
        rebuilt = cached_latents(autoencoder, autoencoder.digest, pixels, tmp_path, torch.device("cpu"))
    assert torch.equal(rebuilt.latents, built.latents)
    assert torch.equal(torch.load(path, map_location="cpu", weights_only=True)["latents"], built.latents)


def refusal(make_config, *overrides: str) -> str:
    with pytest.raises((ValueError, InstantiationException)) as caught:
        build(make_config(*overrides))
    return str(caught.value)


def test_an_autoencoder_slot_that_does_not_fit_is_refused_before_training(
    make_config, vae_ckpt: Path, tmp_path: Path
) -> None:
    dae = trained(make_config, tmp_path / "dae", "method=dae", "trainer=debug", "logger=csv", *ENDS)
    message = refusal(make_config, "method=diffusion", *LATENT_DIT, f"autoencoder={dae}")
    assert f"autoencoder={dae} is a DAE checkpoint" in message and "expected the checkpoint of an autoencoder" in message
    message = refusal(make_config, "method=diffusion", *LATENT_DIT, f"autoencoder={vae_ckpt}", "data.image_size=16")
    assert "trained on images of shape [1, 8, 8]" in message and "the data are [1, 16, 16]" in message
    message = refusal(make_config, "method=moco", f"autoencoder={vae_ckpt}")
    assert "method=moco takes no autoencoder" in message and "method=diffusion" in message
    assert "caches an autoencoder's latents, but there is no autoencoder" in refusal(
        make_config, "method=diffusion", *LATENT_DIT, "method.cache_latents=true"
    )


def test_cached_latents_with_augmented_data_are_refused_before_training(make_config, vae_ckpt: Path, tmp_path) -> None:
    cfg = make_config("method=diffusion", *LATENT_DIT, f"autoencoder={vae_ckpt}", "method.cache_latents=true",
                      "data.augment=flip", "callbacks=none", f"paths.cache_dir={tmp_path}")
    built = build(cfg)
    with pytest.raises(ValueError, match="caches the unaugmented train split, but data.augment=flip"):
        built.trainer.fit(built.method, datamodule=built.datamodule)
    assert built.trainer.global_step == 0


def test_the_study_refuses_a_missing_encoder_checkpoint_before_training(make_config, tmp_path: Path) -> None:
    cfg = make_config("experiment=vavae_digits", "study.encoder_ckpt=/nonexistent.ckpt")
    with pytest.raises(FileNotFoundError, match="study.encoder_ckpt=/nonexistent.ckpt: no such checkpoint"):
        instantiate(cfg.study, _partial_=True)(cfg)
    assert not (tmp_path / "run" / "d4_vae").exists()


@pytest.mark.slow
def test_the_reduced_vavae_digits_study_reconstructs_better_at_higher_d(make_config, tmp_path: Path) -> None:
    """A reduced experiment=vavae_digits (both d, both arms, short runs). What it checks is what held in the
    runs here: d = 16 reconstructs better than d = 4 with and without the VF loss. The VF loss's generation
    advantage at d = 16 is not asserted: it appears at the experiment's budget (seeds 0 and 1: gen FD 5.01 vs 6.11,
    5.04 vs 6.00) but not in runs this short (see README), and the full budget takes about 9 minutes."""
    cfg = make_config("experiment=vavae_digits", "study_jobs=2", "study.encoder_epochs=2", "study.autoencoder_epochs=6",
                      "study.diffusion_epochs=2", "study.n_samples=200", output_dir=tmp_path / "study")
    metrics = instantiate(cfg.study, _partial_=True)(cfg)
    for arm in ("vae", "vavae"):
        assert metrics[f"d16/{arm}/rec_mse"] < metrics[f"d4/{arm}/rec_mse"]
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values())
    assert (tmp_path / "study" / "vavae_digits.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])  # seeds 1 and 2 pass too (gen FD 5.74 vs 5.97, 4.25 vs 5.13); one keeps CI short
def test_at_d16_the_vf_loss_lowers_the_generation_fd_at_matched_reconstruction(
    seed: int, make_config, tmp_path: Path
) -> None:
    """The d = 16 arms of experiment=vavae_digits at its budget (MoCo 10, autoencoders 20, DiTs 40 epochs) with
    500 samples: VA-VAE's claim in small, the VF loss buys generation FD (seed 0: 5.41 vs 5.83) at a
    reconstruction MSE within 10% (0.0292 vs 0.0282)."""
    cfg = make_config("experiment=vavae_digits", f"seed={seed}", "study_jobs=2", "study.dims=[16]",
                      "study.n_samples=500", output_dir=tmp_path / "study")
    metrics = instantiate(cfg.study, _partial_=True)(cfg)
    assert metrics["d16/vavae/gen_fd"] < metrics["d16/vae/gen_fd"]
    assert metrics["d16/vavae/rec_mse"] < 1.1 * metrics["d16/vae/rec_mse"]
