#!/usr/bin/env bash
# On a machine with a CUDA GPU: the paper recipes' nets at their real size (bench/recipes.py: samples/s, peak
# memory, MFU against a measured bf16 matmul peak, host syncs in the step, DiT-B/2 compiled, Lightning against a
# plain loop, FSDP on one GPU), then every method's default run a few hundred bf16 steps through the real Trainer,
# the default DiT step, Lightning's overhead on the default diffusion step, and sampling speed per sampler.
# Prints the benchmarks' tables and name=value lines.
#   bash bench/gpu_check.sh                 # 200 timed steps per run
#   bash bench/gpu_check.sh 500
#   bash bench/gpu_check.sh --device cpu    # the recipes' check at tiny sizes on the CPU (tests/test_bench.py)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then
  . .venv/bin/activate
fi
device=cuda
if [ "${1:-}" = "--device" ]; then
  device="${2:?--device takes cpu or cuda}"
  shift 2
fi
if [ "$device" = cpu ]; then
  exec python -m bench.recipes --device cpu --tiny --steps 2 --warmup 1 --rounds 2
fi
steps="${1:-200}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: bench/gpu_check.sh needs a GPU (or --device cpu)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
common=(--device cuda --precision bf16-mixed --warmup 20 --steps "$steps")
python -m bench.recipes "${common[@]}" --rounds 6
python -m bench.mfu "${common[@]}" --methods dae diffusion jit moco
python -m bench.mfu "${common[@]}"
python -m bench.throughput "${common[@]}" --methods diffusion --rounds 6
python -m bench.data --device cuda --precision bf16-mixed --seconds 1
python -m bench.sampling --device cuda --precision bf16-mixed --samples 1024 --steps 5 --warmup 2
