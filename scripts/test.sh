#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh), run every test env in one tox call, then `lwta verify`:
#   py (unit tests, slow ones excluded; ~5-7 min on 2 cores), minimal (the same suite without robustbench,
#   torchattacks and autoattack; ~5 min), lint (ruff), slow (kill-and-resume, shards, training; ~2 min).
# About 20 minutes from a warm pip cache, well within CI's 90. Arguments go to tox (e.g. -r to recreate
# the envs; pytest arguments after --).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# The leaderboard page's tests run in a real browser (Debian's chromium). In CI they must not skip: install it
# when missing (as root, with apt-get) and make a missing browser a test failure.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 \
    || echo "test.sh: could not install chromium; the browser tests will skip (fail under CI)" >&2
fi
if [ "${CI:-}" = true ]; then export LWTA_REQUIRE_BROWSER=1; fi
.venv/bin/tox -e py,minimal,lint,slow "$@"
# the committed leaderboard: entries against their counts, threat model and shipped checkpoints; README/HTML re-render
.venv/bin/lwta verify
