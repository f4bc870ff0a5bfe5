"""``bench/gpu_check.sh --device cpu``: the GPU check's recipe benchmark at tiny sizes, every figure printed."""

from __future__ import annotations

import math
import subprocess

from conftest import ROOT

from bench.recipes import ROWS


def test_gpu_check_runs_on_the_cpu_and_prints_every_recipes_figures() -> None:
    result = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line and " " not in line)
    expected = ["matmul_peak_tflops", "dit_b2_lightning_overhead_ratio", "dit_b2_lightning_step_ms", "dit_b2_plain_step_ms"]
    for row in ROWS:
        expected += [f"{row}_samples_per_s", f"{row}_step_ms", f"{row}_gflop_per_step", f"{row}_mfu_ratio"]
    assert not set(expected) - set(values), f"missing: {sorted(set(expected) - set(values))}\n{result.stdout[-2000:]}"
    for name in expected:
        assert math.isfinite(float(values[name])) and float(values[name]) > 0, (name, values[name])
