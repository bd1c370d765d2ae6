#!/usr/bin/env bash
# Ship every finished checkpoint of scripts/train_mnist_zoo.sh that the weight store does not hold yet, with its
# model card (clean accuracy over the 10,000 test images, S = 5; 3 passes for the two headline models, 1 for the
# rest), with scripts/ship_model.py (= `lwta ship`, lwta_plugin/ship.py).
# Usage: scripts/ship_finished.sh [--watch]   (--watch: repeat every minute while training runs)
set -euo pipefail
cd "$(dirname "$0")/.."
ship_all() {
  for f in runs/mnist/*.pt; do
    case "$f" in *.best.pt|*.last.pt) continue ;; esac
    [ -e "$f" ] || continue
    name=$(basename "$f" .pt)
    if python -c "import sys, lwta_plugin.zoo as z; sys.exit(0 if 'mnist/$name' in z.read_manifest()['models'] else 1)"; then
      continue
    fi
    repeats=1
    case "$name" in lwta_ibp_softmax|lwta_ibp_tanh16) repeats=3 ;; esac
    python scripts/ship_model.py "$f" --card --repeats "$repeats"
  done
}
ship_all
if [ "${1:-}" = "--watch" ]; then
  while pgrep -f train_mnist_zoo.sh >/dev/null; do sleep 60; ship_all; done
  ship_all
fi
