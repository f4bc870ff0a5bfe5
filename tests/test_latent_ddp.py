"""The latent pipeline under 2-process DDP (gloo, one thread each): an autoencoder (VAE, RAE) trained by two
processes, then diffusion in its latent space trained by two processes. Each run's figures equal those one
process computes from its checkpoint (``task=eval``), as for pixel diffusion in ``test_scale``. A diffusion
run's validation loss is left out there as here: its noise and time draws are per rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_rae import VIT_ENCODER
from test_scale import FEW_STEPS, PROBES_AND_GENERATIVE, run_py

from zoo.app.train import fit

AUTOENCODERS = {
    "vae": ["method=vae", "method.net.block_out_channels=[16,32]"],
    "rae": ["method=rae", *VIT_ENCODER, "method.decoder.width=32", "method.decoder.depth=1"],
}
LATENT_DIT = [
    "method=diffusion",
    "net=dit",
    "net.patch_size=1",
    "net.width=32",
    "net.depth=1",
    "net.heads=2",
    "method.sampler.steps=4",
    "data.batch_size=64",
]
FIGURES = ("probe/", "stats/", "gen/")


def figures(metrics: dict[str, float], reconstruction: bool) -> dict[str, float]:
    """The probe, statistics and generative figures, with an autoencoder's validation losses."""
    return {k: v for k, v in metrics.items() if k.startswith(FIGURES + (("val/",) if reconstruction else ()))}


def ddp_figures(folder: Path, *overrides: str, reconstruction: bool = False) -> dict[str, float]:
    """Train with ``overrides`` on 2 processes into ``folder``; the figures of its metrics.json."""
    result = run_py("trainer=ddp", "trainer.devices=2", *FEW_STEPS, *overrides, f"hydra.run.dir={folder}")
    assert result.returncode == 0, result.stderr[-3000:]
    return figures(json.loads((folder / "metrics.json").read_text()), reconstruction)


def one_process_figures(
    make_config, folder: Path, *overrides: str, reconstruction: bool = False
) -> dict[str, float]:
    """The figures one process computes from ``folder``'s last.ckpt."""
    ckpt = folder / "checkpoints" / "last.ckpt"
    metrics = fit(make_config(*overrides, *FEW_STEPS, "task=eval", "+test=false", f"ckpt={ckpt}"))
    return figures(metrics, reconstruction)


def assert_equal_figures(two: dict[str, float], one: dict[str, float], expected: set[str]) -> None:
    assert expected <= set(two), sorted(two)
    for name in two:
        assert one[name] == pytest.approx(two[name], abs=1e-5), name


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(AUTOENCODERS))
def test_an_autoencoder_and_diffusion_in_its_latents_under_ddp_equal_one_process(
    kind: str, tmp_path: Path, make_config
) -> None:
    autoencoder = [*AUTOENCODERS[kind], "callbacks=probes"]
    two = ddp_figures(tmp_path / kind, *autoencoder, reconstruction=True)
    one = one_process_figures(make_config, tmp_path / kind, *autoencoder, reconstruction=True)
    assert_equal_figures(two, one, {"probe/linear_top1", "val/loss"})

    latent = [
        *LATENT_DIT,
        f"autoencoder={tmp_path / kind / 'checkpoints' / 'last.ckpt'}",
        *PROBES_AND_GENERATIVE,
    ]
    two = ddp_figures(tmp_path / "latent", *latent)
    assert_equal_figures(
        two,
        one_process_figures(make_config, tmp_path / "latent", *latent),
        {"probe/linear_top1", "gen/fd_features"},
    )
