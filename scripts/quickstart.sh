#!/usr/bin/env bash
# Quick start on a fresh machine, offline: set up .venv (scripts/bootstrap.sh), load the shipped MNIST
# lwta_ibp_tanh16 model through RobustBench, and run the main job on it: the `smoke` protocol (every attack of the
# paper and adaptive protocols with tiny budgets) on the first 200 MNIST test images, then render the leaderboard.
# Results go to runs/quickstart/ (the committed leaderboard/ is left alone). Extra arguments go to `lwta evaluate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
. .venv/bin/activate
python - <<'PY'
import lwta_plugin  # registers the plugin's models in RobustBench's zoo
from robustbench.utils import load_model
from lwta_plugin.data import load_tensors
import torch

model = load_model("lwta_ibp_tanh16", dataset="mnist", threat_model="Linf")
x, y = load_tensors("mnist", "test", limit=500)
torch.manual_seed(0)
with torch.inference_mode():
    acc = (model(x).argmax(1) == y).float().mean().item()
print(f"robustbench.utils.load_model('lwta_ibp_tanh16', dataset='mnist'): {type(model).__name__}, "
      f"S={model.samples} samples per prediction, clean accuracy on the first 500 test images {acc:.3f} (seed 0)")
PY
lwta evaluate --model lwta_ibp_tanh16 --dataset mnist --protocol smoke --n-examples 200 --seed 0 \
  --out-dir runs/quickstart "$@"
lwta leaderboard --out-dir runs/quickstart
echo "quickstart: results in runs/quickstart/ (README.md, index.html, mnist/Linf/*.json)"
