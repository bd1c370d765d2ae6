"""The ladder: from the authors' evaluation to ours, one change per rung, read from leaderboard entries.

Rungs 1-5 are the attacks of protocol ``ladder`` (:mod:`lwta_plugin.protocols`), all on the same test images;
rung 6 is the worst case of the model's ``adaptive`` entry (its own images, stated). :func:`ladder_rows` collects
them per model, :func:`ladder_markdown` renders a table per model and one table of all models, and
:func:`ladder_plot` draws accuracy per rung, one line per model, with the paper's number marked.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .entries import failed_unbounded_attacks
from .paper import ATTACK_OF_COLUMN, PAPER_COLUMNS, paper_percent, paper_rows, paper_value, row_reference
from .plots import new_figure, save_figure
from .protocols import LADDER_RUNGS

RUNG_TITLES = {
    "literal": ("paper-literal", ("the authors' evaluation: torchattacks PGD-200 (step 0.2) returning the last "
                                  "iterate, labels = the model's one-pass prediction, temperature-0.01 sampler")),
    "best_iterate": ("best iterate", "the same PGD returning the best point of its path"),
    "true_labels": ("true labels", "the true labels instead of the model's prediction"),
    "exact_sampler": ("exact sampler", "exact test-time sampling (the paper's text) instead of temperature 0.01"),
    "eot20": ("EOT 20", "the gradient averaged over 20 draws of the model's randomness"),
    "adaptive": ("adaptive worst case", ("per-image worst case over the adaptive protocol (EOT-PGD, margin loss, "
                                         "APGD-rand, BPDA, transfer)")),
}
RUNGS = (*LADDER_RUNGS, "adaptive")


@dataclass(frozen=True)
class Rung:
    """One measured rung of one model: accuracy (fraction), its 95 % interval, images used and where they start."""

    key: str
    mean: float
    ci_low: float
    ci_high: float
    n_examples: int
    start: int


@dataclass(frozen=True)
class ModelLadder:
    model: str
    paper_pgd: float | None  # the paper's reported PGD accuracy (fraction), if the paper has this row
    paper_ref: str
    rungs: dict[str, Rung]
    command: str


def _rung(key: str, r: dict) -> Rung:
    return Rung(key, r["mean"], r["ci_low"], r["ci_high"], r["n_examples"], r.get("start", 0))


def ladder_rows(entries: Sequence[dict], dataset: str) -> list[ModelLadder]:
    """Every model of ``dataset`` with a ``ladder`` entry, in model order."""
    by = {(e["model"], e["protocol"]["name"]): e for e in entries if e["dataset"] == dataset}
    out = []
    for (model, proto), entry in sorted(by.items()):
        if proto != "ladder":
            continue
        rungs = {k: _rung(k, entry["attacks"][k]) for k in LADDER_RUNGS if k in entry["attacks"]}
        adaptive = by.get((model, "adaptive"))
        if adaptive is not None:
            rungs["adaptive"] = _rung("adaptive", adaptive.get("worst_case_all_protocols") or adaptive["worst_case"])
        fgsm = bool(entry["checkpoint"]["training"].get("fgsm_eps"))
        rows = paper_rows(model, dataset, fgsm)
        paper = paper_value(rows[0]["values"]["PGD"]) if rows else None
        ref = row_reference(rows[0]) if rows else ""
        out.append(ModelLadder(model, paper, ref, rungs, entry["command"]))
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _images(r: Rung) -> str:
    return f"{r.n_examples} (test images {r.start}-{r.start + r.n_examples - 1})"


def model_table(ladder: ModelLadder) -> list[str]:
    """Markdown lines: one row per rung with its accuracy, interval, images and the change from the rung above."""
    paper = "—" if ladder.paper_pgd is None else f"{_pct(ladder.paper_pgd)} ({ladder.paper_ref})"
    lines = [f"#### `{ladder.model}` (paper's PGD: {paper})", "", f"Command: `{ladder.command}`", "",
             "| rung | what changes | accuracy % [95 % CI] | images | change from the rung above |",
             "|---|---|---|---|---|"]
    previous = None
    for i, key in enumerate(RUNGS, 1):
        title, change = RUNG_TITLES[key]
        r = ladder.rungs.get(key)
        if r is None:
            lines.append(f"| {i}. {title} | {change} | not run | | |")
            continue
        delta = "" if previous is None else f"{100 * (r.mean - previous.mean):+.1f} points"
        if previous is not None and (r.start, r.n_examples) != (previous.start, previous.n_examples):
            delta += " (other images)"
        lines.append(f"| {i}. {title} | {change} | {_pct(r.mean)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}] | "
                     f"{_images(r)} | {delta} |")
        previous = r
    return [*lines, ""]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table (header, separator, rows) and the blank line after it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return [*lines, *("| " + " | ".join(cells) + " |" for cells in rows), ""]


def summary_table(ladders: Sequence[ModelLadder]) -> list[str]:
    """Markdown lines: one row per model, the paper's PGD number, then accuracy % (n) per rung."""
    header = ["model", "paper's PGD", *(f"{i}. {RUNG_TITLES[k][0]}" for i, k in enumerate(RUNGS, 1))]
    rows = []
    for lad in ladders:
        cells = [f"`{lad.model}`", "—" if lad.paper_pgd is None else _pct(lad.paper_pgd)]
        for key in RUNGS:
            r = lad.rungs.get(key)
            cells.append("—" if r is None else f"{_pct(r.mean)} (n={r.n_examples})")
        rows.append(cells)
    return _table(header, rows)


LADDER_NOTE = ("Each rung changes one thing from the rung above, on the same test images (rungs 1-5: protocol "
               "`ladder`; rung 6: the model's `adaptive` entry, on its own images). Accuracy under attack in %, the "
               "mean over 5 predictions per image (each the average of S = 5 stochastic passes) with its 95 % "
               "interval; a rung that does not move the number is a finding too. The paper's PGD number is what "
               "its Tables 2, 4 and 6 report for the same architecture.")


def literal_table(entries: Sequence[dict], dataset: str) -> list[str]:
    """Markdown lines: the paper's row beside our ``paper-literal`` entry, column by column (the paper's number /
    ours, % with n; † = an unbounded attack that failed)."""
    literal = sorted((e for e in entries if e["dataset"] == dataset and e["protocol"]["name"] == "paper-literal"),
                     key=lambda e: e["model"])
    if not literal:
        return []
    header = ["model", "paper's row", *(f"{c}: paper / literal" for c in PAPER_COLUMNS)]
    rows = []
    for e in literal:
        paper = e["paper"]["rows"]
        failed = failed_unbounded_attacks(e)
        cells = [f"`{e['model']}`", row_reference(paper[0]) if paper else "—"]
        for col in PAPER_COLUMNS:
            r = e["attacks"].get(ATTACK_OF_COLUMN[col])
            ours = "—" if r is None else f"{_pct(r['mean'])} (n={r['n_examples']})" + (
                " †" if ATTACK_OF_COLUMN[col] in failed else "")
            cells.append(f"{paper_percent(paper[0]['values'][col]) if paper else '—'} / {ours}")
        rows.append(cells)
    return _table(header, rows)


LITERAL_NOTE = ("First, the paper's own evaluation, reproduced (protocol `paper-literal`: torchattacks PGD returning "
                "the last iterate, the model's one-pass prediction as labels, the authors' temperature-0.01 sampler, "
                "their image slices and scoring): the paper's number / ours, in %, with the images used. † = the "
                "unbounded attack left accuracy above 2 %: it failed, as in the paper, where CW and BSA report "
                "accuracies near 1.")


def ladder_markdown(entries: Sequence[dict], dataset: str, plot: str | None = None) -> list[str]:
    """The ladder section for ``dataset`` (empty if no model has a ``ladder`` entry); ``plot``: a relative path
    to the plot to show."""
    ladders = ladder_rows(entries, dataset)
    literal = literal_table(entries, dataset)
    if not ladders and not literal:
        return []
    lines = [f"## The paper's evaluation, reproduced, then taken apart ({dataset})", ""]
    if literal:
        lines += [LITERAL_NOTE, "", *literal]
    if not ladders:
        return lines
    lines += [LADDER_NOTE, ""]
    if plot:
        lines += [f"![accuracy per rung]({plot})", ""]
    lines += summary_table(ladders)
    for lad in ladders:
        lines += model_table(lad)
    return lines


def ladder_plot(ladders: Sequence[ModelLadder], path: str | Path) -> Path:
    """Accuracy per rung, one line per model; the paper's PGD number as a marker at rung 0 ("paper")."""
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    xs = list(range(len(RUNGS) + 1))
    for lad in ladders:
        pts = [(i, 100 * lad.rungs[k].mean) for i, k in enumerate(RUNGS, 1) if k in lad.rungs]
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lad.model)
        if lad.paper_pgd is not None:
            ax.plot([0], [100 * lad.paper_pgd], marker="*", markersize=12, color=line.get_color())
            if pts:
                ax.plot([0, pts[0][0]], [100 * lad.paper_pgd, pts[0][1]], ls=":", color=line.get_color(), lw=0.8)
    ax.set_xticks(xs, ["paper\n(reported)", *(f"{i}. {RUNG_TITLES[k][0]}" for i, k in enumerate(RUNGS, 1))],
                  fontsize=7)
    ax.set_ylim(-2, 102)
    ax.set_ylabel("accuracy under attack (%)")
    ax.set_title("From the paper's evaluation to EOT and adaptive attacks (★ = the paper's PGD number)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, Path(path))
