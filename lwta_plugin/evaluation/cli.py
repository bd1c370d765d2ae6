"""``lwta evaluate``: the command line over :func:`lwta_plugin.evaluation.evaluate`, its ``--plots`` step and the
summary table it prints."""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..figures import protocol_order
from ..plots import make_plots
from ..protocols import EPS, PROTOCOLS
from .api import evaluate, load_inputs
from .config import DEFAULT_OUT_DIR, EvaluationConfig, load_config, parse_shard
from .loading import pair_checkpoints
from .runner import AttackFactory, build_attack_for

# The attack factory the command passes to evaluate(); the CLI tests put a cheap fake here.
ATTACK_FACTORY: AttackFactory = build_attack_for


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``lwta evaluate``: see :func:`lwta_plugin.evaluation.evaluate` and :mod:`lwta_plugin.evaluation`."""
    p = subparsers.add_parser("evaluate", help="evaluate models with a protocol and write leaderboard entries",
                              description="Evaluate models with an attack protocol (paper, paper-concrete, adaptive, autoattack-rand, "
                                          "smoke); resumable (rerun the same command after an interruption) and "
                                          "shardable (--shard i/N, then the last shard or --merge assembles). "
                                          f"Writes <out-dir>/<dataset>/<threat model>/<model>__<protocol>.json "
                                          f"(default out-dir: {DEFAULT_OUT_DIR}; the committed leaderboard is "
                                          "written by the config files that name it, e.g. --config "
                                          "leaderboard/mnist-smoke.json). A finished entry of another "
                                          "configuration is never replaced without --force.")
    p.add_argument("--model", action="append", default=None, help="zoo name (repeatable)")
    p.add_argument("--checkpoint", action="append", default=None,
                   help="checkpoint file of an unshipped model (repeatable; paired with --model in order, or the "
                        "name is read from the file)")
    p.add_argument("--dataset", default=None, choices=sorted(EPS), help="data set (default mnist)")
    p.add_argument("--threat-model", default=None, choices=["Linf"],
                   help="leaderboard section (default and only choice: Linf; the protocols are L-inf attacks)")
    p.add_argument("--protocol", action="append", default=None, choices=PROTOCOLS, help="repeatable (default paper)")
    p.add_argument("--attack", action="append", default=None,
                   help="run only this attack of the protocol (repeatable; its key, e.g. literal); default: all")
    p.add_argument("--n-examples", type=int, default=None, help="cap on the number of test images of every attack")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--shard", default=None, help="i/N: run every N-th batch starting at i (merge when all are done)")
    p.add_argument("--merge", action="store_true", help="only assemble finished shards into the entry")
    p.add_argument("--config", default=None,
                   help="JSON config listing runs (e.g. leaderboard/mnist-smoke.json); --model/--protocol then "
                        "select among its runs")
    p.add_argument("--no-resume", action="store_true", help="discard partial results and start over")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch for every attack")
    p.add_argument("--passes", type=int, default=None, help="predictions per image for scoring (protocol default)")
    p.add_argument("--out-dir", default=None,
                   help=f"directory of the entries (default: the config file's out_dir, else {DEFAULT_OUT_DIR})")
    p.add_argument("--force", action="store_true",
                   help="replace finished entries of another configuration (fewer images, other attacks, seed, "
                        "checkpoint, ...); without it they are kept and the command stops with an error")
    p.add_argument("--model-dir", default=None, help="RobustBench-style model directory for unshipped checkpoints")
    p.add_argument("--data-root", default=None, help="data root (default: $LWTA_DATA_ROOT, then the offline copies)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--plots", action="store_true", help="also write the plots (lwta_plugin.plots) next to the results")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=evaluate_command)
    return p


def _check_options(args: argparse.Namespace) -> None:
    for option in ("n_examples", "batch_size", "passes", "threads"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    if args.shard is not None:
        parse_shard(args.shard)  # a clear error before anything is loaded
    if args.merge and args.shard:
        raise ValueError("--merge assembles every shard's results; do not combine it with --shard")
    if args.config and args.checkpoint:
        raise ValueError("--checkpoint cannot be combined with --config (list checkpoints in the config's runs)")
    if args.config and args.attack:
        raise ValueError("--attack cannot be combined with --config (list the attacks in the config's runs)")


def configs_from_args(args: argparse.Namespace) -> list[EvaluationConfig]:
    """The evaluations the command line asks for: the selected runs of ``--config``, or one from the options."""
    if args.config:
        return load_config(args.config, models=args.model, protocols=args.protocol, dataset=args.dataset,
                           n_examples=args.n_examples, seed=args.seed, batch_size=args.batch_size,
                           passes=args.passes, threat_model=args.threat_model, out_dir=args.out_dir,
                           model_dir=args.model_dir, data_root=args.data_root)
    models, checkpoints = pair_checkpoints(args.model, args.checkpoint)
    return [EvaluationConfig(models, dataset=args.dataset or "mnist", protocols=args.protocol or ["paper"],
                             attacks=args.attack or (),
                             n_examples=args.n_examples, seed=args.seed or 0, out_dir=args.out_dir or DEFAULT_OUT_DIR,
                             threat_model=args.threat_model or "Linf", checkpoints=checkpoints,
                             model_dir=args.model_dir, batch_size=args.batch_size, passes=args.passes,
                             data_root=args.data_root)]


def write_plots(config: EvaluationConfig, progress: bool = True) -> list[Path]:
    """:func:`lwta_plugin.plots.make_plots` of every model of ``config`` into
    ``<out_dir>/<dataset>/<threat_model>/plots`` (the models and images the evaluation used)."""
    inputs = load_inputs(config)
    written = []
    for model, info in inputs.models:
        written += make_plots(model, inputs.data.x, inputs.data.y, dataset=config.dataset,
                              out_dir=Path(config.out_dir) / config.dataset / config.threat_model / "plots",
                              name=info.name, seed=config.seed, progress=progress)
    return written


def evaluate_command(args: argparse.Namespace) -> int:
    """Run ``lwta evaluate``; 0 when every entry is written (or a shard did its share), 1 otherwise."""
    _check_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    statuses = []
    for config in configs_from_args(args):
        statuses += evaluate(config, shard=args.shard, resume=not args.no_resume, merge=args.merge,
                             progress=not args.no_progress, attack_factory=ATTACK_FACTORY, force=args.force)
        if args.plots and not args.merge and (args.shard is None or parse_shard(args.shard)[0] == 0):
            for path in write_plots(config, progress=not args.no_progress):
                print(f"wrote {path}")
    incomplete = [s for s in statuses if s["status"] == "incomplete"]
    for s in statuses:
        print(f"{s['status']:>11}  {s['model']} / {s['protocol']}: {s['path']}"
              + (f" ({s['missing']} batches missing)" if s["missing"] else ""))
    done = [json.loads(Path(s["path"]).read_text(encoding="utf-8")) for s in statuses if s["status"] != "incomplete"]
    if done:
        print(summary_table(done))
    return 0 if not incomplete or args.shard else 1


def summary_table(entries: Sequence[dict]) -> str:
    """Plain-text table of finished entries: one row per model and attack, one column per protocol (accuracy % and
    95 % interval, images used), then the worst case, the attack-failure indicators that fired, and whether the
    entry is unreliable (RobustBench's meaning: below the paper's reported number)."""
    protos = list(dict.fromkeys(e["protocol"]["name"] for e in entries))
    by = {(e["model"], e["protocol"]["name"]): e for e in entries}
    rows = [["model", "attack", *protos]]
    for model in dict.fromkeys(e["model"] for e in entries):
        keys = list(dict.fromkeys(k for p in protos if (model, p) in by for k in protocol_order(by[(model, p)])))
        for key in [*keys, "worst case", "attack failure", "unreliable"]:
            rows.append([model, key, *(_cell(by.get((model, p)), key) for p in protos)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _cell(entry: dict | None, key: str) -> str:
    if entry is None:
        return ""
    if key == "attack failure":
        return ", ".join(entry["attack_failure"]) or "none"
    if key == "unreliable":
        return f"yes (paper {entry['reported']})" if entry["unreliable"] else "no"
    r = entry["worst_case"] if key == "worst case" else entry["attacks"].get(key)
    return "" if r is None else f"{100 * r['mean']:.1f} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}] n={r['n_examples']}"
