#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run the default test env: `tox` (unit tests, slow ones excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/tox -e py "$@"
