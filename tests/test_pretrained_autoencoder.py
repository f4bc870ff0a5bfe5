"""``autoencoder=<folder>``: a local diffusers ``AutoencoderKL`` (the SD-VAE's format) as the latent space of
diffusion, read from its files alone (safetensors, no network), with a message naming the download when the folder
is not one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from diffusers import AutoencoderKL

from zoo.app.train import main
from zoo.autoencoder import load_autoencoder

LATENT_DIT = ["method=diffusion", "net=dit", "net.patch_size=1", "net.width=32", "net.depth=1", "net.heads=2",
              "method.sampler.steps=2"]


def write_diffusers_vae(folder: Path, channels: int = 1) -> AutoencoderKL:
    """A small AutoencoderKL saved as the SD-VAE is published: config.json and diffusion_pytorch_model.safetensors."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=channels, out_channels=channels, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
        norm_num_groups=8, sample_size=8,
    )
    vae.save_pretrained(folder)
    return vae


def test_a_diffusers_folder_loads_as_a_frozen_autoencoder(tmp_path: Path) -> None:
    vae = write_diffusers_vae(tmp_path / "vae")
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded = load_autoencoder(tmp_path / "vae", (1, 8, 8))
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    assert loaded.latent_shape == (4, 4, 4) and loaded.shape == (1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), vae.encode(x).latent_dist.mean)
        torch.testing.assert_close(loaded.decode(loaded.encode(x)), vae.decode(vae.encode(x).latent_dist.mean).sample)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.digest == load_autoencoder(tmp_path / "vae", (1, 8, 8)).digest


def test_diffusion_trains_and_samples_in_the_latents_of_a_diffusers_folder(tmp_path: Path) -> None:
    write_diffusers_vae(tmp_path / "vae")
    main(compose_config([*LATENT_DIT, f"autoencoder={tmp_path / 'vae'}", "trainer=debug", "callbacks=default",
                         "~callbacks.progress", "~callbacks.lr_monitor", "~logger"], tmp_path / "train"))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    main(compose_config(["task=sample", f"ckpt={ckpt}", "n=4", "method.sampler.steps=2"], tmp_path / "sample"))
    with np.load(tmp_path / "sample" / "samples.npz") as arrays:
        assert arrays["arr_0"].shape == (4, 8, 8, 3) and arrays["arr_0"].dtype == np.uint8


def test_a_folder_that_is_no_diffusers_vae_or_fits_other_images_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a diffusers AutoencoderKL.*huggingface-cli download stabilityai"):
        load_autoencoder(tmp_path / "empty", (1, 8, 8))
    write_diffusers_vae(tmp_path / "rgb", channels=3)
    with pytest.raises(ValueError, match="encodes images of 3 channels .* data are \\[1, 8, 8\\]"):
        load_autoencoder(tmp_path / "rgb", (1, 8, 8))
    missing = tmp_path / "weights" / "sd-vae-ft-mse"
    with pytest.raises(FileNotFoundError, match=f"no such folder; .*stabilityai/sd-vae-ft-ema --local-dir {missing} "):
        load_autoencoder(missing, (3, 8, 8))
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_autoencoder(tmp_path / "missing.ckpt", (3, 8, 8))
