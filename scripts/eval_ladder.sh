#!/usr/bin/env bash
# The authors' evaluation (paper-literal) and the ladder for the models of leaderboard/mnist-ladder.json, one model
# at a time, skipping models that are not shipped; resumable (rerun to continue; finished entries are up to date).
# Usage: scripts/eval_ladder.sh [name ...]   (default: every model of the config, in its priority order)
set -uo pipefail
cd "$(dirname "$0")/.."
mapfile -t ALL < <(python -c "import json; [print(m) for r in json.load(open('leaderboard/mnist-ladder.json'))['runs'] for m in r['models']]")
[ $# -gt 0 ] && ALL=("$@")
mkdir -p runs/logs
for name in "${ALL[@]}"; do
  if ! python -c "import sys, lwta_plugin.zoo as z; sys.exit(0 if any(e['name'] == '$name' for e in z.available_models('mnist')) else 1)"; then
    echo "skip $name (not shipped)"; continue
  fi
  lwta evaluate --config leaderboard/mnist-ladder.json --model "$name" --threads 1 --no-progress \
    >> "runs/logs/eval_ladder_$name.log" 2>&1 && echo "done $name" || echo "FAILED $name (runs/logs/eval_ladder_$name.log)"
done
