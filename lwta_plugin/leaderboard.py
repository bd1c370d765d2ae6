"""Leaderboard entries (one JSON per model and protocol), the paper's reported numbers, and rendering.

Files
-----
``leaderboard/<dataset>/<threat_model>/<model>__<protocol>.json``
    One entry, written by ``lwta evaluate``. It keeps every field of RobustBench's ``model_info`` JSON with the
    same name, type and meaning (percentages as strings with two decimals) and adds what a random model needs;
    ``lwta_plugin/schema/leaderboard.schema.json`` is the contract. No time-dependent field: rerunning the same
    command gives a byte-identical file.
``<model>__<protocol>.timing.json`` (beside it)
    Wall-clock seconds per attack, start/end dates, threads: kept out of the entry so entries are reproducible.
``leaderboard/README.md``, ``leaderboard/index.html``
    Rendered by ``lwta leaderboard`` from the entries (never edited by hand).

Per-example results are stored compactly: ``per_example_correct`` is a string with one base-36 digit per test
image (in test-set order) = the number of the ``passes`` predictions of that image that were correct
(:func:`decode_counts`).
"""
from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .io import atomic_write_text

FORMAT = "lwta-plugin/leaderboard-entry-1"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "leaderboard.schema.json"
ENTRY_NAME = re.compile(r"^(?P<model>[a-z0-9_]+?)__(?P<protocol>[a-z][a-z0-9-]*)\.json$")

PAPER_LINK = "https://arxiv.org/abs/2101.01121"
PAPER_NAME = "Local Competition and Stochasticity for Adversarial Robustness in Deep Learning"
PAPER_AUTHORS = "Konstantinos P. Panousis, Sotirios Chatzis, Sergios Theodoridis"
PAPER_VENUE = "AISTATS 2021"

# ---------------------------------------------------------------------------------------------------------------
# The paper's tables, copied from the paper's text (reference/paper.txt), values as printed.
# Columns: Benign, PGD, CW, BSA, Rand (Rand = fraction of uniform-noise images with max probability < 0.9).
# "model" maps a row to this plugin's architecture name (None: not one of ours); "fgsm": FGSM adversarial training.

PAPER_COLUMNS = ("Benign", "PGD", "CW", "BSA", "Rand")


def _rows(table: str, dataset: str, group: str, rows: Iterable[tuple], params: bool = False) -> list[dict]:
    out = []
    for r in rows:
        label, model, fgsm, *vals = r
        p = None
        if params:
            p, vals = vals[0], vals[1:]
        out.append({"table": table, "dataset": dataset, "group": group, "row": label, "model": model,
                    "fgsm": fgsm, "params": p, "values": dict(zip(PAPER_COLUMNS, vals, strict=True))})
    return out


_METHODS = (("Baseline", "relu"), ("LWTAmax", "lwtamax"), ("LWTAmax & IBP", "lwtamax_ibp"), ("LWTA", "lwta"),
            ("LWTA & IBP", "lwta_ibp"))


def _ablation(table: str, dataset: str, code: str, group: str, values: list[tuple], methods=_METHODS) -> list[dict]:
    rows = [(label, f"{prefix}_{code}", False, *v) for (label, prefix), v in zip(methods, values, strict=True)]
    return _rows(table, dataset, group, rows)


_CIFAR_METHODS = (_METHODS[0], _METHODS[3], _METHODS[4])

PAPER_TABLES: list[dict] = [
    # Table 2: Classification accuracy on MNIST.
    *_rows("Table 2", "mnist", "", [
        ("Softmax (U=4)", "lwta_ibp_softmax_u4", False, "327,380", ".9613", ".865", ".970", ".950", ".187"),
        ("Softmax (U=2)", "lwta_ibp_softmax", False, "327,380", ".992", ".935", ".990", "1.0", ".961"),
        ("Logistic (U=2)", "lwta_ibp_logistic", False, "327,380", ".991", ".901", ".990", ".990", ".911"),
        ("LogEns10 (U=2)", "lwta_ibp_logisticens10", False, "205,190", ".993", ".889", ".980", ".970", "1.0"),
        ("Madry", None, False, "3,274,634", ".9853", ".925", ".84", ".520", ".351"),
        ("TanhEns16", None, False, "401,168", ".9948", ".929", "1.0", "1.0", ".988"),
    ], params=True),
    # Table 3: Classification accuracy on CIFAR-10.
    *_rows("Table 3", "cifar10", "", [
        ("Tanh16(U=4)", "lwta_ibp_tanh16_u4", False, "773,600", ".510", ".460", ".550", ".600", ".368"),
        ("Softmax(U=2)", "lwta_ibp_softmax", False, "772,628", ".869", ".814", ".860", ".870", ".652"),
        ("Tanh16(U=2)", "lwta_ibp_tanh16", False, "773,600", ".872", ".826", ".830", ".830", ".765"),
        ("LogEns10(U=2)", "lwta_ibp_logisticens10", False, "1,197,998", ".882", ".806", ".830", ".800", "1.0"),
        ("Madry", None, False, "45,901,914", ".871", ".470", ".080", "0", ".981"),
        ("TanhEns64", None, False, "3,259,456", ".896", ".601", ".760", ".760", "1.0"),
    ], params=True),
    # Table 4: Classification accuracy for all the attacks on the MNIST dataset (U = 2).
    *_ablation("Table 4", "mnist", "softmax", "Softmax", [
        (".992", ".082", ".540", ".180", ".270"), (".993", ".302", ".800", ".390", ".543"),
        (".994", ".890", ".920", ".840", ".361"), (".992", ".900", ".990", "1.0", ".810"),
        (".992", ".935", ".990", "1.0", ".961")]),
    *_ablation("Table 4", "mnist", "logistic", "Logistic", [
        (".993", ".093", ".660", ".210", ".684"), (".993", ".388", ".780", ".420", ".700"),
        (".993", ".894", ".960", ".950", ".230"), (".991", ".856", ".990", ".990", ".982"),
        (".991", ".901", ".990", ".990", ".981")]),
    *_ablation("Table 4", "mnist", "logisticens10", "LogisticEns10", [
        (".993", ".382", ".880", ".480", ".905"), (".993", ".303", ".920", ".520", ".900"),
        (".994", ".860", ".940", ".910", ".400"), (".992", ".603", ".900", ".550", ".809"),
        (".993", ".889", ".980", ".970", "1.0")]),
    *_ablation("Table 4", "mnist", "tanh16", "Tanh16", [
        (".993", ".421", ".790", ".320", ".673"), (".992", ".462", ".910", ".420", ".573"),
        (".994", ".898", ".960", ".940", ".363"), (".992", ".862", ".990", ".980", ".785"),
        (".990", ".900", ".990", ".980", ".785")]),
    # Table 5: Classification accuracy for all the attacks on CIFAR-10 (U = 2).
    *_ablation("Table 5", "cifar10", "softmax", "Softmax", [
        (".864", ".070", ".080", ".040", ".404"), (".867", ".804", ".820", ".870", ".701"),
        (".869", ".814", ".860", ".870", ".652")], _CIFAR_METHODS),
    *_ablation("Table 5", "cifar10", "logistic", "Logistic", [
        (".865", ".006", ".140", ".100", ".492"), (".830", ".701", ".720", ".696", ".690"),
        (".837", ".738", ".800", ".820", ".726")], _CIFAR_METHODS),
    *_ablation("Table 5", "cifar10", "logisticens10", "LogisticEns10", [
        (".877", ".100", ".240", ".140", ".495"), (".879", ".712", ".750", ".750", ".803"),
        (".882", ".806", ".830", ".800", "1.0")], _CIFAR_METHODS),
    *_ablation("Table 5", "cifar10", "tanh16", "Tanh16", [
        (".866", ".099", ".080", ".100", ".700"), (".863", ".720", ".750", ".750", ".800"),
        (".872", ".826", ".830", ".830", ".765")], _CIFAR_METHODS),
    # Table 6: Softmax network under FGSM adversarial training, MNIST (U = 2). PGD: 40 steps for the FGSM rows.
    *_rows("Table 6", "mnist", "Softmax", [
        ("Baseline (ReLU)", "relu_softmax", False, ".992", ".082", ".540", ".180", ".270"),
        ("LWTA", "lwta_softmax", False, ".992", ".900", ".990", "1.0", ".810"),
        ("LWTA & IBP", "lwta_ibp_softmax", False, ".992", ".935", ".990", "1.0", ".961"),
        ("Baseline (ReLU) + FGSM", "relu_softmax", True, ".992", ".755", ".820", ".130", ".835"),
        ("LWTA + FGSM", "lwta_softmax", True, ".991", ".925", ".990", "1.0", ".960"),
        ("LWTA & IBP + FGSM", "lwta_ibp_softmax", True, ".991", ".970", ".990", "1.0", ".985"),
    ]),
    # Table 7: Softmax network under FGSM adversarial training, CIFAR-10 (U = 2). PGD: 20 steps for the FGSM rows.
    *_rows("Table 7", "cifar10", "Softmax", [
        ("Baseline (ReLU)", "relu_softmax", False, ".864", ".070", ".080", ".040", ".404"),
        ("LWTA", "lwta_softmax", False, ".867", ".804", ".820", ".870", ".701"),
        ("LWTA & IBP", "lwta_ibp_softmax", False, ".869", ".814", ".860", ".870", ".652"),
        ("Baseline (ReLU) + FGSM", "relu_softmax", True, ".780", ".200", ".380", ".340", ".185"),
        ("LWTA + FGSM", "lwta_softmax", True, ".820", ".812", ".810", ".870", ".440"),
        ("LWTA & IBP + FGSM", "lwta_ibp_softmax", True, ".830", ".825", ".870", ".870", ".790"),
    ]),
]

PAPER_NOTES = (
    ("The paper's PGD/CW/BSA numbers come from its reference code: PGD without EOT (one stochastic pass per "
     "gradient), unbounded CW-L2 and BSA on 100 images, labels = the model's own prediction; Rand is not an "
     "accuracy (fraction of uniform-noise images with max probability < 0.9)."),
    "Table 2 and Table 4 disagree on Logistic LWTA & IBP (Rand .911 vs .981); both rows are listed.",
    ("Tables 6 and 7 (FGSM adversarial training): the FGSM-trained rows were attacked with 40 (MNIST) and 20 "
     "(CIFAR-10) PGD steps, not the 200 of the other tables (paper section 4.4)."),
)

# Preferred table for `reported`: the main results table, then the ablation table.
_TABLE_PRIORITY = {"mnist": ("Table 2", "Table 4", "Table 6"), "cifar10": ("Table 3", "Table 5", "Table 7"),
                   "fashion_mnist": ()}


def paper_rows(model: str, dataset: str, fgsm: bool = False) -> list[dict]:
    """The paper's table rows for this architecture (and training: plain or FGSM), most authoritative first."""
    order = _TABLE_PRIORITY.get(dataset, ())
    model = model.removesuffix("_fgsm")  # the training variant is the `fgsm` flag
    rows = [r for r in PAPER_TABLES if r["model"] == model and r["dataset"] == dataset and r["fgsm"] == fgsm]
    return sorted(rows, key=lambda r: order.index(r["table"]) if r["table"] in order else len(order))


def paper_value(text: str) -> float:
    """A value as printed in the paper (".935", "1.0", "0") as a fraction."""
    return float(text)


# ---------------------------------------------------------------------------------------------------------------
# formatting and encoding


def pct(fraction: float) -> str:
    """RobustBench's percentage string: 0.93456 -> "93.46"."""
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 <= fraction <= 1):
        raise ValueError(f"expected a fraction in [0, 1], got {fraction!r}")
    return f"{100 * fraction:.2f}"


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def encode_counts(counts: Iterable[int], passes: int) -> str:
    """Per-example counts (0..passes, passes <= 35) as one base-36 digit each."""
    if not 1 <= passes <= 35:
        raise ValueError(f"passes must be in 1..35 to encode per-example counts, got {passes}")
    out = []
    for c in counts:
        c = int(c)
        if not 0 <= c <= passes:
            raise ValueError(f"count {c} outside 0..{passes}")
        out.append(_DIGITS[c])
    return "".join(out)


def decode_counts(text: str) -> list[int]:
    """Inverse of :func:`encode_counts`."""
    try:
        return [_DIGITS.index(ch) for ch in text]
    except ValueError:
        raise ValueError(f"per-example counts must be base-36 digits (0-9, a-z), got {text[:40]!r}...") from None


def describe_architecture(config: dict) -> str:
    """RobustBench's ``architecture`` string from a model config dict."""
    code = {"softmax": "Softmax (I10)", "logistic": "Logistic (I10)", "tanh16": "Tanh16 (Hadamard H16)",
            "logisticens10": "LogisticEns10 (ensemble, I10)", "tanhens16": "TanhEns16 (ensemble, H16)"}
    act = {"relu": "ReLU", "lwtamax": f"deterministic LWTA (U={config['U']})",
           "lwta": f"stochastic LWTA (U={config['U']})"}[config["activation"]]
    family = "ensemble" if config["code"].endswith(("ens10", "ens16")) else "standard"
    return (f"Verma & Swami {family} CNN, {act}{' + IBP' if config['ibp'] else ''}, "
            f"{code.get(config['code'], config['code'])} output code")


# ---------------------------------------------------------------------------------------------------------------
# files


def entry_path(out_dir: str | os.PathLike, dataset: str, threat_model: str, model: str, protocol: str) -> Path:
    """``<out_dir>/<dataset>/<threat_model>/<model>__<protocol>.json``."""
    return Path(out_dir) / dataset / threat_model / f"{model}__{protocol}.json"


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
    """Raise ValueError if ``entry`` does not follow the schema (needs ``jsonschema``) or is inconsistent."""
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


def load_entries(out_dir: str | os.PathLike, validate: bool = True) -> list[dict]:
    """Every entry under ``out_dir`` (validated; ValueError naming the file otherwise), with ``_path`` added."""
    entries = []
    for path in find_entries(out_dir):
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        if validate:
            try:
                validate_entry(entry)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        entry["_path"] = str(path)
        entries.append(entry)
    return entries


# ---------------------------------------------------------------------------------------------------------------
# rendering

_ATTACK_ORDER = ("pgd", "cw", "bsa", "random", "fgsm", "noise", "eot_pgd", "eot_pgd_2x", "eot_pgd_margin", "apgd_rand",
                 "transfer", "bpda")
_PROTOCOL_ORDER = ("paper", "paper-concrete", "adaptive", "autoattack-rand", "smoke")
PAPER_COLUMN_OF = {"clean": "Benign", "pgd": "PGD", "cw": "CW", "bsa": "BSA", "random": "Rand"}
_ATTACK_OF_COLUMN = {v: k for k, v in PAPER_COLUMN_OF.items()}
SORT_KEYS = ("robust", "clean", "model")


def _attack_keys(entries: list[dict]) -> list[str]:
    keys = {k for e in entries for k in e["attacks"] if k != "clean"}
    return [k for k in _ATTACK_ORDER if k in keys] + sorted(keys - set(_ATTACK_ORDER))


def _ci_text(r: dict) -> str:
    return f"{100 * r['mean']:.2f} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


def _worst(entry: dict) -> dict:
    return entry.get("worst_case_all_protocols") or entry["worst_case"]


def sort_entries(entries: list[dict], sort: str = "robust") -> list[dict]:
    """Sort by worst-case robust accuracy (descending, the default), clean accuracy (descending), model name, or
    the accuracy of one attack key (descending; entries without that attack last). Ties: model, protocol."""
    base = sorted(entries, key=lambda e: (e["model"], e["protocol"]["name"]))
    if sort == "model":
        return base
    if sort == "robust":
        return sorted(base, key=lambda e: -_worst(e)["mean"])
    if sort == "clean":
        return sorted(base, key=lambda e: -e["attacks"]["clean"]["mean"])
    return sorted(base, key=lambda e: (sort not in e["attacks"], -e["attacks"].get(sort, {"mean": 0})["mean"]))


def paper_percent(text: str) -> str:
    """A value as printed in the paper (".935") as a percentage string ("93.5")."""
    return f"{100 * paper_value(text):g}"


def _training(entry: dict) -> str:
    fgsm = entry["checkpoint"]["training"].get("fgsm_eps")
    return f"FGSM adv. (eps {fgsm:g})" if fgsm else "standard"


def _paper_row(entry: dict) -> dict | None:
    rows = entry["paper"]["rows"]
    return rows[0] if rows else None


def _paper_ref(row: dict) -> str:
    return f"{row['table']}, {(row['group'] + ' ') if row['group'] else ''}{row['row']}"


class _Cell:
    """Table cell: display text and the number a click-to-sort uses (None: sort by text)."""

    def __init__(self, text: str, value: float | None = None, css: str = ""):
        self.text, self.value, self.css = text, value, css


def _common_n(group: list[dict], key: str) -> int | None:
    ns = {e["attacks"][key]["n_examples"] for e in group if key in e["attacks"]}
    return ns.pop() if len(ns) == 1 else None


def _table(group: list[dict], keys: list[str]) -> tuple[list[str], list[list[_Cell]], list[str]]:
    """Header, rows and footnotes of one (data set, threat model, protocol) table."""
    n_of = {k: _common_n(group, k) for k in ["clean", *keys]}
    worst_ns = {_worst(e)["n_examples"] for e in group}
    worst_n = worst_ns.pop() if len(worst_ns) == 1 else None

    def head(label: str, n: int | None) -> str:
        return f"{label} (n={n})" if n is not None else label

    header = (["#", "model", "training", head("clean", n_of["clean"])]
              + [head(k, n_of[k]) for k in keys] + [head("worst case", worst_n), "paper (reported PGD)",
                                                     "unreliable"])
    rows, notes = [], []
    for rank, e in enumerate(group, 1):
        paper = _paper_row(e)

        def cell(key: str, r: dict | None, e=e, paper=paper) -> _Cell:
            if r is None:
                return _Cell("", None)
            text = _ci_text(r)
            if n_of.get(key) is None:
                text += f" (n={r['n_examples']})"
            col = PAPER_COLUMN_OF.get(key)
            if paper is not None and col is not None and e["protocol"]["name"] in ("paper", "paper-concrete"):
                text += f" · paper {paper_percent(paper['values'][col])}"
            return _Cell(text, r["mean"])

        w = _worst(e)
        worst_text = _ci_text(w) + ("" if worst_n is not None else f" (n={w['n_examples']})")
        if "worst_case_all_protocols" in e:
            worst_text += " (all protocols)"
        fired = [i for i in e["indicators"] if i["fired"]]
        mark = ""
        if fired:
            notes.append(f"`{e['model']}`: " + "; ".join(f"{i['name']}: {i['detail']}" for i in fired))
            mark = f" [{len(notes)}]"
        reported = (f"{e['reported']} ({_paper_ref(paper)})" if "reported" in e and paper is not None else "—")
        rows.append([_Cell(str(rank), rank), _Cell(f"`{e['model']}`"), _Cell(_training(e)),
                     cell("clean", e["attacks"]["clean"])]
                    + [cell(k, e["attacks"].get(k)) for k in keys]
                    + [_Cell(worst_text, w["mean"]),
                       _Cell(reported, float(e["reported"]) / 100 if "reported" in e else None),
                       _Cell(("**yes**" if e["unreliable"] else "no") + mark, 1 if e["unreliable"] else 0,
                             "bad" if e["unreliable"] else "")])
    return header, rows, notes


def _sections(entries: list[dict], sort: str) -> list[tuple[str, str, str, list[dict]]]:
    """``(dataset, threat_model, protocol, entries)`` groups in display order, entries sorted."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for e in sort_entries(entries, sort):
        groups.setdefault((e["dataset"], e["threat_model"], e["protocol"]["name"]), []).append(e)
    order = {p: i for i, p in enumerate(_PROTOCOL_ORDER)}
    return [(d, t, p, g) for (d, t, p), g in sorted(groups.items(), key=lambda kv: (
        kv[0][0], kv[0][1], order.get(kv[0][2], len(order)), kv[0][2]))]


def _hp_text(hp: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(hp.items()))


def _protocol_lines(group: list[dict], keys: list[str]) -> list[str]:
    """One line per attack: description, hyperparameters, EOT samples (from the first entry that has it)."""
    lines = []
    for key in ["clean", *keys]:
        r = next(e["attacks"][key] for e in group if key in e["attacks"])
        bits = [r["description"] or r["attack"]]
        if r["hyperparameters"]:
            bits.append(_hp_text(r["hyperparameters"]))
        if r["eot_samples"] > 1:
            bits.append(f"EOT {r['eot_samples']}")
        if r["kind"] == "adversarial" and not r["bounded"]:
            bits.append("unbounded: not in the worst case")
        lines.append(f"`{key}`: " + "; ".join(bits))
    return lines


_INTRO = ("Accuracies in % with 95 % confidence intervals. Each prediction averages S stochastic forward passes "
          "(the paper's inference rule) and every image is predicted `passes` times; accuracy = mean over images "
          "of the fraction of correct predictions. `random` is not an accuracy: the fraction of uniform-noise "
          "images predicted with max probability < 0.9 (the paper's Rand; higher is better). **Worst case** = "
          "per-image minimum over clean and every attack inside the threat model (for `adaptive`, also over the "
          "`paper` protocol's attacks when both ran: marked *all protocols*); unbounded CW/BSA and `random` are "
          "not part of it. Rows are sorted by worst case (robust accuracy), highest first. In the `paper` "
          "protocol, *paper X* beside our number is the paper's own number for the same architecture and "
          "training (its reference protocol: no EOT, 100 images for CW/BSA); *reported* is the paper's PGD "
          "accuracy. *unreliable*: an attack-failure indicator fired (see the notes).")


_PAPER_TABLE_TITLES = {"Table 2": "Table 2: MNIST, the paper's networks",
                       "Table 4": "Table 4: MNIST ablation (U = 2)",
                       "Table 6": "Table 6: MNIST, FGSM adversarial training (Softmax, U = 2)",
                       "Table 3": "Table 3: CIFAR-10, the paper's networks", "Table 5": "Table 5: CIFAR-10 ablation",
                       "Table 7": "Table 7: CIFAR-10, FGSM adversarial training"}


def _unreliable_attacks(entry: dict) -> set[str]:
    return {a for i in entry["indicators"] if i["fired"] and i["name"] == "unbounded_attack_failure"
            for a in i["attacks"]}


def paper_table_view(entries: list[dict], dataset: str, shipped: set[str] | None = None) -> list[tuple[str, list[str],
                                                                                                   list[list[str]]]]:
    """The paper's tables for ``dataset``, cell by cell: the paper's number, ours under the ``paper`` protocol
    (exact sampling; mean %, n) and our strongest attack (``adaptive`` worst case), or the reason a row has none.
    Returns ``(title, header, rows)`` per table."""
    by = {(e["model"], e["protocol"]["name"]): e for e in entries if e["dataset"] == dataset}
    out = []
    for table in _TABLE_PRIORITY.get(dataset, ()):
        rows = [r for r in PAPER_TABLES if r["table"] == table and r["dataset"] == dataset]
        if not rows:
            continue
        header = ["row", "our model", *(f"{c}: paper / ours" for c in PAPER_COLUMNS),
                  "ours, strongest attack (adaptive worst case)"]
        body = []
        for r in rows:
            label = " ".join(x for x in (r["group"], r["row"]) if x)
            model = None if r["model"] is None else r["model"] + ("_fgsm" if r["fgsm"] else "")
            entry = by.get((model, "paper"))
            if entry is None:
                if model is None:
                    why = "not an lwta-plugin architecture (a model of Madry et al. / Verma & Swami)"
                elif shipped is not None and model not in shipped:
                    why = "no shipped checkpoint (not trained; see FINDINGS.md)"
                else:
                    why = "not evaluated yet"
                body.append([label, f"`{model}`" if model else "—",
                             *(f"{r['values'][c]} / —" for c in PAPER_COLUMNS), why])
                continue
            bad = _unreliable_attacks(entry)
            cells = []
            for c in PAPER_COLUMNS:
                key = _ATTACK_OF_COLUMN[c]
                res = entry["attacks"].get(key)
                ours = "—" if res is None else (f"{100 * res['mean']:.1f} (n={res['n_examples']})"
                                                + (" †" if key in bad else ""))
                cells.append(f"{r['values'][c]} / {ours}")
            adaptive = by.get((model, "adaptive"))
            if adaptive is not None:
                w = _worst(adaptive)
                strongest = f"{100 * w['mean']:.1f} [{100 * w['ci_low']:.1f}, {100 * w['ci_high']:.1f}] " \
                            f"(n={w['n_examples']})"
            elif entry["number_forward_passes"] == 1:  # deterministic: the paper protocol's PGD is white-box
                w = entry["worst_case"]
                strongest = f"{100 * w['mean']:.1f} (n={w['n_examples']}; deterministic model: PGD-200 is white-box)"
            else:
                strongest = "adaptive protocol not run"
            body.append([label, f"`{model}`", *cells, strongest])
        out.append((_PAPER_TABLE_TITLES.get(table, table), header, body))
    return out


_PAPER_VIEW_NOTE = ("Paper / ours: the paper's number (its reference protocol) and ours under the `paper` protocol "
                    "(the same attacks, exact test-time sampling, true labels), mean accuracy in % over the first n "
                    "test images (Rand: fraction of uniform-noise images with max probability < 0.9). † = the "
                    "unbounded attack left accuracy above 2 %: the attack failed (unreliable), it does not show "
                    "robustness. The last column is our strongest evaluation: the worst case over the adaptive "
                    "protocol's attacks (EOT, margin loss, AutoAttack rand, BPDA, transfer) with its 95 % interval.")


def paper_tables_markdown(view: list[tuple[str, list[str], list[list[str]]]]) -> list[str]:
    """Markdown lines of :func:`paper_table_view`'s tables (one ``###`` section each)."""
    lines = []
    for title, header, rows in view:
        lines += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows] + [""]
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(entries: list[dict], sort: str = "robust", command: str = "lwta leaderboard",
                    shipped: set[str] | None = None) -> str:
    """``leaderboard/README.md``: one table per data set, threat model and protocol, then the paper's tables cell
    by cell (``shipped``: the zoo's model names, to tell untrained rows from unevaluated ones)."""
    lines = ["# lwta-plugin leaderboard", "",
             (f"<!-- Generated by `{command}` from the JSON entries (lwta_plugin/leaderboard.py). "
              "Do not edit by hand. -->"), "", _INTRO, ""]
    if not entries:
        lines += ["No entries yet: run `lwta evaluate` (see `tox -e eval-mnist-smoke`).", ""]
    current = None
    for dataset, tm, proto, group in _sections(entries, sort):
        if (dataset, tm) != current:
            current = (dataset, tm)
            eps = sorted({e["eps"] for e in group})
            lines += [f"## {dataset} / {tm} (eps = {', '.join(eps)})", ""]
        first = group[0]["protocol"]
        lines += [f"### `{proto}`: {first['title']}", ""]
        if first["smoke"]:
            lines += ["**SMOKE TEST: tiny attack budgets; these numbers are not robustness estimates.**", ""]
        sc = first["scoring"]
        lines += [(f"Scoring: S = {sc['samples']} passes per prediction, {sc['passes']} predictions per image, "
                   f"sampling `{sc['sampling']}`."), ""]
        keys = _attack_keys(group)
        header, rows, notes = _table(group, keys)
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(_md_escape(c.text) for c in row) + " |" for row in rows]
        lines.append("")
        lines += ["<details><summary>attacks</summary>", ""] + [f"- {_md_escape(t)}" for t in
                                                                 _protocol_lines(group, keys)] + ["", "</details>",
                                                                                                  ""]
        if notes:
            lines += [f"{i}. {_md_escape(n)}" for i, n in enumerate(notes, 1)] + [""]
    for dataset in sorted({e["dataset"] for e in entries}):
        view = paper_table_view(entries, dataset, shipped)
        if view:
            lines += [f"## The paper's tables, cell by cell ({dataset})", "", _PAPER_VIEW_NOTE, ""]
        lines += paper_tables_markdown(view)
    lines += ["## Notes on the paper's numbers", ""] + [f"- {n}" for n in PAPER_NOTES] + [""]
    return "\n".join(lines)


_SORT_JS = """
document.querySelectorAll('table.lb th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.getAttribute('data-dir') !== 'asc';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir'); });
    th.setAttribute('data-dir', asc ? 'asc' : 'desc');
    function key(r) { var c = r.cells[col]; var v = c.getAttribute('data-v');
      return v === null ? c.textContent : (v === '' ? -Infinity : parseFloat(v)); }
    rows.sort(function (a, b) { var x = key(a), y = key(b);
      var d = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
      return asc ? d : -d; });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_CSS = ("body{font-family:sans-serif;margin:2em;max-width:110em}table{border-collapse:collapse;margin-bottom:1em}"
        "th,td{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{cursor:pointer;background:#f3f3f3}"
        "td.num{text-align:right;white-space:nowrap}.smoke{color:#a60;font-weight:bold}"
        ".bad{color:#b00;font-weight:bold}details{margin-bottom:1.5em;font-size:13px}")


def render_html(entries: list[dict], sort: str = "robust", command: str = "lwta leaderboard") -> str:
    """``leaderboard/index.html``: the same tables, static, click a header to sort (inline JS, no assets)."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>lwta-plugin leaderboard</title>", f"<style>{_CSS}</style></head><body>",
             f"<!-- Generated by {esc(command)} (lwta_plugin/leaderboard.py). Do not edit by hand. -->",
             "<h1>lwta-plugin leaderboard</h1>",
             f"<p>{esc(_INTRO.replace('`', '').replace('**', '').replace('*', ''))} Click a column header to sort.</p>"]
    if not entries:
        parts.append("<p>No entries yet: run <code>lwta evaluate</code>.</p>")
    current = None
    for dataset, tm, proto, group in _sections(entries, sort):
        if (dataset, tm) != current:
            current = (dataset, tm)
            eps = sorted({e["eps"] for e in group})
            parts.append(f"<h2>{esc(dataset)} / {esc(tm)} (eps = {esc(', '.join(eps))})</h2>")
        first = group[0]["protocol"]
        parts.append(f"<h3>{esc(proto)}: {esc(first['title'])}</h3>")
        if first["smoke"]:
            parts.append("<p class=\"smoke\">SMOKE TEST: tiny attack budgets; these numbers are not robustness "
                         "estimates.</p>")
        sc = first["scoring"]
        parts.append(f"<p>Scoring: S = {sc['samples']} passes per prediction, {sc['passes']} predictions per "
                     f"image, sampling {esc(sc['sampling'])}.</p>")
        keys = _attack_keys(group)
        header, rows, notes = _table(group, keys)
        parts.append("<table class=\"lb\"><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header)
                     + "</tr></thead><tbody>")
        for row in rows:
            tds = []
            for c in row:
                text = esc(c.text.replace("`", "").replace("**", ""))
                if c.value is None:
                    tds.append(f"<td>{text}</td>" if not c.css else f"<td class=\"{c.css}\">{text}</td>")
                else:
                    css = " ".join(filter(None, ("num", c.css)))
                    tds.append(f"<td class=\"{css}\" data-v=\"{c.value:.10g}\">{text}</td>")
            parts.append("<tr>" + "".join(tds) + "</tr>")
        parts.append("</tbody></table>")
        parts.append("<details><summary>attacks</summary><ul>"
                     + "".join(f"<li>{esc(t.replace('`', ''))}</li>" for t in _protocol_lines(group, keys))
                     + "</ul></details>")
        if notes:
            parts.append("<ol>" + "".join(f"<li>{esc(n.replace('`', ''))}</li>" for n in notes) + "</ol>")
    parts += [("<h2>Notes on the paper's numbers</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in PAPER_NOTES)
               + "</ul>"), f"<script>{_SORT_JS}</script>", "</body></html>", ""]
    return "\n".join(parts)


def write_leaderboard(out_dir: str | os.PathLike = "leaderboard", sort: str = "robust",
                      command: str = "lwta leaderboard") -> tuple[Path, Path]:
    """Render ``README.md`` and ``index.html`` in ``out_dir`` from its entries (validated first)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"leaderboard directory {out} does not exist (run `lwta evaluate` first or pass "
                                "--dir)")
    entries = load_entries(out_dir)
    known = set(SORT_KEYS) | set(_ATTACK_ORDER) | {k for e in entries for k in e["attacks"]}
    if sort not in known:
        raise ValueError(f"unknown sort key {sort!r}; expected robust, clean, model or an attack key "
                         f"({', '.join(sorted(known - set(SORT_KEYS)))})")
    from .zoo import available_models

    shipped = {e["name"] for e in available_models()}
    md = atomic_write_text(out / "README.md", render_markdown(entries, sort, command, shipped))
    page = atomic_write_text(out / "index.html", render_html(entries, sort, command))
    return md, page


def add_leaderboard_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``lwta leaderboard [--out-dir leaderboard] [--sort robust|clean|model|<attack>]``."""
    p = subparsers.add_parser("leaderboard", help="render leaderboard/README.md and index.html from the entries",
                              description="Validate every entry under --dir against the schema and render "
                                          "README.md (Markdown tables) and index.html (static, click to sort).")
    p.add_argument("--out-dir", "--dir", dest="dir", default="leaderboard",
                   help="leaderboard directory, as lwta evaluate --out-dir (default: leaderboard)")
    p.add_argument("--sort", default="robust",
                   help="row order: robust (worst-case robust accuracy, descending; default), clean, model, or an "
                        "attack key such as pgd or eot_pgd (descending)")
    p.set_defaults(func=_leaderboard_command)
    return p


def _leaderboard_command(args: argparse.Namespace) -> int:
    command = "lwta leaderboard" + (f" --out-dir {args.dir}" if args.dir != "leaderboard" else "") \
        + (f" --sort {args.sort}" if args.sort != "robust" else "")
    md, page = write_leaderboard(args.dir, args.sort, command)
    print(f"wrote {md}")
    print(f"wrote {page}")
    return 0
