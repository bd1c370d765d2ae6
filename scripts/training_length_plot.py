"""Robust accuracy against training epochs (issue 13 part 3): the table and plot of experiments/training-length.

Reads the entries of ``lwta evaluate --config experiments/training-length/eval.json`` (rung 1 ``literal``: the
authors' PGD and sampler; rung 4 ``exact_sampler``: the paper's exact sampler; and clean accuracy, on the ladder's
test images) and writes ``experiments/training-length/robust_vs_epochs.png``; prints the Markdown table, and with
``--write`` puts it into the experiment's README between its result markers.
Usage: python scripts/training_length_plot.py [--write]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from lwta_plugin.plots import new_figure, save_figure

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "training-length"
SHIPPED = ROOT / "leaderboard" / "mnist" / "Linf" / "lwta_ibp_softmax__ladder.json"
SERIES = (("clean", "clean"), ("literal", "1. paper-literal PGD (authors' sampler)"),
          ("exact_sampler", "4. PGD, exact sampler (paper's text)"))
BEGIN, END = "<!-- results:begin (scripts/training_length_plot.py --write) -->", "<!-- results:end -->"


def load_points() -> list[tuple[int, dict]]:
    """(epoch, entry) for every evaluated kept checkpoint, by epoch."""
    points = []
    for path in sorted(EXPERIMENT.glob("results/epoch*/mnist/Linf/lwta_ibp_softmax__ladder.json")):
        epoch = int(re.search(r"epoch(\d+)", str(path.relative_to(EXPERIMENT))).group(1))
        points.append((epoch, json.loads(path.read_text(encoding="utf-8"))))
    return points


def _cell(result: dict | None) -> str:
    if result is None:
        return "-"
    return f"{100 * result['mean']:.1f} [{100 * result['ci_low']:.1f}, {100 * result['ci_high']:.1f}]"


def _row(label: str, entry: dict) -> str:
    a = entry["attacks"]
    n = ", ".join(str(a[k]["n_examples"]) for k, _ in SERIES if k in a)
    return f"| {label} | " + " | ".join(_cell(a.get(k)) for k, _ in SERIES) + f" | {n} |"


def table(points: list[tuple[int, dict]], shipped: dict | None) -> str:
    rows = ["| checkpoint | " + " | ".join(title for _, title in SERIES) + " | images |",
            "|---|" + "---:|" * (len(SERIES) + 1)]
    rows += [_row(f"epoch {epoch}", entry) for epoch, entry in points]
    if shipped is not None:
        rows.append(_row("shipped `lwta_ibp_softmax` (5 epochs, another run)", shipped))
    return "\n".join(rows)


def plot(points: list[tuple[int, dict]], paper_pgd: float, path: Path) -> Path:
    fig = new_figure(6.5, 4)
    ax = fig.add_subplot()
    for key, title in SERIES:
        pts = [(e, entry["attacks"][key]) for e, entry in points if key in entry["attacks"]]
        if not pts:
            continue
        xs = [e for e, _ in pts]
        ys = [100 * r["mean"] for _, r in pts]
        err = [[100 * (r["mean"] - r["ci_low"]) for _, r in pts], [100 * (r["ci_high"] - r["mean"]) for _, r in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=title)
    ax.axhline(100 * paper_pgd, ls="--", color="grey", lw=1, label=f"paper, PGD ({100 * paper_pgd:.1f} %)")
    ax.set_xscale("log")
    epochs = [e for e, _ in points]
    ax.set_xticks(epochs, [str(e) for e in epochs])
    ax.minorticks_off()
    ax.set_xlabel("training epochs (one 30-epoch run; log scale)")
    ax.set_ylabel("accuracy (%), 95 % interval")
    ax.set_ylim(-2, 102)
    ax.set_title("lwta_ibp_softmax: robustness against training length (test images 1000-1099)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update the experiment's README between its markers")
    args = parser.parse_args(argv)
    points = load_points()
    if not points:
        print("no evaluated checkpoint yet: run lwta evaluate --config experiments/training-length/eval.json",
              file=sys.stderr)
        return 1
    shipped = json.loads(SHIPPED.read_text(encoding="utf-8")) if SHIPPED.exists() else None
    from lwta_plugin.paper import paper_rows, paper_value

    paper_pgd = paper_value(paper_rows("lwta_ibp_softmax", "mnist")[0]["values"]["PGD"])
    print(f"wrote {plot(points, paper_pgd, EXPERIMENT / 'robust_vs_epochs.png')}")
    text = table(points, shipped)
    print(text)
    if args.write:
        readme = EXPERIMENT / "README.md"
        old = readme.read_text(encoding="utf-8")
        if BEGIN not in old:
            raise SystemExit(f"{readme} has no result markers ({BEGIN} ... {END})")
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")
        print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
