#!/usr/bin/env bash
# What a person sees in TensorBoard over a sweep of runs that differ in one override: screenshots of the
# Time Series and HParams tabs taken by headless Chromium (Debian: apt-get install chromium), and the
# first scalar group and the ticked HParams columns as name=value lines. tests/test_tensorboard_view.py
# checks the same through TensorBoard's HTTP API in the suite.
#   bash bench/tensorboard_view.sh [OUT_DIR]      # default: figures/tensorboard
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-figures/tensorboard}"
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
sweep="$(mktemp -d)"
port=6123
trap 'kill "$tensorboard" 2>/dev/null || true; rm -rf "$sweep"' EXIT
OMP_NUM_THREADS=1 python run.py -m method.optimizer.lr=1e-3,3e-3 trainer=debug trainer.max_epochs=2 \
  callbacks.generative.n_samples=500 "hydra.sweep.dir=$sweep" >"$sweep/sweep.log" 2>&1 \
  || { tail -20 "$sweep/sweep.log" >&2; exit 1; }
python -m tensorboard.main --logdir "$sweep" --port "$port" --host 127.0.0.1 >/dev/null 2>&1 &
tensorboard=$!
until curl -s "http://127.0.0.1:$port/data/runs" >/dev/null; do sleep 0.5; done
mkdir -p "$out"
for tab in timeseries hparams; do
  chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1000 \
    --virtual-time-budget=20000 --screenshot="$out/$tab.png" "http://127.0.0.1:$port/#$tab" >/dev/null 2>&1
  echo "screenshot_$tab=$out/$tab.png"
done
curl -s "http://127.0.0.1:$port/data/plugin/timeseries/tags" | python -c "
import json, sys
tags = json.load(sys.stdin)['scalars']['runTagInfo']
print('scalar_groups=' + ','.join(sorted({t.split('/')[0] for run in tags.values() for t in run})))"
curl -s -X POST -H 'Content-Type: application/json' \
  -d '{"experimentName": "", "includeMetrics": true, "hparamsLimit": 1000}' \
  "http://127.0.0.1:$port/data/plugin/hparams/experiment" | python -c "
import json, sys
infos = json.load(sys.stdin)['hparamInfos']
ordered = [i for i in infos if i.get('differs')] + [i for i in infos if not i.get('differs')]
print('hparams_ticked=' + ','.join(i['name'] for i in ordered[:5]))"
