"""The reconstruction-versus-generation dilemma in small, and VA-VAE's way out (Yao et al. CVPR 2025, Sec. 3-4;
specs: alignment.md §2, small-scale check).

Four autoencoders on the 8 px digits, f2 (4 x 4 latents): latent dim ``d`` in ``dims`` (4: 64 numbers per
image, as many as the pixels; 16: 256), each without (``vae``) and with the VF loss (``vavae``) aligned to
the zoo's MoCo encoder (trained here, or ``encoder_ckpt``) at its stage whose grid is the latent's.
For each: ``rec_mse`` (the MSE of ``decode(encode(x))`` on the val split) and ``rec_fd`` (the Fréchet
distance of those reconstructions to the train split in the digits' reference classifier's features,
``callbacks.metrics.reference_net``), then the same latent DiT (``diffusion_run``) trained for the same number
of steps in that latent space (``*_epochs``: one budget per kind of run) and ``gen_fd``, the FD of its ``n_samples`` samples in the same features.
``<name>.json``: ``{"d4": {"vae": {rec_mse, rec_fd, gen_fd}, "vavae": {...}}, "d16": {...}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from zoo.app.studies.reference_fd import ReferenceFD
from zoo.app.study import fit_checkpoints, flatten_results, write_report
from zoo.autoencoder import load_autoencoder
from zoo.loading import Has, load_method


def run(
    cfg: DictConfig,
    name: str,
    dims: Sequence[int],
    encoder_run: Sequence[str],
    vae_run: Sequence[str],
    vavae_run: Sequence[str],
    diffusion_run: Sequence[str],
    n_samples: int,
    encoder_epochs: int,
    autoencoder_epochs: int,
    diffusion_epochs: int,
    encoder_ckpt: str | None = None,
) -> dict[str, float]:
    """Train (or take) the encoder, then per ``d`` and arm the autoencoder and its latent DiT; write the table."""
    root = Path(cfg.paths.output_dir)
    if encoder_ckpt and not Path(encoder_ckpt).is_file():
        raise FileNotFoundError(
            f"study.encoder_ckpt={encoder_ckpt}: no such checkpoint; pass a MoCo run's last.ckpt or null"
        )
    encoder = (
        Path(encoder_ckpt)
        if encoder_ckpt
        else fit_checkpoints(cfg, name, {"moco": [*encoder_run, f"trainer.max_epochs={encoder_epochs}"]})[
            "moco"
        ]
    )
    reference = ReferenceFD(cfg)
    datamodule = reference.datamodule
    val_loader = datamodule.probe_dataloaders()[1]
    val = torch.cat([batch["x"] for batch in val_loader])
    arms = {"vae": list(vae_run), "vavae": [*vavae_run, "encoder=zoo", f"encoder.ckpt={encoder}"]}
    cells = {f"d{d}_{arm}": (d, arm) for d in dims for arm in arms}
    autoencoders = fit_checkpoints(
        cfg,
        name,
        {
            label: [*arms[arm], f"method.net.latent_channels={d}", f"trainer.max_epochs={autoencoder_epochs}"]
            for label, (d, arm) in cells.items()
        },
    )
    latent = [f"trainer.max_epochs={diffusion_epochs}"]
    models = fit_checkpoints(
        cfg,
        name,
        {
            f"{label}_dit": [*diffusion_run, f"autoencoder={path}", *latent]
            for label, path in autoencoders.items()
        },
    )
    results: dict[str, dict[str, float]] = {}
    for label, (d, arm) in cells.items():
        autoencoder = load_autoencoder(autoencoders[label], datamodule.shape, setting=f"study ({label})")
        with torch.no_grad():
            recon = torch.cat([autoencoder.decode(autoencoder.encode(x)) for x in val.split(256)])
        model = load_method(models[f"{label}_dit"], expect=Has("sample"), setting=f"study ({label}_dit)")
        samples = model.sample(n_samples, generator=torch.Generator().manual_seed(int(cfg.seed)))
        results[f"d{d}/{arm}"] = {
            "rec_mse": float((recon - val).pow(2).mean()),
            "rec_fd": reference.fd(recon.clamp(-1, 1))[0],
            "gen_fd": reference.fd(samples.clamp(-1, 1))[0],
        }
    if rank_zero_only.rank == 0:
        write_report(root, name, results, single=False)
    return flatten_results(results)
