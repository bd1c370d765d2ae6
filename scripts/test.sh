#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh), run every test env in one tox call, then `lwta verify`:
#   py (unit tests, slow ones excluded; ~5-7 min on 2 cores), minimal (the same suite without robustbench,
#   torchattacks and autoattack; ~5 min), lint (ruff), slow (kill-and-resume, shards, training; ~2 min).
# About 20 minutes from a warm pip cache, well within CI's 90. Arguments go to tox (e.g. -r to recreate
# the envs; pytest arguments after --).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/tox -e py,minimal,lint,slow "$@"
# the committed leaderboard: entries against their counts, threat model and shipped checkpoints; README/HTML re-render
.venv/bin/lwta verify
