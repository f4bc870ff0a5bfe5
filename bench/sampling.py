"""Sampling speed of the default diffusion model per sampler (euler, heun, sde, ddim) at equal NFE.

    python -m bench.sampling                     # CPU, 32 net evaluations per sample, 64 samples
    python -m bench.sampling --device cuda --precision bf16-mixed --samples 1024

Each sampler gets the largest number of steps whose count of net evaluations (NFE, counted with a
forward hook on the net) is at most ``--nfe``: Heun evaluates the net twice per step, the others once.
The weights are the untrained initial ones: the cost of a net evaluation does not depend on them.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench.common import arguments, autocast, compose_run, environment, report, synchronize
from zoo.diffusion.samplers import SAMPLERS


def count_nfe(method: torch.nn.Module, sampler: str, steps: int) -> int:
    """Net evaluations of one ``sample`` call with ``steps`` steps."""
    calls = [0]
    handle = method.net.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        method.sample(1, name=sampler, steps=steps)
    finally:
        handle.remove()
    return calls[0]


def steps_for_nfe(method: torch.nn.Module, sampler: str, nfe: int) -> tuple[int, int]:
    """``(steps, NFE)``: the most steps whose NFE is at most ``nfe``."""
    best = (1, count_nfe(method, sampler, 1))
    for steps in range(2, nfe + 1):
        used = count_nfe(method, sampler, steps)
        if used > nfe:
            break
        best = (steps, used)
    return best


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], steps=2, warmup=1)
    parser.add_argument("--nfe", type=int, default=32, help="net evaluations per sample")
    parser.add_argument("--samples", type=int, default=64, help="samples per timed call")
    args = parser.parse_args()
    print(environment(args.device))

    from zoo.app.train import build

    with tempfile.TemporaryDirectory() as folder:
        cfg = compose_run(["method=diffusion", "callbacks=none", "logger=csv"], Path(folder))
        method = build(cfg).method.to(args.device).eval()
    rows, values = [], {}
    for sampler in SAMPLERS:
        steps, nfe = steps_for_nfe(method, sampler, args.nfe)
        durations = []
        for index in range(args.warmup + args.steps):
            generator = torch.Generator(device=args.device).manual_seed(index)
            synchronize(args.device)
            start = time.perf_counter()
            with autocast(args.device, args.precision):
                method.sample(args.samples, name=sampler, steps=steps, generator=generator)
            synchronize(args.device)
            durations.append(time.perf_counter() - start)
        per_second = args.samples / min(durations[args.warmup :])
        rows.append([sampler, steps, nfe, per_second])
        values[f"{sampler}_samples_per_s"] = per_second
    report(f"sampling, {args.samples} samples per call, NFE <= {args.nfe} ({args.precision})",
           ["sampler", "steps", "NFE", "samples/s"], rows, values)


if __name__ == "__main__":
    main()
