"""``lwta ship``: copy a trained checkpoint into the weight store, update the manifest, optionally write its card.

The store and manifest are :mod:`lwta_plugin.zoo`'s (:func:`~lwta_plugin.zoo.register_checkpoint`), the card
:mod:`lwta_plugin.cards`'s (:func:`~lwta_plugin.cards.write_card`). ``scripts/ship_model.py`` runs this command.
"""
from __future__ import annotations

import argparse
import json

from .cards import Measurement, write_card
from .zoo import DATASETS, WEIGHTS_ENV, register_checkpoint


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``lwta ship CHECKPOINT [--name] [--dataset] [--store] [--card]``: ship a trained checkpoint."""
    p = subparsers.add_parser("ship", help="copy a trained checkpoint into the weight store and update the manifest")
    p.add_argument("checkpoint", help="final checkpoint written by `lwta train`")
    p.add_argument("--name", default=None, help="model name (default: the checkpoint's)")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="data set (default: the checkpoint's)")
    p.add_argument("--store", default=None, help=f"weight store (default: ${WEIGHTS_ENV} or lwta_plugin/weights)")
    p.add_argument("--card", action="store_true", help="also write the model card (measures clean accuracy)")
    p.add_argument("--repeats", type=int, default=3, help="card: full test-set passes for the accuracy CI")
    p.add_argument("--allow-missing-metrics", action="store_true", help="ship a checkpoint without final metrics")
    p.set_defaults(func=ship_command)
    return p


def ship_command(args: argparse.Namespace) -> int:
    """Ship ``args.checkpoint``; prints the manifest's file, sha256 and size as JSON (and the card's path)."""
    entry = register_checkpoint(args.checkpoint, args.name, args.dataset, args.store,
                                require_metrics=not args.allow_missing_metrics)
    print(json.dumps({"shipped": entry["file"], "sha256": entry["sha256"], "size": entry["size"]}))
    if args.card:
        card = write_card(entry["name"], entry["dataset"], store=args.store,
                          measurement=Measurement(repeats=args.repeats))
        print(f"card: {card}")
    return 0
