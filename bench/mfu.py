"""Model FLOPs utilization: achieved FLOP/s of a training step as a share of this machine's matmul peak.

    python -m bench.mfu                                     # the default DiT training step, CPU fp32
    python -m bench.mfu --device cuda --precision bf16-mixed --steps 300 --methods dae diffusion jit moco

FLOPs of one step (forward and backward) are counted by ``torch.utils.flop_counter.FlopCounterMode``;
the step time is measured through the real Trainer (``bench.common.fit_timed``); the peak is the
fastest large square matmul timed in the same run, in the training precision's dtype (float32 with
TF32 off for ``32-true``, bfloat16 for ``bf16-mixed``). Without ``--methods`` the run is the default
diffusion method with the DiT (``net=dit``); with it, each method's default run.
"""

from __future__ import annotations

import torch

from bench.common import (
    arguments,
    environment,
    fit_timed,
    matmul_peak,
    report,
    to_device,
    training_step_flops,
)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], steps=10, warmup=2)
    parser.add_argument("--methods", nargs="*", default=None, help="methods' default runs instead of the DiT")
    parser.add_argument("--matmul-size", type=int, default=None, help="peak matmul size (cpu 2048, cuda 8192)")
    args = parser.parse_args()
    print(environment(args.device))

    dtype = torch.bfloat16 if args.precision == "bf16-mixed" else torch.float32
    size = args.matmul_size or (8192 if args.device == "cuda" else 2048)
    peak = matmul_peak(args.device, dtype, size)
    runs = {name: [f"method={name}"] for name in args.methods} if args.methods else {"dit": ["method=diffusion", "net=dit"]}

    rows, values = [], {"matmul_peak_tflops": peak / 1e12}
    for label, overrides in runs.items():
        measured, built = fit_timed(overrides, args.device, args.precision, args.steps, args.warmup)
        method = built.method.to(args.device)
        batch = to_device(next(iter(built.datamodule.train_dataloader())), args.device)
        flops = training_step_flops(method, batch, args.device, args.precision)
        achieved = flops / measured.seconds_per_step
        rows.append([label, int(batch["x"].shape[0]), flops / 1e9, measured.seconds_per_step * 1e3,
                     measured.samples_per_s, achieved / 1e12, achieved / peak])
        values[f"{label}_train_samples_per_s"] = measured.samples_per_s
        values[f"{label}_achieved_tflops"] = achieved / 1e12
        values[f"{label}_mfu_ratio"] = achieved / peak
    report(
        f"model FLOPs utilization ({args.precision}; peak {peak / 1e12:.4g} TFLOP/s from a {size}^2 {dtype} matmul)",
        ["run", "batch", "GFLOP/step", "ms/step", "samples/s", "TFLOP/s", "MFU"],
        rows,
        values,
    )


if __name__ == "__main__":
    main()
