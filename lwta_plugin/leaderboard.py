"""The rendered leaderboard: ``leaderboard/README.md`` and ``leaderboard/index.html`` from the entries
(:mod:`lwta_plugin.entries`), never edited by hand, and the command ``lwta leaderboard``.

One table per data set, threat model and protocol (rows sorted by worst-case robust accuracy), then the paper's
tables cell by cell (:func:`paper_table_view`): the paper's number, ours under the same protocol, and our
strongest attack.
"""
from __future__ import annotations

import argparse
import html
import importlib.util
import os
from pathlib import Path

from .entries import failed_unbounded_attacks, load_entries
from .io import atomic_write_text
from .ladder import ladder_markdown, ladder_plot, ladder_rows
from .paper import (
    ATTACK_OF_COLUMN,
    PAPER_COLUMN_OF,
    PAPER_COLUMNS,
    PAPER_NOTES,
    PAPER_TABLES,
    TABLE_TITLES,
    TABLES_OF_DATASET,
    paper_percent,
    row_reference,
)
from .zoo import available_models

_ATTACK_ORDER = ("pgd", "cw", "bsa", "random", "fgsm", "noise", "eot_pgd", "eot_pgd_2x", "eot_pgd_margin", "apgd_rand",
                 "transfer", "bpda")
_PROTOCOL_ORDER = ("paper", "paper-concrete", "adaptive", "autoattack-rand", "smoke")
LADDER_PLOT = "{dataset}/Linf/plots/ladder.png"  # relative to the leaderboard directory
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


def _training(entry: dict) -> str:
    fgsm = entry["checkpoint"]["training"].get("fgsm_eps")
    return f"FGSM adv. (eps {fgsm:g})" if fgsm else "standard"


def _paper_row(entry: dict) -> dict | None:
    rows = entry["paper"]["rows"]
    return rows[0] if rows else None


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
        reported = (f"{e['reported']} ({row_reference(paper)})" if "reported" in e and paper is not None else "—")
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


def paper_table_view(entries: list[dict], dataset: str, shipped: set[str] | None = None) -> list[tuple[str, list[str],
                                                                                                   list[list[str]]]]:
    """The paper's tables for ``dataset``, cell by cell: the paper's number, ours under the ``paper`` protocol
    (exact sampling; mean %, n) and our strongest attack (``adaptive`` worst case), or the reason a row has none.
    Returns ``(title, header, rows)`` per table."""
    by = {(e["model"], e["protocol"]["name"]): e for e in entries if e["dataset"] == dataset}
    out = []
    for table in TABLES_OF_DATASET.get(dataset, ()):
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
            bad = failed_unbounded_attacks(entry)
            cells = []
            for c in PAPER_COLUMNS:
                key = ATTACK_OF_COLUMN[c]
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
        out.append((TABLE_TITLES.get(table, table), header, body))
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
                    shipped: set[str] | None = None, plots: bool = False) -> str:
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
        lines += ladder_markdown(entries, dataset, LADDER_PLOT.format(dataset=dataset) if plots else None)
    lines += ["## Notes on the paper's numbers", ""] + [f"- {n}" for n in PAPER_NOTES] + [""]
    return "\n".join(lines)


_SORT_JS = """
document.querySelectorAll('table.lb th').forEach(function (th) {
  th.addEventListener('click', function () {
    // the column within the clicked th's own table (forEach's index counts the th of every table)
    var col = th.cellIndex, table = th.closest('table'), body = table.tBodies[0];
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

    shipped = {e["name"] for e in available_models()}
    plots = False
    for dataset in sorted({e["dataset"] for e in entries}):
        ladders = ladder_rows(entries, dataset)
        if ladders and importlib.util.find_spec("matplotlib") is not None:
            ladder_plot(ladders, out / LADDER_PLOT.format(dataset=dataset))
            plots = True
    md = atomic_write_text(out / "README.md", render_markdown(entries, sort, command, shipped, plots))
    page = atomic_write_text(out / "index.html", render_html(entries, sort, command))
    return md, page


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``lwta leaderboard [--out-dir leaderboard] [--sort robust|clean|model|<attack>]``."""
    p = subparsers.add_parser("leaderboard", help="render leaderboard/README.md and index.html from the entries",
                              description="Validate every entry under --dir against the schema and render "
                                          "README.md (Markdown tables) and index.html (static, click to sort).")
    p.add_argument("--out-dir", "--dir", dest="dir", default="leaderboard",
                   help="directory of the entries, as given to lwta evaluate --out-dir (default: leaderboard, the "
                        "committed one; lwta evaluate writes to runs unless told otherwise)")
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