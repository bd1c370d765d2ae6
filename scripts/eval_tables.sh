#!/usr/bin/env bash
# Paper protocol for the models of the paper's MNIST tables (leaderboard/mnist-tables.json), one model at a time,
# skipping models that are not shipped yet or already evaluated (resumable: rerun to continue).
# Usage: scripts/eval_tables.sh [name ...]   (default: every model of the config)
set -uo pipefail
cd "$(dirname "$0")/.."
mapfile -t ALL < <(python -c "import json; [print(m) for r in json.load(open('leaderboard/mnist-tables.json'))['runs'] for m in r['models']]")
[ $# -gt 0 ] && ALL=("$@")
mkdir -p runs/logs
for name in "${ALL[@]}"; do
  if [ "$name" = lwta_ibp_softmax ]; then echo "skip $name (evaluated with leaderboard/mnist-session.json)"; continue; fi
  if ! python -c "import sys, lwta_plugin.zoo as z; sys.exit(0 if any(e['name'] == '$name' for e in z.available_models('mnist')) else 1)"; then
    echo "skip $name (not shipped)"; continue
  fi
  lwta evaluate --config leaderboard/mnist-tables.json --model "$name" --protocol paper --threads 1 --no-progress \
    >> "runs/logs/eval_tables_$name.log" 2>&1 && echo "done $name" || echo "FAILED $name (runs/logs/eval_tables_$name.log)"
done
