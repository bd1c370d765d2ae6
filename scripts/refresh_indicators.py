#!/usr/bin/env python
"""Recompute the attack-failure indicators of committed entries from their own results, after an indicator's rule
changed (``lwta_plugin.evaluation.refresh_indicators``; the results are not touched, so nothing is re-evaluated).

    python scripts/refresh_indicators.py                      # leaderboard/ and every out-dir under experiments/
    python scripts/refresh_indicators.py leaderboard          # one directory of entries

Prints each rewritten entry with the indicators that changed state; then re-render (``lwta leaderboard``,
``python scripts/findings_table.py --write``) and check (``lwta verify``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwta_plugin.entries import find_entries
from lwta_plugin.evaluation import refresh_indicators


def _fired(path: Path) -> set[str]:
    return {i["name"] for i in json.loads(path.read_text(encoding="utf-8"))["indicators"] if i["fired"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="*", type=Path, help="directories of entries (default: leaderboard and experiments)")
    args = ap.parse_args(argv)
    dirs = args.dirs or [ROOT / "leaderboard", *sorted({p.parents[2] for p in (ROOT / "experiments").rglob("*/Linf/*.json")})]
    rewritten = 0
    for d in dirs:
        for path in find_entries(d):
            before = _fired(path)
            if refresh_indicators(path):
                after = _fired(path)
                change = ", ".join([f"-{n}" for n in sorted(before - after)] + [f"+{n}" for n in sorted(after - before)])
                print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {change or 'details only'}")
                rewritten += 1
    print(f"{rewritten} entries rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
