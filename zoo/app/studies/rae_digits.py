"""RAE's three claims in small (Zheng, Ma, Tong, Xie 2025; specs: alignment.md §3, small-scale check).

The study trains (or takes, ``encoder_ckpt``) a MoCo ViT on the digits as the frozen representation
encoder, trains two RAE decoders on its tokens, one per ``taus`` entry (noise-augmented decoding with
tau = 0.8 against tau = 0), and trains stage 2 per arm at equal steps: the diffusion config of
``diffusion_run`` with ``autoencoder=<the tau 0.8 RAE>``. The two decoders share one latent space
(same frozen encoder, data and statistics), so a latent model's samples can be decoded by either.

- ``noise_aug``: the same generated latents (the ``wide`` model, shifted) decoded by each decoder
  (``gen_fd``), and the train split encoded and decoded by each (``rec_fd``);
- ``width``: body width below the token dim (``narrow``), at/above it (``wide``), and narrow with the wide
  shallow DDT head (``narrow_dh``): the final val/loss (the val split, seeded noise and times, EMA
  weights) and ``gen_fd``;
- ``shift``: the ``wide`` model with the dimension-dependent shift ``alpha = sqrt(m / shift_base)``,
  ``m = C*H*W`` of the latent, in training and in the sampler (``dim``), against none (``none``).

Every FD is the reference classifier's Fréchet distance (``callbacks.metrics.reference_net``) to the train
split, of ``n_samples`` decoded images. Writes ``<name>.json`` and ``<name>.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch import Tensor

from zoo.app.configs import base_overrides, compose_run
from zoo.app.studies.reference_fd import ReferenceFD
from zoo.app.study import fit_checkpoints, fit_runs, last_checkpoint
from zoo.autoencoder import load_autoencoder
from zoo.diffusion.time_samplers import alpha_for_dim
from zoo.loading import Has, load_method


def dimension_alpha(latent_shape: Sequence[int], base: int) -> float:
    """RAE's shift factor from the latent's shape: ``sqrt(C*H*W / base)``."""
    return alpha_for_dim(math.prod(latent_shape), base)


def latent_overrides(overrides: Sequence[str], autoencoder: Path, shift_base: int | None) -> list[str]:
    """``overrides`` in the latent space of ``autoencoder``; ``shift_base`` turns on the method's
    dimension-dependent shift (``method.dimension_shift``: alpha from the latent's shape)."""
    shift = [] if shift_base is None else [f"method.dimension_shift={shift_base}"]
    return [*overrides, *shift, f"autoencoder={autoencoder}"]


def latent_config(overrides: Sequence[str], autoencoder: Path, shift_base: int | None) -> DictConfig:
    """The run config of ``latent_overrides``, composed like the study's runs."""
    return compose_run(
        [*base_overrides(), *latent_overrides(overrides, autoencoder, shift_base), "study=null"]
    )


def draw(method: torch.nn.Module, n: int, seed: int, chunk: int = 500) -> Tensor:
    """``n`` samples in pixels, chunk ``c`` under seed ``seed + c``."""
    return torch.cat(
        [
            method.sample(len(part), generator=torch.Generator().manual_seed(seed + c))
            for c, part in enumerate(torch.arange(n).split(chunk))
        ]
    )


def run(
    cfg: DictConfig,
    name: str,
    encoder_run: Sequence[str],
    rae_run: Sequence[str],
    diffusion_run: Sequence[str],
    taus: Sequence[float],
    widths: Mapping[str, Sequence[str]],
    shift_base: int,
    n_samples: int,
    encoder_ckpt: str | None = None,
) -> dict[str, float]:
    """Train or load the encoder, the decoders and the latent DiTs; write ``<name>.json``/``.md``."""
    if set(widths) != {"narrow", "wide", "narrow_dh"}:
        raise ValueError(
            f"study.widths has arms {sorted(widths)}; the width claim needs narrow, wide and narrow_dh"
        )
    root = Path(cfg.paths.output_dir)
    seed = int(cfg.seed)
    encoder_path = (
        Path(encoder_ckpt) if encoder_ckpt else fit_checkpoints(cfg, name, {"moco": encoder_run})["moco"]
    )
    reference = ReferenceFD(cfg)
    datamodule = reference.datamodule
    decoders = fit_checkpoints(
        cfg,
        name,
        {
            f"rae_tau{tau:g}": [*rae_run, f"encoder.ckpt={encoder_path}", f"method.noise_tau={tau}"]
            for tau in taus
        },
    )
    paths = {label.removeprefix("rae_"): path for label, path in decoders.items()}
    raes = {
        label: load_autoencoder(path, datamodule.shape, setting=f"study rae_{label}")
        for label, path in paths.items()
    }
    noised = f"tau{max(taus):g}"
    latent_shape = raes[noised].latent_shape
    alpha = dimension_alpha(latent_shape, shift_base)

    real_x, _ = datamodule.train_tensor()
    fd = reference.fd

    arms = {
        **{width: (widths[width], shift_base) for width in widths},
        "wide_noshift": (widths["wide"], None),
    }
    runs = {
        arm: latent_overrides([*diffusion_run, *overrides], paths[noised], arm_shift)
        for arm, (overrides, arm_shift) in arms.items()
    }
    losses = {arm: row["loss"] for arm, row in fit_runs(cfg, name, runs, {"loss": "val/loss"}).items()}
    models = {
        arm: load_method(last_checkpoint(cfg, arm), expect=Has("sample"), setting=f"study {arm}") for arm in arms
    }

    figures: dict[str, dict[str, dict[str, tuple[float, float, float]]]] = {
        "noise_aug": {},
        "width": {},
        "shift": {},
    }
    wide = models["wide"]
    for label, rae in raes.items():
        wide.space.autoencoder = rae  # one latent space: the same generated latents through this decoder
        with torch.no_grad():
            reconstructed = torch.cat([rae.decode(rae.encode(x)) for x in real_x.split(500)])
        figures["noise_aug"][label] = {"gen_fd": fd(draw(wide, n_samples, seed)), "rec_fd": fd(reconstructed)}
    wide.space.autoencoder = raes[noised]
    samples = {arm: draw(model, n_samples, seed) for arm, model in models.items()}
    for arm in widths:
        figures["width"][arm] = {"loss": losses[arm], "gen_fd": fd(samples[arm])}
    figures["shift"] = {
        "none": {"gen_fd": fd(samples["wide_noshift"])},
        "dim": {"gen_fd": fd(samples["wide"])},
    }
    tree = {
        claim: {
            arm: {key: value if isinstance(value, float) else value[0] for key, value in row.items()}
            for arm, row in rows.items()
        }
        for claim, rows in figures.items()
    }
    if rank_zero_only.rank == 0:
        write(root, name, tree, figures, latent_shape, alpha)
    return {
        f"{claim}/{arm}/{key}": value
        for claim, rows in tree.items()
        for arm, row in rows.items()
        for key, value in row.items()
    }


def write(
    root: Path,
    name: str,
    tree: Mapping,
    figures: Mapping,
    latent_shape: Sequence[int],
    alpha: float,
) -> None:
    """``<name>.json`` (the figures) and ``<name>.md`` (one table per claim, FDs with 90% bootstrap intervals)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.json").write_text(json.dumps(tree, indent=2))

    def cell(value: tuple[float, float, float]) -> str:
        return f"{value[0]:.3g} [{value[1]:.3g}, {value[2]:.3g}]"

    lines = [f"# {name}", "", f"Latent {' x '.join(map(str, latent_shape))}, shift alpha = {alpha:.3g}.", ""]
    lines += ["## (a) noise-augmented decoding", "", "| decoder | gen_fd | rec_fd |", "|---|---|---|"]
    lines += [
        f"| {arm} | {cell(row['gen_fd'])} | {cell(row['rec_fd'])} |"
        for arm, row in figures["noise_aug"].items()
    ]
    lines += ["", "## (b) DiT width", "", "| arm | loss | gen_fd |", "|---|---|---|"]
    lines += [
        f"| {arm} | {row['loss']:.4g} | {cell(row['gen_fd'])} |" for arm, row in figures["width"].items()
    ]
    lines += ["", "## (c) dimension-dependent shift", "", "| arm | gen_fd |", "|---|---|"]
    lines += [f"| {arm} | {cell(row['gen_fd'])} |" for arm, row in figures["shift"].items()]
    (root / f"{name}.md").write_text("\n".join(lines) + "\n")
