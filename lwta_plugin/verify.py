"""``lwta verify``: is a leaderboard directory exactly what the code publishes from its entries?

Checks, each problem on one line: every entry against the schema and its own per-example counts, its file name
and its threat model's eps (:func:`lwta_plugin.entries.validate_entry`); the worst case combined across protocols
against the sibling entries; every shipped checkpoint against the weight manifest (sha256, size) and each entry's
checkpoint against the shipped one it names; every entry of a model from outside the plugin that names its factory
(``lwta evaluate --model-factory``) against the model that factory builds now (state_dict sha256, the surrogate's,
and the randomness measured again; an entry written from Python without a factory is checked against its counts
only); and the committed ``README.md`` / ``index.html`` byte for byte
against a fresh render of the entries (rendered in memory with the command their generated-file comment names;
nothing is written).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .entries import check_entry_file, find_entries, read_entry, validate_entry
from .figures import check_combined
from .leaderboard import GENERATED_FILES, GENERATED_MARK, SORT_KEYS, is_generated, ladder_plots, render_files
from .zoo import read_manifest, verify_store, weights_dir

_COMMAND = re.compile(r"^<!-- (?:lwta-plugin:generated|Generated) by `?(lwta leaderboard[^`>]*?)`? "
                      r"(?:from the JSON entries )?\(lwta_plugin/leaderboard\.py\)")
_SHOWN = 100  # characters of a differing line shown


@dataclass
class Report:
    """What :func:`verify` checked and the problems it found (one line each)."""

    entries: int = 0
    checkpoints: int = 0
    compared: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _load(out: Path, report: Report) -> list[dict]:
    """The entries that pass validation; one problem line for each that does not."""
    entries, invalid = [], set()
    for path in find_entries(out):
        try:
            entry = read_entry(path)
            validate_entry(entry)
            check_entry_file(path, entry)
        except ValueError as e:
            report.problems.append(str(e) if str(e).startswith(str(path)) else f"{path}: {e}")
            invalid.add((path.parent, path.name.split("__")[0]))
            continue
        entry["_path"] = str(path)
        entries.append(entry)
    for entry in entries:
        here = Path(entry["_path"]).parent
        if (here, entry["model"]) in invalid:
            continue  # its combined worst case cannot be checked against an invalid sibling (reported above)
        siblings = [e for e in entries if e is not entry and e["model"] == entry["model"]
                    and Path(e["_path"]).parent == here]
        try:
            check_combined(entry, siblings)
        except ValueError as e:
            report.problems.append(f"{entry['_path']}: {e}")
    report.entries = len(entries)
    return entries


def _check_checkpoints(entries: list[dict], store: Path, report: Report) -> None:
    report.checkpoints, problems = verify_store(store)
    report.problems += problems
    try:
        shipped = read_manifest(store)["models"]
    except ValueError:
        return  # reported by verify_store
    for e in entries:
        if e["checkpoint"]["source"] != "store":
            continue
        item = shipped.get(f"{e['dataset']}/{e['model']}")
        if item is None or item["sha256"] != e["checkpoint"]["sha256"]:
            now = "is not shipped" if item is None else f"is shipped as sha256 {item['sha256']}"
            report.problems.append(f"{e['_path']}: evaluated the shipped checkpoint sha256 "
                                   f"{e['checkpoint']['sha256']}, but {e['dataset']}/{e['model']} {now} "
                                   "(weight manifest): re-evaluate the model")


def _check_user_models(entries: list[dict], report: Report) -> None:
    """Rebuild every user model that names its factory and compare it with its entry (one problem line each)."""
    from .evaluation.user_model_check import check_user_entry

    for e in entries:
        if e["checkpoint"]["source"] == "user" and e["checkpoint"]["config"].get("factory"):
            report.problems += [f"{e['_path']}: {p}" for p in check_user_entry(e)]


def _render_command(out: Path, default: str) -> str:
    """The ``lwta leaderboard`` command the committed files name in their generated-file comment."""
    for name in GENERATED_FILES:
        path = out / name
        if path.is_file():
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f.read(16_384).splitlines()[:10]:
                    found = _COMMAND.match(line)
                    if found:
                        return found.group(1).strip()
    return default


def _sort_of(command: str) -> str:
    words = shlex.split(command)
    return words[words.index("--sort") + 1] if "--sort" in words[:-1] else "robust"


def _difference(path: Path, committed: bytes, rendered: str, command: str) -> str | None:
    """One line describing how ``committed`` differs from ``rendered``, or None when they are identical."""
    if committed == rendered.encode("utf-8"):
        return None
    old, new = committed.decode("utf-8", errors="replace").splitlines(), rendered.splitlines()
    if old == new:
        return f"{path}: differs from a fresh render only in line endings or the final newline; rerun `{command}`"
    pairs = list(zip(old, new))
    first = next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))
    count = sum(a != b for a, b in pairs) + abs(len(old) - len(new))

    def shown(lines: list[str]) -> str:
        return repr(lines[first][:_SHOWN]) if first < len(lines) else "<end of file>"

    why = ""
    if is_generated(path) and not any(f"<!-- {GENERATED_MARK} by " in line for line in old[:10]):
        why = f" (rendered before the '{GENERATED_MARK}' comment existed: re-render it once)"
    return (f"{path}: differs from a fresh render{why}: {count} line(s), the first at line {first + 1}: committed "
            f"{shown(old)}, rendered {shown(new)}; rerun `{command}`")


def _check_rendered(out: Path, entries: list[dict], report: Report, default_command: str) -> None:
    if report.problems:
        report.problems.append(f"{out}: {', '.join(GENERATED_FILES)} not compared with a fresh render: fix the "
                               "problems above first")
        return
    if not entries:
        report.problems.append(f"{out}: holds no leaderboard entries "
                               "(<dataset>/<threat_model>/<model>__<protocol>.json)")
        return
    command = _render_command(out, default_command)
    sort = _sort_of(command)
    if sort not in SORT_KEYS and not any(sort in e["attacks"] for e in entries):
        report.problems.append(f"{out}: the committed files name `{command}`, whose sort key {sort!r} is unknown")
        return
    texts = render_files(entries, sort, command, bool(ladder_plots(entries)))
    for name in GENERATED_FILES:
        path = out / name
        report.compared.append(name)
        if not path.is_file():
            report.problems.append(f"{path}: missing; render it with `{command}`")
            continue
        line = _difference(path, path.read_bytes(), texts[name], command)
        if line is not None:
            report.problems.append(line)


def verify(out_dir: str | os.PathLike = "leaderboard", store: str | os.PathLike | None = None) -> Report:
    """Run every check on the leaderboard directory ``out_dir`` and the weight store (default: the package's, or
    ``$LWTA_WEIGHTS_DIR``); the report lists one line per problem."""
    out, report = Path(out_dir), Report()
    if not out.is_dir():
        report.problems.append(f"{out}: leaderboard directory does not exist")
        return report
    entries = _load(out, report)
    _check_checkpoints(entries, Path(store or weights_dir()), report)
    _check_user_models(entries, report)
    default = "lwta leaderboard" + ("" if str(out_dir) == "leaderboard" else f" --out-dir {out_dir}")
    _check_rendered(out, entries, report, default)
    return report


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``lwta verify [--dir leaderboard]``."""
    p = subparsers.add_parser(
        "verify", help="check a leaderboard: entries against their counts, checkpoints, rendered files",
        description="Re-validate every entry under --dir against the schema, its per-example counts and its "
                    "threat model, check the shipped checkpoints against the weight manifest, and re-render "
                    "README.md and index.html to check that the committed ones are byte-identical. Prints one "
                    "line per problem; exit 1 if there is any.")
    p.add_argument("--dir", "--out-dir", dest="dir", default="leaderboard",
                   help="leaderboard directory (default: leaderboard)")
    p.set_defaults(func=_verify_command)
    return p


def _verify_command(args: argparse.Namespace) -> int:
    report = verify(args.dir)
    for line in report.problems:
        print(line)
    if report.problems:
        print(f"lwta verify: {len(report.problems)} problem(s) in {args.dir}", flush=True)
        return 1
    print(f"lwta verify: OK: {report.entries} entries, {report.checkpoints} shipped checkpoints, "
          f"{' and '.join(report.compared)} identical to a fresh render")
    return 0
