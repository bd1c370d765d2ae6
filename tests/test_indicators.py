"""Attack-failure indicators: each fires on a constructed failure (masked gradients, a broken attack, an attack
that returns its input, a budget that is too small) and stays quiet on a healthy evaluation of a trained CNN."""
import pytest
import torch
from _tiny_models import Quantized, quadrant_data, trained_cnn

from lwta_plugin.attacks import build_attack
from lwta_plugin.attacks.base import Attack
from lwta_plugin.attacks.indicators import (
    ConvergenceSettings,
    black_box_attacks,
    black_box_stronger,
    budget_convergence,
    budget_keys,
    check_convergence,
    check_silent_success,
    correct_fraction,
    eps_monotonicity,
    from_results,
    one_step_attacks,
    one_step_stronger,
    paired_gap,
    silent_success,
    unbounded_attack_failure,
    white_box_iterative_attacks,
)
from lwta_plugin.entries import load_schema
from lwta_plugin.protocols import get_protocol
from lwta_plugin.statistics import encode_counts

EPS = 0.3
PGD = {"eps": EPS, "alpha": EPS / 8, "steps": 20}
CW = {"c": 1.0, "lr": 0.05, "binary_search_steps": 3, "steps": 40}
BROKEN_PGD = {"eps": EPS, "alpha": 0.02, "steps": 10, "random_start": False}  # moves at most 0.2 < eps: too few steps


@pytest.fixture(scope="module")
def cnn():
    return trained_cnn()


@pytest.fixture(scope="module")
def other_cnn():
    return trained_cnn(seed=1)


@pytest.fixture(scope="module")
def data():
    return quadrant_data(64, seed=1)


def _result(model, x, y, x_adv, attack: str, hparams: dict, kind="adversarial", bounded=True) -> dict:
    """A result record as the evaluation runner assembles it (one deterministic prediction per image)."""
    frac = correct_fraction(model, x_adv, y)
    counts = frac.round().long().tolist()
    return {"attack": attack, "kind": kind, "bounded": bounded, "mean": float(frac.mean()), "n_examples": len(x),
            "passes": 1, "per_example_correct": encode_counts(counts, 1), "hyperparameters": dict(hparams)}


def _run(model, x, y, specs: dict) -> dict:
    results = {"clean": _result(model, x, y, x, "clean", {}, kind="clean")}
    for key, (name, params) in specs.items():
        torch.manual_seed(0)
        attack = build_attack(name, model, **params)
        results[key] = _result(model, x, y, attack(x, y), name, attack.hparams, bounded=attack.bounded)
    return results


def _schema_valid(indicators):
    jsonschema = pytest.importorskip("jsonschema")
    schema = load_schema()
    validator = jsonschema.Draft202012Validator({**schema["$defs"]["indicator"], "$defs": schema["$defs"]})
    for ind in indicators:
        validator.validate(ind)


def _by_name(indicators):
    return {i["name"]: i for i in indicators}


def test_quiet_on_a_healthy_evaluation(cnn, other_cnn, data):
    x, y = data
    results = _run(cnn, x, y, {
        "fgsm": ("fgsm", {"eps": EPS}),
        "pgd": ("pgd", PGD),
        "pgd_eps35": ("pgd", dict(PGD, eps=0.35, alpha=0.35 / 8)),
        "pgd_eps40": ("pgd", dict(PGD, eps=0.4, alpha=0.4 / 8)),
        "pgd_long": ("pgd", dict(PGD, steps=40)),
        "noise": ("noise", {"eps": EPS}),
        "transfer": ("transfer", dict(PGD, surrogate=other_cnn)),
        "cw": ("cw", CW),
    })
    assert results["pgd"]["mean"] < 0.7 and results["pgd_eps40"]["mean"] < results["pgd"]["mean"]
    indicators = from_results(results)
    _schema_valid(indicators)
    assert set(_by_name(indicators)) == {"unbounded_attack_failure", "accuracy_increases_with_eps",
                                         "black_box_stronger_than_white_box", "one_step_stronger_than_iterative",
                                         "attack_not_converged"}
    assert not any(i["fired"] for i in indicators), [i["detail"] for i in indicators if i["fired"]]


def test_masked_gradients_fire_unbounded_and_black_box_indicators(cnn, data):
    """Rounding the input (zero gradient everywhere) stops CW and PGD; transfer from the plain CNN still works."""
    x, y = data
    masked = Quantized(cnn)
    results = _run(masked, x, y, {
        "pgd": ("pgd", PGD),
        "fgsm": ("fgsm", {"eps": EPS}),
        "transfer": ("transfer", dict(PGD, surrogate=cnn)),
        "cw": ("cw", CW),
    })
    found = _by_name(from_results(results))
    assert found["unbounded_attack_failure"]["fired"] and "cw" in found["unbounded_attack_failure"]["detail"]
    assert found["black_box_stronger_than_white_box"]["fired"]
    assert "transfer" in found["black_box_stronger_than_white_box"]["detail"]
    assert not found["one_step_stronger_than_iterative"]["fired"]  # both equally stuck


def test_one_step_stronger_fires_for_a_broken_iterative_attack(cnn, data):
    x, y = data
    results = _run(cnn, x, y, {"fgsm": ("fgsm", {"eps": EPS}), "pgd": ("pgd", BROKEN_PGD)})
    ind = one_step_stronger(results)
    assert ind["fired"] and ind["value"] > 0.2 and ind["attacks"] == ["fgsm", "pgd"]


class ReturnsInput(Attack):
    name = "identity"

    def perturb(self, x, y):
        return x


def test_eps_monotonicity_fires_for_an_attack_that_returns_its_input(cnn, data):
    x, y = data
    results = _run(cnn, x, y, {"pgd": ("pgd", PGD)})
    broken = ReturnsInput(cnn)
    results["pgd_eps40"] = _result(cnn, x, y, broken(x, y), "pgd", dict(results["pgd"]["hyperparameters"], eps=0.4))
    ind = eps_monotonicity(results)
    assert ind["fired"] and "pgd_eps40" in ind["detail"] and ind["value"] > 0.3
    # the same results without the broken one are monotone
    del results["pgd_eps40"]
    assert not eps_monotonicity(results)["fired"]


def test_budget_indicators_fire_when_more_steps_help(cnn, data):
    x, y = data
    results = _run(cnn, x, y, {"pgd": ("pgd", BROKEN_PGD), "pgd_2x": ("pgd", dict(BROKEN_PGD, steps=20))})
    assert budget_convergence(results)["fired"]
    ind = check_convergence(cnn, x, y, "pgd", BROKEN_PGD)
    assert ind["fired"] and "steps 10 -> 20" in ind["detail"]
    quiet = check_convergence(cnn, x, y, "pgd", dict(PGD, alpha=EPS / 4))
    assert not quiet["fired"], quiet["detail"]
    _schema_valid([ind, quiet])
    tripled = check_convergence(cnn, x, y, "pgd", BROKEN_PGD, ConvergenceSettings(factor=3, n_images=32))
    assert "steps 10 -> 30" in tripled["detail"] and "on 32 images" in tripled["detail"]


def test_attack_kinds_come_from_the_attack_classes():
    """The classification the indicators use, read from the attack classes, is the one they have always used
    (``torchattacks_pgd``, the authors' PGD, came later: it is an iterative white-box eps-ball attack)."""
    assert set(white_box_iterative_attacks()) == {"pgd", "eot_pgd", "eot_pgd_margin", "apgd_rand", "bpda",
                                                  "torchattacks_pgd"}
    assert set(one_step_attacks()) == {"fgsm"}
    assert set(black_box_attacks()) == {"noise", "transfer"}
    assert set(budget_keys()) == {"steps", "eot_samples", "eot_iter", "n_restarts", "binary_search_steps", "draws"}
    assert budget_keys("apgd_rand") == ("steps", "eot_iter", "n_restarts") and budget_keys("noise") == ("draws",)
    assert budget_keys("not_registered") == budget_keys()


def test_silent_success(cnn, data):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = data

    class Forgetful(torchattacks.PGD):
        """Runs PGD and then returns the clean images: every success on the path is lost."""

        def forward(self, images, labels):
            super().forward(images, labels)
            return images

    torch.manual_seed(0)
    ind = check_silent_success(Forgetful(cnn, eps=EPS, alpha=EPS / 8, steps=20), x, y)
    assert ind["fired"] and ind["value"] > 0.3
    torch.manual_seed(0)
    assert not check_silent_success(build_attack("pgd", cnn, **PGD), x, y)["fired"]
    assert silent_success(torch.tensor([True, True, False]), torch.tensor([1.0, 0.0, 1.0]))["value"] == \
        pytest.approx(1 / 3)
    _schema_valid([ind])


def _synthetic(attack, counts, passes=10, bounded=True, eps=EPS, kind="adversarial", **hp):
    return {"attack": attack, "kind": kind, "bounded": bounded, "n_examples": len(counts), "passes": passes,
            "mean": sum(counts) / (passes * len(counts)), "per_example_correct": encode_counts(counts, passes),
            "hyperparameters": {"eps": eps, **hp}}


def test_random_models_need_a_significant_gap():
    """With noisy per-image rates, a gap within the paired standard error does not fire; a clear one does."""
    g = torch.Generator().manual_seed(0)
    base = torch.randint(3, 8, (400,), generator=g)
    jitter = torch.randint(-2, 3, (400,), generator=g)
    strong = _synthetic("eot_pgd", base.tolist())
    slightly = _synthetic("noise", (base + jitter - (torch.rand(400, generator=g) < 0.1).long()).clamp(0, 10).tolist())
    clearly = _synthetic("noise", (base - 3).clamp(0, 10).tolist())
    gap, se = paired_gap(strong, slightly)
    assert 0 < gap < 3 * se
    assert not black_box_stronger({"eot_pgd": strong, "noise": slightly})["fired"]
    assert black_box_stronger({"eot_pgd": strong, "noise": clearly})["fired"]
    # a different eps is not comparable
    assert black_box_stronger({"eot_pgd": strong, "noise": dict(clearly, hyperparameters={"eps": 0.5})}) is None


def test_unbounded_threshold_and_applicability():
    ok = _synthetic("cw", [0] * 99 + [1], passes=1, bounded=False, eps=None)
    bad = _synthetic("cw", [1] * 80 + [0] * 20, passes=1, bounded=False, eps=None)
    assert not unbounded_attack_failure({"cw": ok})["fired"]
    assert unbounded_attack_failure({"cw": bad})["value"] == pytest.approx(0.8)
    assert unbounded_attack_failure({"pgd": _synthetic("pgd", [1, 0])}) is None
    assert from_results({}) == []


def test_compute_indicators_in_the_evaluation_runner(cnn, data):
    from lwta_plugin.evaluation import compute_indicators

    x, y = data
    results = _run(cnn, x, y, {"fgsm": ("fgsm", {"eps": EPS}), "pgd": ("pgd", BROKEN_PGD), "cw": ("cw", CW)})
    protocol = get_protocol("adaptive")
    indicators = compute_indicators(results, protocol)
    _schema_valid(indicators)
    assert indicators == from_results(results, passes=protocol.scoring.passes)
    assert _by_name(indicators)["one_step_stronger_than_iterative"]["fired"]
