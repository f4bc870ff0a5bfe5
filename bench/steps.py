"""Training steps per second of the default run and of ``experiment=moco_digits``, with the batch-at-once
data path (``datamodules.base``) against the per-item path it replaced (``+data.batched=false``).

    python -m bench.steps                          # CPU, 10 timed steps per run, 4 interleaved rounds
    python -m bench.steps --steps 30 --rounds 5

Each run is the real config through the real Trainer (``bench.common.fit_timed``: callbacks kept,
no validation, checkpoints or progress bar). The two data paths alternate within each round (which
goes first alternates too); every step is timed by the process's CPU time and by wall time.
``<run>_batched_vs_per_item_ratio`` is per-item CPU time per step / batched CPU time per step (median
steps, paired rounds as in ``bench.common.Ratio``; > 1: the batched path is faster; headline), ``..._wall_ratio`` the same by
wall time; ``<run>_steps_per_cpu_s`` and ``<run>_steps_per_s`` are the batched path's rates.
"""

from __future__ import annotations

from statistics import median

import torch

from bench.common import arguments, clock_options, environment, fit_timed, ratio, report

RUNS = {"default": [], "moco_digits": ["experiment=moco_digits"]}
PATHS = {"batched": [], "per_item": ["+data.batched=false"]}


def main() -> None:
    parser = clock_options(arguments(__doc__.splitlines()[0], steps=10, warmup=3))
    parser.add_argument("--rounds", type=int, default=4, help="interleaved batched/per-item rounds (even)")
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(environment(args.device))

    rows, values = [], {}
    for run in args.runs:
        measured = {path: [] for path in PATHS}
        fit_timed([*RUNS[run]], args.device, args.precision, 2, 1)  # untimed: the process's first fit is cold
        for round_index in range(args.rounds):
            order = list(PATHS) if round_index % 2 == 0 else list(reversed(PATHS))
            for path in order:
                rate, _ = fit_timed([*RUNS[run], *PATHS[path]], args.device, args.precision, args.steps, args.warmup)
                measured[path].append((rate.cpu_median_step, rate.median_step))
                rows.append([run, round_index, path, rate.cpu_median_step * 1e3, rate.median_step * 1e3])
        speedup = ratio(measured["per_item"], measured["batched"])
        values[f"{run}_steps_per_cpu_s"] = 1 / median(cpu for cpu, _ in measured["batched"])
        values[f"{run}_steps_per_s"] = 1 / median(wall for _, wall in measured["batched"])
        values[f"{run}_per_item_steps_per_cpu_s"] = 1 / median(cpu for cpu, _ in measured["per_item"])
        values[f"{run}_per_item_steps_per_s"] = 1 / median(wall for _, wall in measured["per_item"])
        values[f"{run}_batched_vs_per_item_ratio"] = speedup.cpu
        values[f"{run}_batched_vs_per_item_wall_ratio"] = speedup.wall
        print(f"{run} per-item / batched step time {speedup.spread()}")
    report(
        f"training steps: batch-at-once data path vs per-item ({args.steps} timed steps, {args.rounds} rounds)",
        ["run", "round", "data path", "median step cpu ms", "median step wall ms"],
        rows,
        values,
    )


if __name__ == "__main__":
    main()
