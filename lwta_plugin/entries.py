"""Leaderboard entries: their format, their files, and their validation (the layer evaluation writes and the
leaderboard reads).

Files
-----
``leaderboard/<dataset>/<threat_model>/<model>__<protocol>.json``
    One entry, written by ``lwta evaluate``. It keeps every field of RobustBench's ``model_info`` JSON with the
    same name, type and meaning (percentages as strings with two decimals) and adds what a random model needs;
    ``lwta_plugin/schema/leaderboard.schema.json`` is the contract. No time-dependent field: rerunning the same
    command gives a byte-identical file.
``<dataset>/<threat_model>/timing/<model>__<protocol>.json`` (:func:`timing_path`)
    Wall-clock seconds per attack, start/end dates, threads: kept out of the entry so entries are reproducible,
    and in a directory of their own so that a tool globbing ``<dataset>/<threat_model>/*.json`` (RobustBench's
    model_info layout) sees only entries.

Per-example results are stored compactly: ``per_example_correct`` is a string with one base-36 digit per test
image (in test-set order) = the number of the ``passes`` predictions of that image that were correct
(:func:`lwta_plugin.statistics.decode_counts`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .figures import check_combined, check_figures, finalize_entry, pct
from .io import atomic_write_json, dumps_json
from .statistics import decode_counts

__all__ = [
    "ENTRY_NAME",
    "FORMAT",
    "SCHEMA_PATH",
    "check_entry_file",
    "entry_path",
    "failed_unbounded_attacks",
    "find_entries",
    "is_entry_path",
    "load_entries",
    "load_schema",
    "pct",
    "read_entry",
    "refinalize",
    "timing_path",
    "validate_entry",
]

FORMAT = "lwta-plugin/leaderboard-entry-1"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "leaderboard.schema.json"
TIMING_DIR = "timing"  # beside the entries, never among them
ENTRY_NAME = re.compile(r"^(?P<model>[a-z0-9_]+?)__(?P<protocol>[a-z][a-z0-9-]*)\.json$")


def entry_path(out_dir: str | os.PathLike, dataset: str, threat_model: str, model: str, protocol: str) -> Path:
    """``<out_dir>/<dataset>/<threat_model>/<model>__<protocol>.json``."""
    return Path(out_dir) / dataset / threat_model / f"{model}__{protocol}.json"


def timing_path(entry: str | os.PathLike) -> Path:
    """The timing file of the entry file ``entry``: ``timing/<model>__<protocol>.json`` in the entry's directory."""
    entry = Path(entry)
    return entry.parent / TIMING_DIR / entry.name


def is_entry_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an entry (not a config, timing or plot file)."""
    return ENTRY_NAME.match(Path(path).name) is not None


def find_entries(out_dir: str | os.PathLike) -> list[Path]:
    """Entry files under ``out_dir`` (``<dataset>/<threat_model>/<model>__<protocol>.json``), sorted."""
    root = Path(out_dir)
    return sorted(p for p in root.glob("*/*/*.json") if is_entry_path(p))


def load_schema() -> dict:
    """The JSON Schema of an entry (``lwta_plugin/schema/leaderboard.schema.json``)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_entry(entry: Any) -> None:
    """Raise ValueError if ``entry`` does not follow the schema (needs ``jsonschema``) or is inconsistent: every
    published figure is recomputed from the per-example counts (:func:`lwta_plugin.figures.check_figures`)."""
    try:
        import jsonschema
    except ModuleNotFoundError:
        raise ModuleNotFoundError("validating leaderboard entries needs jsonschema (pip install jsonschema)") from None
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(entry), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "<root>"
        raise ValueError(f"leaderboard entry invalid at {where}: {e.message}"
                         + (f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""))
    for key, res in entry["attacks"].items():
        if len(res["per_example_correct"]) != res["n_examples"]:
            raise ValueError(f"attack {key!r}: per_example_correct has {len(res['per_example_correct'])} digits for "
                             f"n_examples = {res['n_examples']}")
        if max(decode_counts(res["per_example_correct"]), default=0) > res["passes"]:
            raise ValueError(f"attack {key!r}: a per-example count exceeds passes = {res['passes']}")
        if "path_adversarial" in res and len(res["path_adversarial"]) != res["n_examples"]:
            raise ValueError(f"attack {key!r}: path_adversarial has {len(res['path_adversarial'])} digits for "
                             f"n_examples = {res['n_examples']}")
    check_figures(entry)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def read_entry(path: str | os.PathLike) -> dict:
    """The JSON of an entry file (NaN and Infinity refused); ValueError naming the file otherwise."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_no_constant)
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None


def check_entry_file(path: str | os.PathLike, entry: dict) -> None:
    """Raise ValueError unless ``path`` is where ``entry`` belongs:
    ``<dataset>/<threat_model>/<model>__<protocol>.json``."""
    path = Path(path)
    expected = Path(entry["dataset"], entry["threat_model"], f"{entry['model']}__{entry['protocol']['name']}.json")
    if path.parts[-3:] != expected.parts:
        raise ValueError(f"the entry is of model {entry['model']!r}, protocol {entry['protocol']['name']!r}, "
                         f"{entry['dataset']} / {entry['threat_model']}: its file must be .../{expected}")


def load_entries(out_dir: str | os.PathLike, validate: bool = True) -> list[dict]:
    """Every entry under ``out_dir`` (validated: schema, figures, file name, and the worst case combined across
    protocols against the sibling entries; ValueError naming the file otherwise), with ``_path`` added."""
    entries = []
    for path in find_entries(out_dir):
        entry = read_entry(path)
        if validate:
            try:
                validate_entry(entry)
                check_entry_file(path, entry)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        entry["_path"] = str(path)
        entries.append(entry)
    if validate:
        for entry in entries:
            siblings = [e for e in entries if e is not entry and e["model"] == entry["model"]
                        and Path(e["_path"]).parent == Path(entry["_path"]).parent]
            try:
                check_combined(entry, siblings)
            except ValueError as e:
                raise ValueError(f"{entry['_path']}: {e}") from None
    return entries


def failed_unbounded_attacks(entry: dict) -> set[str]:
    """The unbounded attacks of ``entry`` that failed: accuracy above the threshold of its fired
    ``unbounded_attack_failure`` indicator (the indicator lists every unbounded attack, failed or not)."""
    return {a for i in entry["indicators"] if i["fired"] and i["name"] == "unbounded_attack_failure"
            for a in i["attacks"] if a in entry["attacks"] and entry["attacks"][a]["mean"] > i["threshold"]}


def refinalize(out_dir: str | os.PathLike) -> list[Path]:
    """Re-derive the derived fields of every entry under ``out_dir`` with the current rules
    (:func:`lwta_plugin.figures.finalize_entry`: ``unreliable``, ``attack_failure``, ``autoattack_rand_acc``,
    ``external``, ``footnote``), validate it (every figure recomputed from its per-example counts), and rewrite the
    entries that changed; returns those. Nothing is measured again: an entry whose counts do not give its figures is
    refused (ValueError naming the file) and no file is written."""
    done = []
    for path in find_entries(out_dir):
        entry = read_entry(path)
        finalize_entry(entry)
        try:
            validate_entry(entry)
            check_entry_file(path, entry)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        done.append((path, entry))
    for path, entry in done:  # the combined worst cases against their siblings, before anything is written
        siblings = [e for p, e in done if e is not entry and e["model"] == entry["model"] and p.parent == path.parent]
        try:
            check_combined(entry, siblings)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    changed = [(p, e) for p, e in done if dumps_json(e) != p.read_text(encoding="utf-8")]
    for path, entry in changed:
        atomic_write_json(path, entry)
    return [path for path, _ in changed]
