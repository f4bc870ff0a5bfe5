#!/usr/bin/env bash
# On a machine with a CUDA GPU: every method a few hundred bf16 training steps through the real Trainer
# (samples/s and model FLOPs utilization against a measured bf16 matmul peak), the default DiT step,
# Lightning's overhead on the default diffusion step, and sampling speed per sampler.
# Prints the benchmarks' tables and name=value lines.
#   bash bench/gpu_check.sh            # 300 timed steps per run
#   bash bench/gpu_check.sh 500
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then
  . .venv/bin/activate
fi
steps="${1:-300}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: bench/gpu_check.sh needs a GPU')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
common=(--device cuda --precision bf16-mixed --warmup 20 --steps "$steps")
python -m bench.mfu "${common[@]}" --methods dae diffusion jit moco
python -m bench.mfu "${common[@]}"
python -m bench.throughput "${common[@]}" --methods diffusion --rounds 5
python -m bench.data --device cuda --precision bf16-mixed --seconds 1
python -m bench.sampling --device cuda --precision bf16-mixed --samples 1024 --steps 5 --warmup 2
