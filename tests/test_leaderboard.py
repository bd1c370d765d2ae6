"""Leaderboard: the schema (and every committed file under leaderboard/), the paper's numbers, rendering."""
from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from _tiny_models import fake_build_attack_for
from hypothesis import given
from hypothesis import strategies as st

from lwta_plugin import entries as entries_mod
from lwta_plugin import leaderboard
from lwta_plugin.checkpoint import save_checkpoint
from lwta_plugin.entries import find_entries, is_entry_path, pct, validate_entry
from lwta_plugin.evaluation import EvaluationConfig, evaluate, read_config_file
from lwta_plugin.leaderboard import render_html, render_markdown, sort_entries, write_leaderboard
from lwta_plugin.models import create_model, list_models
from lwta_plugin.paper import PAPER_COLUMNS, PAPER_TABLES, paper_rows
from lwta_plugin.statistics import decode_counts, encode_counts

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
PAPER_TXT = ROOT.parent / "shared" / "reference" / "paper.txt"  # the reference copy, where present
PAPER_EXCERPT = ROOT / "tests" / "data" / "paper_tables.txt"


# ---------------------------------------------------------------------------------------------------------------
# committed files


def _committed_json(root: Path) -> list[Path]:
    """The JSON files git tracks under ``root`` (every one when this is not a git checkout). Running evaluations
    keep their state in ignored ``.*.partial`` directories beside the entries; those are not committed."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", "."], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return sorted(root.rglob("*.json"))
    return sorted(root / p for p in out.decode().split("\0") if p.endswith(".json"))


def test_every_committed_leaderboard_file_is_valid():
    """Entries follow the schema, configs load, nothing else hides among them (passes with no entries yet)."""
    root = ROOT / "leaderboard"
    if not root.is_dir():
        pytest.skip("no leaderboard directory")
    for path in _committed_json(root):
        rel = path.relative_to(root)
        if len(rel.parts) == 1:
            read_config_file(path)
        elif is_entry_path(path) and len(rel.parts) == 3:
            entry = json.loads(path.read_text(encoding="utf-8"))
            validate_entry(entry)
            assert (entry["dataset"], entry["threat_model"]) == rel.parts[:2], path
            assert path.name == f"{entry['model']}__{entry['protocol']['name']}.json", path
        elif rel.parts[-2] == "timing" and len(rel.parts) == 4:  # beside the entries, not among them
            assert "seconds" in json.loads(path.read_text(encoding="utf-8")), path
            assert (path.parent.parent / path.name).is_file(), f"{path}: timing of no entry"
        elif rel.parts[-2] == "plots":
            assert json.loads(path.read_text(encoding="utf-8"))["format"] == "lwta-plugin/plots-1", path
        else:
            pytest.fail(f"unexpected JSON file in leaderboard/: {rel}")
    assert not [p for p in _committed_json(root) if any(part.endswith(".partial") for part in p.parts)], \
        "unfinished evaluation state must not be committed"
    entries = find_entries(root)
    if entries:
        readme = (root / "README.md").read_text(encoding="utf-8")
        for path in entries:
            assert f"`{path.name.split('__')[0]}`" in readme, f"{path} is not in leaderboard/README.md: rerun " \
                                                              "`lwta leaderboard`"


# ---------------------------------------------------------------------------------------------------------------
# the paper's numbers


def test_paper_tables_shape_and_models():
    counts = {}
    for r in PAPER_TABLES:
        counts[r["table"]] = counts.get(r["table"], 0) + 1
        assert set(r["values"]) == set(PAPER_COLUMNS)
        assert all(re.fullmatch(r"\d?\.\d+|0|1\.0", v) for v in r["values"].values()), r
        assert r["model"] is None or r["model"] in list_models(), r["model"]
    assert counts == {"Table 2": 6, "Table 3": 6, "Table 4": 20, "Table 5": 12, "Table 6": 6, "Table 7": 6}


def test_paper_rows_pick_the_right_table():
    rows = paper_rows("lwta_ibp_softmax", "mnist")
    assert [(r["table"], r["row"]) for r in rows] == [("Table 2", "Softmax (U=2)"), ("Table 4", "LWTA & IBP"),
                                                      ("Table 6", "LWTA & IBP")]
    assert rows[0]["values"] == {"Benign": ".992", "PGD": ".935", "CW": ".990", "BSA": "1.0", "Rand": ".961"}
    fgsm = paper_rows("lwta_ibp_softmax", "mnist", fgsm=True)
    assert [(r["table"], r["values"]["PGD"]) for r in fgsm] == [("Table 6", ".970")]
    assert paper_rows("lwta_ibp_softmax_fgsm", "mnist", fgsm=True) == fgsm  # zoo name of the FGSM variant
    assert paper_rows("relu_tanh16", "mnist")[0]["values"]["PGD"] == ".421"
    assert paper_rows("lwta_ibp_logistic", "mnist")[0]["values"]["Rand"] == ".911"  # Table 2 (Table 4: .981)
    assert paper_rows("lwta_ibp_softmax_u4", "mnist")[0]["values"]["Benign"] == ".9613"
    assert paper_rows("lwta_ibp_tanh16", "cifar10")[0]["table"] == "Table 3"
    assert paper_rows("lwta_ibp_tanh16", "fashion_mnist") == []


def _printed_rows(lines: list[str]) -> list[tuple[str, ...]]:
    """The last five numbers of every table line that ends in at least five numbers."""
    number = re.compile(r"^(\d?\.\d+|0|1\.0)$")
    printed = []
    for line in lines:
        tail = []
        for tok in reversed(line.split()):
            if not number.match(tok):
                break
            tail.insert(0, tok)
        if len(tail) >= 5:
            printed.append(tuple(tail[-5:]))
    return printed


def _excerpt_blocks() -> list[tuple[int, list[str]]]:
    blocks: list[tuple[int, list[str]]] = []
    for line in PAPER_EXCERPT.read_text(encoding="utf-8").splitlines():
        if line.startswith("@@ "):
            blocks.append((int(line[3:]), []))
        elif not line.startswith("#"):
            blocks[-1][1].append(line)
    return blocks


def test_paper_tables_match_the_paper_text():
    """Every 5-number row of the paper's tables, in order, equals our transcription (from the shipped excerpt of
    the paper's text, tests/data/paper_tables.txt)."""
    lines = [line for _, block in _excerpt_blocks() for line in block]
    assert _printed_rows(lines) == [tuple(r["values"][c] for c in PAPER_COLUMNS) for r in PAPER_TABLES]


def test_paper_excerpt_is_verbatim():
    """The shipped excerpt is the paper's text, line for line (checked where the reference copy exists; the
    excerpt itself is what the test above needs)."""
    blocks = _excerpt_blocks()
    assert [b[1][0].split(":")[0] for b in blocks] == [f"Table {i}" for i in (2, 3, 4, 5, 6)]
    if not PAPER_TXT.is_file():
        return
    paper = PAPER_TXT.read_text(encoding="utf-8").splitlines()
    for first, block in blocks:
        assert paper[first - 1:first - 1 + len(block)] == block, f"excerpt block at line {first} differs"


# ---------------------------------------------------------------------------------------------------------------
# encoding


@given(st.integers(1, 35).flatmap(lambda p: st.tuples(st.just(p), st.lists(st.integers(0, p), max_size=50))))
def test_counts_round_trip(args):
    passes, counts = args
    text = encode_counts(counts, passes)
    assert len(text) == len(counts) and decode_counts(text) == counts


def test_encoding_and_percent_errors():
    with pytest.raises(ValueError):
        encode_counts([3], 2)
    with pytest.raises(ValueError):
        encode_counts([0], 36)
    with pytest.raises(ValueError):
        decode_counts("0A")
    assert pct(0.93456) == "93.46" and pct(1) == "100.00" and pct(0) == "0.00"
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError):
            pct(bad)


# ---------------------------------------------------------------------------------------------------------------
# entries from a (fake-attack) evaluation



@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """A leaderboard directory with paper entries of two models and a smoke entry of one."""
    out = tmp_path_factory.mktemp("board")
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(6, 1, 28, 28, generator=g), torch.randint(0, 10, (6,), generator=g))
    for i, name in enumerate(("lwta_ibp_softmax", "relu_softmax")):
        torch.manual_seed(i)
        ckpt = out / f"{name}.pt"
        save_checkpoint(ckpt, create_model(name, "mnist"), {})
        protocols = ["paper", "smoke"] if i == 0 else ["paper"]
        config = EvaluationConfig(name, "mnist", protocols, n_examples=6, batch_size=3, passes=2, out_dir=out,
                                  checkpoints={name: str(ckpt)})
        evaluate(config, data=data, attack_factory=fake_build_attack_for, progress=False, log=None)
    return out


@pytest.fixture
def entry(board) -> dict:
    return json.loads((board / "mnist" / "Linf" / "lwta_ibp_softmax__paper.json").read_text())


def test_schema_rejects_broken_entries(entry):
    validate_entry(entry)
    mutations = {
        "missing clean_acc": lambda e: e.pop("clean_acc"),
        "percent with one decimal": lambda e: e.__setitem__("clean_acc", "93.5"),
        "unknown field": lambda e: e.__setitem__("extra", 1),
        "per-example length": lambda e: e["attacks"]["pgd"].__setitem__("per_example_correct", "01"),
        "count above passes": lambda e: e["attacks"]["pgd"].__setitem__(
            "per_example_correct", "9" * e["attacks"]["pgd"]["n_examples"]),
        "adversarial without perturbation": lambda e: e["attacks"]["pgd"].pop("perturbation"),
        "smoke flag of the paper protocol": lambda e: e["protocol"].__setitem__("smoke", True),
        "adaptive without external": lambda e: e["protocol"].__setitem__("adaptive", True),
        "bad checkpoint hash": lambda e: e["checkpoint"].__setitem__("sha256", "abc"),
        "random score counted as bounded": lambda e: e["attacks"]["random"].__setitem__("bounded", True),
        "command": lambda e: e.__setitem__("command", "python evaluate.py"),
    }
    for what, mutate in mutations.items():
        bad = copy.deepcopy(entry)
        mutate(bad)
        with pytest.raises(ValueError):
            validate_entry(bad)
            pytest.fail(what)


def _forge_worst_case(e: dict) -> None:
    """A consistent-looking forgery: every image robust, summary to match."""
    w = e["worst_case"]
    w.update(per_example_correct="2" * w["n_examples"], mean=1.0, ci_high=1.0)


FORGERIES = {
    "attacks/pgd/mean": lambda e: e["attacks"]["pgd"].__setitem__("mean", 0.9),
    "attacks/pgd/ci_low": lambda e: e["attacks"]["pgd"].__setitem__("ci_low", e["attacks"]["pgd"]["ci_low"] / 2),
    "attacks/clean/ci_high": lambda e: e["attacks"]["clean"].__setitem__("ci_high", 1.0),
    "worst_case/mean": lambda e: e["worst_case"].__setitem__("mean", 0.75),
    "worst_case/": _forge_worst_case,
    "worst_case/attacks": lambda e: e["worst_case"].__setitem__("attacks", ["clean"]),
    "clean_acc": lambda e: e.__setitem__("clean_acc", "99.99"),
    "reported": lambda e: e.__setitem__("reported", "99.00"),
    "paper/rows": lambda e: e["paper"]["rows"][0]["values"].__setitem__("PGD", ".999"),
    "indicators": lambda e: e["indicators"][0].__setitem__("fired", not e["indicators"][0]["fired"]),
    "unreliable": lambda e: e.__setitem__("unreliable", not e["unreliable"]),
    "footnote": lambda e: e.__setitem__("footnote", "Robust."),
    "eps": lambda e: e.__setitem__("eps", "0.1"),
    "attacks/cw/bounded": lambda e: e["attacks"]["cw"].__setitem__("bounded", True),
    "attacks/pgd/passes": lambda e: e["attacks"]["pgd"].__setitem__("passes", 3),
    "NaN or infinity": lambda e: e["attacks"]["pgd"].__setitem__("mean", float("nan")),
    "autoattack_acc": lambda e: e.__setitem__("autoattack_acc", "50.00"),
    "attack_failure": lambda e: e.__setitem__("attack_failure", []),
}


@pytest.mark.parametrize("field", FORGERIES)
def test_figures_that_disagree_with_the_counts_are_refused(entry, field):
    """Every published figure is recomputed from the per-example counts; the error names the field."""
    forged = copy.deepcopy(entry)
    FORGERIES[field](forged)
    with pytest.raises(ValueError, match=re.escape(field)):
        validate_entry(forged)


def test_forged_files_are_refused_naming_file_and_field(board, tmp_path):
    import shutil

    copy_dir = tmp_path / "board"
    shutil.copytree(board, copy_dir)
    path = copy_dir / "mnist" / "Linf" / "lwta_ibp_softmax__paper.json"
    good = path.read_text()
    path.write_text(good.replace('"mean": ' + json.dumps(json.loads(good)["worst_case"]["mean"]), '"mean": NaN', 1))
    with pytest.raises(ValueError, match=r"lwta_ibp_softmax__paper\.json: not valid JSON: NaN is not a number"):
        entries_mod.load_entries(copy_dir)
    forged = json.loads(good)
    forged["worst_case"]["mean"] = 1.0
    path.write_text(json.dumps(forged))
    with pytest.raises(ValueError, match=r"lwta_ibp_softmax__paper\.json: field 'worst_case/mean': stored 1\.0"):
        write_leaderboard(copy_dir)
    path.write_text(good)
    (copy_dir / "mnist" / "Linf" / "relu_softmax__paper.json").write_text(good)  # another model's name
    with pytest.raises(ValueError, match=r"relu_softmax__paper\.json: the entry is of model 'lwta_ibp_softmax'"):
        write_leaderboard(copy_dir)


def test_rendered_markdown(board):
    entries = entries_mod.load_entries(board)
    md = render_markdown(entries)
    assert "### `paper`" in md and "### `smoke`" in md and "SMOKE TEST" in md
    paper_section = md.split("### `paper`")[1].split("###")[0]
    rows = [line for line in paper_section.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 2
    header = paper_section.split("\n| ")[1]
    cols = [c.strip() for c in header.splitlines()[0].strip("| ").split("|")]
    assert cols[:6] == ["#", "model", "clean (n=6)", "worst case (n=6)", "paper PGD", "flags"]  # what matters first
    assert "pgd (n=6)" in cols and cols[-1] == "training"
    ours = next(r for r in rows if "`lwta_ibp_softmax`" in r)
    assert "paper 93.5" in ours and "paper 99.2" in ours and "| 93.5 (Table 2) |" in ours
    relu = next(r for r in rows if "`relu_softmax`" in r)
    assert "paper 8.2" in relu  # Table 4, Softmax Baseline: PGD .082
    worst = {e["model"]: e["worst_case"]["mean"] for e in entries if e["protocol"]["name"] == "paper"}
    expected = sorted(worst, key=lambda m: (-worst[m], m))
    assert [next(m for m in worst if f"`{m}`" in r) for r in rows] == expected  # by robust accuracy
    assert "Tables 6 and 7" in md  # the notes on the paper's numbers


def test_settings_that_differ_between_entries_are_shown_per_model(board):
    """A section's scoring line and attack list are not the first entry's: entries of one protocol run with other
    passes or hyperparameters (e.g. a full-scale entry beside older ones) each show theirs, with their models."""
    entries = [e for e in entries_mod.load_entries(board) if e["protocol"]["name"] == "paper"]
    assert len(entries) == 2
    md = render_markdown(entries)
    assert "Scoring: S = 5 passes per prediction, 2 predictions per image, sampling `paper`." in md
    changed = copy.deepcopy(entries)
    relu = next(e for e in changed if e["model"] == "relu_softmax")
    relu["protocol"]["scoring"]["passes"] = 10
    relu["attacks"]["pgd"]["hyperparameters"]["steps"] = 7
    md = render_markdown(changed)
    assert ("2 predictions per image, sampling `paper` (the others); S = 5 passes per prediction, 10 "
            "predictions per image, sampling `paper` (`relu_softmax`).") in md
    pgd = next(line for line in md.splitlines() if line.startswith("- `pgd`:"))
    assert "steps=7" in pgd and "(`relu_softmax`)" in pgd and "(the others)" in pgd
    cw = next(line for line in md.splitlines() if line.startswith("- `cw`:"))
    assert "`relu_softmax`" not in cw  # the same settings: one text
    assert "10 predictions per image" in render_html(changed)


def test_paper_tables_cell_by_cell(board):
    entries = entries_mod.load_entries(board)
    shipped = {"lwta_ibp_softmax", "relu_softmax", "lwta_softmax"}
    view = {t: rows for t, _, rows in leaderboard.paper_table_view(entries, "mnist", shipped)}
    assert list(view) == ["Table 2: MNIST, the paper's networks", "Table 4: MNIST ablation (U = 2)",
                          "Table 6: MNIST, FGSM adversarial training (Softmax, U = 2)"]
    rows = {r[0]: r for r in view["Table 4: MNIST ablation (U = 2)"]}
    assert len(rows) == 20
    relu = next(e for e in entries if e["model"] == "relu_softmax" and e["protocol"]["name"] == "paper")
    pgd = relu["attacks"]["pgd"]
    assert rows["Softmax Baseline"][1] == "`relu_softmax`"
    assert rows["Softmax Baseline"][3].startswith(f"8.2 / {100 * pgd['mean']:.1f} (n=6)")  # percent / percent
    assert rows["Softmax Baseline"][-1].endswith("deterministic model: PGD-200 is white-box)")
    assert rows["Softmax LWTA & IBP"][-1] == "adaptive protocol not run"
    assert rows["Softmax LWTA"][-1] == "not evaluated yet" and rows["Softmax LWTA"][2] == "99.2 / —"
    # a model with an adaptive entry and no paper entry: its strongest attack is shown, the paper columns stay empty
    only_adaptive = copy.deepcopy(relu)
    only_adaptive["model"], only_adaptive["protocol"]["name"] = "lwta_softmax", "adaptive"
    w = only_adaptive["worst_case"]
    view = {t: rows for t, _, rows in leaderboard.paper_table_view([*entries, only_adaptive], "mnist", shipped)}
    row = {r[0]: r for r in view["Table 4: MNIST ablation (U = 2)"]}["Softmax LWTA"]
    assert row[2] == "99.2 / —" and row[3] == "90 / —"
    assert row[-1] == f"{100 * w['mean']:.1f} [{100 * w['ci_low']:.1f}, {100 * w['ci_high']:.1f}] (n=6)"
    assert rows["Softmax LWTAmax"][-1].startswith("no shipped checkpoint")
    table2 = {r[0]: r for r in view["Table 2: MNIST, the paper's networks"]}
    assert table2["Madry"][-1].startswith("not an lwta-plugin architecture")
    fgsm = {r[0]: r for r in view["Table 6: MNIST, FGSM adversarial training (Softmax, U = 2)"]}
    assert fgsm["Softmax LWTA & IBP + FGSM"][1] == "`lwta_ibp_softmax_fgsm`"
    md = render_markdown(entries, shipped=shipped)
    assert "## The paper's tables, cell by cell (mnist)" in md and "### Table 6: MNIST, FGSM" in md


def test_sorting(board):
    entries = entries_mod.load_entries(board)
    assert [e["model"] for e in sort_entries(entries, "model")] == ["lwta_ibp_softmax", "lwta_ibp_softmax",
                                                                     "relu_softmax"]
    robust = [e["worst_case"]["mean"] for e in sort_entries(entries, "robust")]
    assert robust == sorted(robust, reverse=True)
    clean = [e["attacks"]["clean"]["mean"] for e in sort_entries(entries, "clean")]
    assert clean == sorted(clean, reverse=True)
    by_fgsm = sort_entries(entries, "fgsm")
    assert by_fgsm[-1]["protocol"]["name"] == "paper"  # entries without the attack come last


def test_rendered_html(board):
    page = render_html(entries_mod.load_entries(board))
    assert page.startswith("<!DOCTYPE html>") and page.count("<table class=\"lb\">") == 2
    assert "data-v=" in page and "<script>" in page and "addEventListener('click'" in page
    assert "`" not in page.split("<script>")[0] and "<td>lwta_ibp_softmax</td>" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _need_browser(why: str) -> None:
    """Skip without a browser; fail instead where one is required (CI sets LWTA_REQUIRE_BROWSER=1)."""
    if CHROMIUM is None:
        message = f"chromium is not installed (Debian: apt-get install chromium): it {why}"
        if os.environ.get("LWTA_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; LWTA_REQUIRE_BROWSER=1 requires it")
        pytest.skip(message)

# Appended to a copy of the page, after its own script: in every table, click the model header, then the worst-case
# header twice, record the model column after each click and any uncaught error, and write it all into the DOM.
_CLICK_SCRIPT = """<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) { errors.push(String(e.message)); });
  var tables = [];
  document.querySelectorAll('table.lb').forEach(function (table) {
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var model = heads.filter(function (h) { return h.textContent === 'model'; })[0];
    var worst = heads.filter(function (h) { return h.textContent.indexOf('worst case') === 0; })[0];
    function order() {
      return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
        return r.cells[model.cellIndex].textContent; });
    }
    var rec = {initial: order()};
    model.click(); rec.model = order();
    worst.click(); rec.worst_first = order();
    worst.click(); rec.worst_second = order();
    tables.push(rec);
  });
  var pre = document.createElement('pre');
  pre.id = 'sort-result';
  pre.textContent = JSON.stringify({tables: tables, errors: errors});
  document.body.appendChild(pre);
})();
</script>
"""


def _three_tables(board: Path) -> list[dict]:
    """Three rows per table in three tables (paper and smoke on mnist, paper on cifar10), with worst-case
    accuracies that order the rows differently from their names."""
    ours = {e["protocol"]["name"]: e for e in entries_mod.load_entries(board) if e["model"] == "lwta_ibp_softmax"}
    out = []
    for base, dataset in ((ours["paper"], "mnist"), (ours["smoke"], "mnist"), (ours["paper"], "cifar10")):
        for name, worst in (("m_a", 0.5), ("m_b", 0.9), ("m_c", 0.1)):
            e = copy.deepcopy(base)
            e["model"], e["dataset"] = name, dataset
            e["worst_case"]["mean"] = worst
            out.append(e)
    return out


def test_html_sorting_in_a_headless_browser(board, tmp_path):
    """Clicking a header sorts its own table, in every table of the page (column indices used to count the
    headers of all tables, so any table but the first threw a TypeError)."""
    _need_browser("runs the page's sort script")
    page = render_html(_three_tables(board))
    assert page.count("<table class=\"lb\">") == 3
    path = tmp_path / "index.html"
    path.write_text(page.replace("</body>", _CLICK_SCRIPT + "</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r'<pre id="sort-result">(.*?)</pre>', out.stdout, re.DOTALL)
    assert found, f"no result in the page (exit {out.returncode}): {out.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["errors"] == []
    assert len(result["tables"]) == 3
    for table in result["tables"]:
        assert table["initial"] == ["m_b", "m_a", "m_c"]  # rendered by worst case, highest first
        assert table["model"] == ["m_a", "m_b", "m_c"]  # first click: ascending
        assert table["worst_first"] == ["m_c", "m_a", "m_b"]  # another column: ascending again
        assert table["worst_second"] == ["m_b", "m_a", "m_c"]  # same column again: descending


# Appended to the committed page: the right edge of the columns that matter (and of the header row's first cells)
# in every table, measured by the browser at the window width it was given.
_BOX_SCRIPT = """<script>
(function () {
  var want = ['#', 'model', 'clean', 'worst case', 'paper PGD', 'flags'];
  var out = {width: window.innerWidth, scroll: document.documentElement.scrollWidth, tables: []};
  document.querySelectorAll('table.lb').forEach(function (table) {
    var right = {};
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      var label = h.textContent.replace(/ \\(n=[0-9]+\\)$/, '');
      if (want.indexOf(label) >= 0) { right[label] = h.getBoundingClientRect().right; }
    });
    out.tables.push(right);
  });
  var pre = document.createElement('pre');
  pre.id = 'box-result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def test_committed_page_shows_what_matters_without_scrolling_sideways(tmp_path):
    """At 1400 px (a laptop), every table of leaderboard/index.html shows clean, the worst case (our strongest
    attack), the paper's number and the flags without horizontal scrolling."""
    _need_browser("measures the page's columns at 1400 px")
    page = (Path(__file__).resolve().parents[1] / "leaderboard" / "index.html").read_text(encoding="utf-8")
    path = tmp_path / "index.html"
    path.write_text(page.replace("</body>", _BOX_SCRIPT + "</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--hide-scrollbars", "--window-size=1400,900", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
           path.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r'<pre id="box-result">(.*?)</pre>', out.stdout, re.DOTALL)
    assert found, f"no result in the page (exit {out.returncode}): {out.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["width"] == 1400 and len(result["tables"]) >= 5
    assert result["scroll"] > 1400  # the detail columns do scroll: the check below is not vacuous
    for right in result["tables"]:
        assert set(right) == {"#", "model", "clean", "worst case", "paper PGD", "flags"}, right
        assert max(right.values()) <= 1400, right


def test_write_leaderboard_and_errors(board, tmp_path):
    md, page = write_leaderboard(board)
    assert md == board / "README.md" and page == board / "index.html"
    assert "Do not edit by hand" in md.read_text() and "lwta_ibp_softmax" in page.read_text()
    with pytest.raises(ValueError, match="unknown sort key 'nope'"):
        write_leaderboard(board, sort="nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_leaderboard(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no leaderboard entries"):
        write_leaderboard(empty)
    assert list(empty.iterdir()) == []
    assert "No entries yet" in render_markdown([])
    broken = tmp_path / "broken" / "mnist" / "Linf"
    broken.mkdir(parents=True)
    (broken / "relu_softmax__paper.json").write_text("{}")
    with pytest.raises(ValueError, match=r"relu_softmax__paper\.json: leaderboard entry invalid"):
        write_leaderboard(tmp_path / "broken")


def test_leaderboard_does_not_overwrite_a_project_readme(tmp_path, capsys):
    """`lwta leaderboard --dir .` in a project: a directory without entries is refused, its files untouched."""
    from lwta_plugin.cli import main

    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    (project / "README.md").write_text("# my project\n")
    (project / "docs" / "notes__paper.json").write_text("{}")  # entry-like name, not an entry directory
    assert main(["leaderboard", "--dir", str(project)]) == 2
    assert "holds no leaderboard entries" in capsys.readouterr().err
    assert (project / "README.md").read_text() == "# my project\n" and not (project / "index.html").exists()


@pytest.mark.parametrize("name", ["README.md", "index.html"])
def test_leaderboard_never_replaces_a_file_it_did_not_write(board, tmp_path, name):
    import shutil

    copy = tmp_path / "board"
    shutil.copytree(board, copy)
    for generated in leaderboard.GENERATED_FILES:
        (copy / generated).unlink(missing_ok=True)
    mine = "# notes\n\n<!-- lwta-plugin:generated by hand? no: this line is too far down -->\n" \
        if name == "README.md" else "<html><body>mine</body></html>\n"
    (copy / name).write_text("\n" * 20 + mine if name == "README.md" else mine)
    with pytest.raises(leaderboard.NotGeneratedError, match=f"{name} exists and was not written by"):
        write_leaderboard(copy)
    assert (copy / name).read_text().endswith(mine)
    assert not any((copy / g).exists() for g in leaderboard.GENERATED_FILES if g != name)


def test_generated_files_are_recognised_and_replaced(board, tmp_path):
    """Fresh renders carry the mark; renders made before it (the committed files until they are re-rendered)
    are recognised by their title and "Generated by" comment."""
    import shutil

    copy = tmp_path / "board"
    shutil.copytree(board, copy)
    md, page = write_leaderboard(copy)
    for path in (md, page):
        head = path.read_text().splitlines()[:10]
        assert any(line.startswith(f"<!-- {leaderboard.GENERATED_MARK} by ") for line in head), path
        assert leaderboard.is_generated(path)
    legacy_md = "# lwta-plugin leaderboard\n\n<!-- Generated by `lwta leaderboard --sort clean` from the JSON " \
                "entries (lwta_plugin/leaderboard.py). Do not edit by hand. -->\n\nold table\n"
    legacy_html = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>lwta-plugin "
                   "leaderboard</title>\n<style>x</style></head><body>\n<!-- Generated by lwta leaderboard "
                   "(lwta_plugin/leaderboard.py). Do not edit by hand. -->\n<h1>old</h1>\n")
    md.write_text(legacy_md)
    page.write_text(legacy_html)
    assert leaderboard.is_generated(md) and leaderboard.is_generated(page)
    write_leaderboard(copy)
    assert md.read_text() != legacy_md and page.read_text() != legacy_html
    for committed in (ROOT / "leaderboard" / "README.md", ROOT / "leaderboard" / "index.html"):
        if committed.is_file():
            assert leaderboard.is_generated(committed), committed
    (copy / "README.md").write_text("# lwta-plugin leaderboard\n\nsomebody's notes\n")  # the title alone: no
    assert not leaderboard.is_generated(copy / "README.md")


def test_only_unbounded_attacks_above_the_threshold_count_as_failed():
    from lwta_plugin.entries import failed_unbounded_attacks

    entry = {"attacks": {"cw": {"mean": 0.4}, "bsa": {"mean": 0.0}},
             "indicators": [{"name": "unbounded_attack_failure", "fired": True, "threshold": 0.02,
                             "attacks": ["bsa", "cw"]}]}
    assert failed_unbounded_attacks(entry) == {"cw"}
    entry["indicators"][0]["fired"] = False
    assert failed_unbounded_attacks(entry) == set()


def test_footnote_says_deterministic_for_a_deterministic_model():
    import json
    from pathlib import Path

    from lwta_plugin.figures import finalize_entry

    base = Path(__file__).resolve().parent.parent / "leaderboard" / "mnist" / "Linf"
    for name, first in (("relu_softmax__paper.json", "Deterministic model"),
                        ("lwta_ibp_softmax__paper.json", "Random model")):
        entry = json.loads((base / name).read_text(encoding="utf-8"))
        entry["footnote"] = ""
        finalize_entry(entry)
        assert entry["footnote"].startswith(first), name


def test_to_dataframe_holds_every_result_of_every_entry(board):
    pd = pytest.importorskip("pandas")
    from lwta_plugin.leaderboard import DATAFRAME_COLUMNS, to_dataframe

    entries = entries_mod.load_entries(board)
    df = to_dataframe(board)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(DATAFRAME_COLUMNS)
    assert len(df) == sum(len(e["attacks"]) + 1 for e in entries)
    for e in entries:
        mine = df[(df.model == e["model"]) & (df.protocol == e["protocol"]["name"])].set_index("attack")
        for key, r in e["attacks"].items():
            assert mine.loc[key, "mean"] == r["mean"] and mine.loc[key, "n_examples"] == r["n_examples"]
        worst = e.get("worst_case_all_protocols") or e["worst_case"]
        assert mine.loc["worst case", "mean"] == worst["mean"]
        assert bool(mine.loc["clean", "unreliable"]) == e["unreliable"]


def test_to_dataframe_without_pandas_says_what_to_do(board, monkeypatch):
    import sys

    from lwta_plugin.leaderboard import to_dataframe

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ModuleNotFoundError, match=r"needs pandas \(pip install pandas\).*load_entries"):
        to_dataframe(board)


def test_unreliable_means_below_the_papers_number(entry):
    from lwta_plugin.figures import finalize_entry, is_unreliable

    e = copy.deepcopy(entry)
    e["reported"] = "93.50"
    e["worst_case"].update(mean=0.5, ci_low=0.4, ci_high=0.9349)
    assert is_unreliable(e)
    e["worst_case"]["ci_high"] = 0.94  # the interval reaches the paper's number: not shown to be lower
    assert not is_unreliable(e)
    e["worst_case"]["ci_high"] = 0.5
    e.pop("reported")
    assert not is_unreliable(e)  # nothing reported, nothing to contradict
    e["reported"], e["protocol"]["smoke"] = "93.50", True
    assert not is_unreliable(e)  # a smoke test is no robustness estimate
    e["protocol"]["smoke"] = False
    e["indicators"] = [dict(i, fired=True) for i in e["indicators"]]
    finalize_entry(e)
    assert e["unreliable"] and e["attack_failure"] == [i["name"] for i in e["indicators"]]


def test_refinalize_rederives_and_refuses_forged_counts(board, tmp_path):
    import shutil

    copy_dir = tmp_path / "board"
    shutil.copytree(board, copy_dir)
    path = copy_dir / "mnist" / "Linf" / "lwta_ibp_softmax__paper.json"
    good = path.read_text()
    old = json.loads(good)
    old.pop("attack_failure")  # an entry written before the field existed
    old["unreliable"] = not old["unreliable"]
    path.write_text(json.dumps(old))
    assert entries_mod.refinalize(copy_dir) == [path]
    assert path.read_text() == good and entries_mod.refinalize(copy_dir) == []
    forged = json.loads(good)
    forged["attacks"]["pgd"]["mean"] = 0.99
    path.write_text(json.dumps(forged))
    with pytest.raises(ValueError, match=r"lwta_ibp_softmax__paper\.json: field 'attacks/pgd/mean'"):
        entries_mod.refinalize(copy_dir)
    assert json.loads(path.read_text()) == forged  # nothing written


def test_headline_numbers_come_from_the_committed_entries():
    from lwta_plugin.headline import headline

    entries = entries_mod.load_entries(ROOT / "leaderboard")
    lines = headline(entries, "mnist")
    assert len(lines) == 3 and lines[0].startswith("**The paper claims**")
    literal = [100 * (e.get("worst_case_all_protocols") or e["worst_case"])["mean"] for e in entries
               if e["protocol"]["name"] == "paper-literal" and e["number_forward_passes"] > 1 and "reported" in e
               and not e["checkpoint"]["training"].get("fgsm_eps")]
    assert f"{min(literal):.1f}-{max(literal):.1f} % with the authors' own evaluation" in lines[1]
    readme = (ROOT / "leaderboard" / "README.md").read_text(encoding="utf-8")
    assert readme.split("\n\n")[2] == " ".join(lines)  # the first thing after the title and the generated mark
    assert headline([], "mnist") == []
