"""``lwta evaluate``: the command line over :func:`lwta_plugin.evaluation.evaluate`, its ``--plots`` step and the
summary table it prints."""
from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from pathlib import Path

import torch

from ..figures import protocol_order
from ..plots import BaselineCache, make_plots
from ..protocols import EPS, PROTOCOLS, get_protocol
from .api import evaluate, load_inputs
from .assembly import COMBINE_INTO
from .config import DEFAULT_OUT_DIR, EvaluationConfig, load_config, parse_shard
from .foreign import build_from_factory, default_name, evaluate_model
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
    p.add_argument("--no-cascade", dest="cascade", action="store_const", const=False, default=None,
                   help="run every attack on all its images instead of the protocol's cascade (adaptive: cheapest "
                        "attack first, each only on the images the earlier ones did not break)")
    p.add_argument("--no-early-exit", dest="early_exit", action="store_const", const=False, default=None,
                   help="attack every image for the full budget instead of stopping at a confirmed adversarial "
                        "point")
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
    g = p.add_argument_group("a model from outside the plugin (lwta_plugin.evaluate; default protocol adaptive)")
    g.add_argument("--model-factory", default=None, metavar="MODULE:FUNCTION",
                   help="import path of a function returning an nn.Module that maps images in [0, 1] to class "
                        "logits (the working directory is importable), e.g. lwta_plugin.examples.defenses:rse")
    g.add_argument("--surrogate-factory", default=None, metavar="MODULE:FUNCTION",
                   help="the same for a surrogate (e.g. the model with its randomness switched off) for the "
                        "transfer and BPDA attacks; without it they are skipped (the entry says so)")
    g.add_argument("--name", default=None, help="the entry's model name (default: the factory function's name)")
    g.add_argument("--stochastic", choices=["yes", "no"], default=None,
                   help="declare the model random or deterministic (default: its `stochastic` attribute, else "
                        "measured by repeated passes; both are recorded)")
    g.add_argument("--samples", type=int, default=None,
                   help="passes averaged per prediction (default 1: the model's own output)")
    g.add_argument("--attack-examples", action="append", default=None, metavar="KEY=N",
                   help="test images of one attack (repeatable, e.g. eot_pgd_2x=50; --n-examples still caps it)")
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
    if args.model_factory is None:
        for option in ("surrogate_factory", "name", "stochastic", "samples", "attack_examples"):
            if getattr(args, option) is not None:
                raise ValueError(f"--{option.replace('_', '-')} applies to --model-factory only")
        return
    for option in ("model", "checkpoint", "config", "shard", "model_dir"):
        if getattr(args, option):
            raise ValueError(f"--model-factory cannot be combined with --{option.replace('_', '-')}")
    if args.merge or args.plots:
        raise ValueError("--model-factory runs in one process and writes no plots: drop --merge / --plots")
    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    attack_examples(args.attack_examples)


def attack_examples(items: Sequence[str] | None) -> dict[str, dict[str, int]]:
    """``--attack-examples KEY=N`` options as per-attack overrides ``{key: {"n_examples": N}}``."""
    out: dict[str, dict[str, int]] = {}
    for item in items or ():
        key, _, n = item.partition("=")
        if not key or not n.isdigit() or int(n) < 1:
            raise ValueError(f"--attack-examples must look like KEY=N with N >= 1 (e.g. eot_pgd_2x=50), got {item!r}")
        out[key] = {"n_examples": int(n)}
    return out


def configs_from_args(args: argparse.Namespace) -> list[EvaluationConfig]:
    """The evaluations the command line asks for: the selected runs of ``--config``, or one from the options."""
    if args.config:
        return load_config(args.config, models=args.model, protocols=args.protocol, dataset=args.dataset,
                           n_examples=args.n_examples, seed=args.seed, batch_size=args.batch_size,
                           passes=args.passes, threat_model=args.threat_model, out_dir=args.out_dir,
                           model_dir=args.model_dir, data_root=args.data_root, cascade=args.cascade,
                           early_exit=args.early_exit)
    models, checkpoints = pair_checkpoints(args.model, args.checkpoint)
    return [EvaluationConfig(models, dataset=args.dataset or "mnist", protocols=args.protocol or ["paper"],
                             attacks=args.attack or (),
                             n_examples=args.n_examples, seed=args.seed or 0, out_dir=args.out_dir or DEFAULT_OUT_DIR,
                             threat_model=args.threat_model or "Linf", checkpoints=checkpoints,
                             model_dir=args.model_dir, batch_size=args.batch_size, passes=args.passes,
                             data_root=args.data_root, cascade=args.cascade is not False,
                             early_exit=args.early_exit is not False)]


def write_plots(config: EvaluationConfig, progress: bool = True) -> list[Path]:
    """:func:`lwta_plugin.plots.make_plots` of every model of ``config`` into
    ``<out_dir>/<dataset>/<threat_model>/plots`` (the models and images the evaluation used)."""
    inputs = load_inputs(config)
    written = []
    baselines = BaselineCache(config.dataset, config.model_dir)
    for model, info in inputs.models:
        written += make_plots(model, inputs.data.x, inputs.data.y, dataset=config.dataset,
                              out_dir=Path(config.out_dir) / config.dataset / config.threat_model / "plots",
                              name=info.name, seed=config.seed, progress=progress,
                              baseline=baselines.get("auto", info.name, model))
    return written


def user_command(args: argparse.Namespace, protocol: str) -> str:
    """The command that reproduces the entry of ``--model-factory`` with ``protocol`` (the options that decide it,
    in a fixed order)."""
    words = ["lwta", "evaluate", "--model-factory", args.model_factory]
    if args.surrogate_factory:
        words += ["--surrogate-factory", args.surrogate_factory]
    words += ["--name", args.name or default_name(args.model_factory), "--dataset", args.dataset or "mnist",
              "--protocol", protocol, "--seed", str(args.seed or 0)]
    for attack in args.attack or ():
        words += ["--attack", attack]
    for option in ("stochastic", "samples", "n_examples", "batch_size", "passes"):
        if getattr(args, option) is not None:
            words += ["--" + option.replace("_", "-"), str(getattr(args, option))]
    for key, value in attack_examples(args.attack_examples).items():
        words += ["--attack-examples", f"{key}={value['n_examples']}"]
    return shlex.join(words)


def evaluate_factory(args: argparse.Namespace) -> list[dict]:
    """``lwta evaluate --model-factory``: every ``--protocol`` (default adaptive) on the factory's model, through
    :func:`lwta_plugin.evaluation.foreign.evaluate_model`; returns the entries."""
    model = build_from_factory(args.model_factory)
    surrogate = build_from_factory(args.surrogate_factory, "--surrogate-factory") if args.surrogate_factory else None
    name = args.name or default_name(args.model_factory)
    protocols = sorted(dict.fromkeys(args.protocol or ["adaptive"]), key=lambda p: p == COMBINE_INTO)
    overrides = attack_examples(args.attack_examples)
    keys = {p: {a.key for a in get_protocol(p, args.dataset or "mnist").attacks} for p in protocols}
    unknown = sorted(set(overrides) - set().union(*keys.values()))
    if unknown:
        raise ValueError(f"--attack-examples names attacks {unknown} that no selected protocol has")
    entries = []
    for protocol in protocols:
        entry = evaluate_model(
            model, None, None, protocol, name=name, stochastic=None if args.stochastic is None else
            args.stochastic == "yes", samples=args.samples or 1, surrogate=surrogate, dataset=args.dataset or "mnist",
            n_examples=args.n_examples, seed=args.seed or 0, out_dir=args.out_dir or DEFAULT_OUT_DIR,
            batch_size=args.batch_size, passes=args.passes, attacks=args.attack or (), data_root=args.data_root,
            overrides={k: v for k, v in overrides.items() if k in keys[protocol]} or None,
            factory=args.model_factory, surrogate_factory=args.surrogate_factory,
            command=user_command(args, protocol), attack_factory=ATTACK_FACTORY, resume=not args.no_resume,
            force=args.force, progress=not args.no_progress, log=print)
        entries.append(entry)
    return entries


def evaluate_command(args: argparse.Namespace) -> int:
    """Run ``lwta evaluate``; 0 when every entry is written (or a shard did its share), 1 otherwise."""
    _check_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_factory is not None:
        print(summary_table(evaluate_factory(args)))
        return 0
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
