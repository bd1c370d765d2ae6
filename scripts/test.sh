#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh), run the default test env: `tox` (unit tests, slow ones excluded), then `lwta verify`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/tox -e py "$@"
# the committed leaderboard: entries against their counts, threat model and shipped checkpoints; README/HTML re-render
.venv/bin/lwta verify
