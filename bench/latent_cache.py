"""Latent-diffusion training speed with the on-disk latent cache (``method.cache_latents=true``) against
encoding every batch on the fly.

    python -m bench.latent_cache                       # CPU, the vavae_digits setting (8 px, f2, d 16)
    python -m bench.latent_cache --device cuda --steps 200 --image-size 16 --blocks 16 32 32

An autoencoder (``method=vae``, ``--blocks`` widths, ``--latent`` channels) is trained for one step (its
speed does not depend on its weights), then the LightningDiT preset (``method=lightningdit``, patch 1)
is timed through the real Trainer in its latent space ``--rounds`` times, alternating which of the two
goes first; the cache is built before the first cached round, so no round times its construction.
Steps are timed by the process's CPU time (the headline: ``cache_speedup_ratio``) and by wall time
(``cache_speedup_wall_ratio``), as in ``bench.common``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bench.common import arguments, clock_options, compose_run, environment, fit_timed, ratio, report
from zoo.app.train import fit


def main() -> None:
    parser = clock_options(arguments(__doc__.splitlines()[0], steps=30, warmup=3))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved cached/on-the-fly rounds")
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--blocks", type=int, nargs="+", default=[16, 32], help="AutoencoderKL block widths")
    parser.add_argument("--latent", type=int, default=16, help="latent channels")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(environment(args.device))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = [f"data.image_size={args.image_size}"]
        vae = [
            "method=vae", *data, f"method.net.block_out_channels=[{','.join(map(str, args.blocks))}]",
            f"method.net.latent_channels={args.latent}", "trainer.max_steps=1", "callbacks=default",
            "~callbacks.progress", "+test=false", "+trainer.limit_val_batches=0", "+trainer.enable_progress_bar=false",
        ]
        fit(compose_run(vae, root / "vae"))
        latent = [
            "method=lightningdit", *data, "net.patch_size=1", f"autoencoder={root / 'vae' / 'checkpoints' / 'last.ckpt'}",
            f"paths.cache_dir={root / 'cache'}", "~callbacks.generative", "~callbacks.samples",
        ]
        arms = {"cached": [*latent, "method.cache_latents=true"], "on_the_fly": latent}
        fit_timed(arms["cached"], args.device, args.precision, 2, 0)
        rates = {name: [] for name in arms}
        for round_index in range(args.rounds):
            order = list(arms) if round_index % 2 == 0 else list(reversed(arms))
            for name in order:
                rates[name].append(fit_timed(arms[name], args.device, args.precision, args.steps, args.warmup)[0])
    pairs = {name: [(r.cpu_per_step, r.seconds_per_step) for r in measured] for name, measured in rates.items()}
    speedup = ratio(pairs["on_the_fly"], pairs["cached"])
    rows = [[name, *(1 / (sum(value) / len(value)) for value in zip(*pairs[name]))] for name in arms]
    values = {
        "cached_steps_per_s": rows[0][2],
        "on_the_fly_steps_per_s": rows[1][2],
        "cached_steps_per_cpu_s": rows[0][1],
        "on_the_fly_steps_per_cpu_s": rows[1][1],
        "cache_speedup_ratio": speedup.cpu,
        "cache_speedup_wall_ratio": speedup.wall,
    }
    report(f"latent diffusion steps/s ({args.precision}, {args.steps} timed steps x {args.rounds} rounds)",
           ["latents", "steps/cpu-s", "steps/s"], rows, values)
    print(speedup.spread())


if __name__ == "__main__":
    main()
