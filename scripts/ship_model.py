#!/usr/bin/env python
"""Ship a trained checkpoint into lwta_plugin's weight store and update weights/manifest.json.

    python scripts/ship_model.py runs/mnist/lwta_ibp_tanh16.pt --card

copies the checkpoint to ``lwta_plugin/weights/<dataset>/<name>.pt`` (or ``$LWTA_WEIGHTS_DIR``), records its
sha256, size, training command, epochs, seed and validation/test accuracies (from the checkpoint's meta) in the
manifest and, with ``--card``, writes the model card (measuring clean accuracy on the test set).
The same as ``lwta ship`` (:mod:`lwta_plugin.ship`); see ``lwta_plugin/zoo.py`` for the manifest format.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from lwta_plugin.ship import add_parser
except ModuleNotFoundError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lwta_plugin.ship import add_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ship_model.py")
    sub = parser.add_subparsers(dest="command")
    ship = add_parser(sub)
    ship.prog = "ship_model.py"
    args = ship.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"ship_model.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
