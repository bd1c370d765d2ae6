"""Issue 17: the unbiased worst case, early exit inside the attacks, and the cascade's configuration."""
from __future__ import annotations

import math
import random

import pytest
import torch
from _tiny_models import apgd_backend_available, quadrant_data, trained_cnn
from torch import nn

from lwta_plugin.attacks import EOTPGD, PGD, APGDRand
from lwta_plugin.attacks.base import ExitBackoff, confirmed_adversarial
from lwta_plugin.evaluation import EvaluationConfig
from lwta_plugin.protocols import (
    EARLY_EXIT,
    check_cascade,
    get_protocol,
    resolve,
    select_attacks,
)
from lwta_plugin.statistics import decode_counts, encode_counts, worst_case


def _results(k: int, n: int, p: float, passes: int, seed: int = 0, fresh: bool = True) -> dict:
    """``k`` attacks that all leave image i at the same true accuracy ``p``: counts ~ Binomial(passes, p)."""
    rng = random.Random(seed)

    def draw() -> str:
        return encode_counts([sum(rng.random() < p for _ in range(passes)) for _ in range(n)], passes)

    out = {}
    for j in range(k):
        r = {"kind": "clean" if j == 0 else "adversarial", "bounded": True, "n_examples": n,
             "per_example_correct": draw()}
        if fresh:
            r["per_example_fresh"] = draw()
        out[f"a{j}"] = r
    return out


def test_fresh_worst_case_is_unbiased_where_the_minimum_is_biased_low():
    """Known truth: every attack leaves every image at p = .5 (the attacks do nothing). The minimum over 8 attacks'
    noisy 5-pass counts has expectation .19 (the issue's example); selecting on those draws and scoring on fresh
    ones gives .5 (within its interval); the selection minimum is kept as a diagnostic."""
    w = worst_case(_results(8, 4000, 0.5, 5), passes=5)
    assert w["method"] == "fresh"
    assert w["ci_low"] <= 0.5 <= w["ci_high"] and abs(w["mean"] - 0.5) < 0.02
    expected_min = sum((1 - sum(math.comb(5, j) * 0.5**5 for j in range(c + 1))) ** 8
                       for c in range(5)) / 5  # E[min of 8 Binomial(5, .5)] / 5
    assert abs(expected_min - 0.19) < 0.01
    assert abs(w["selection"]["mean"] - expected_min) < 0.02
    assert sum(w["selected"].values()) == 4000
    legacy = worst_case(_results(8, 4000, 0.5, 5, fresh=False), passes=5)
    assert "method" not in legacy and legacy["mean"] < 0.25  # the old estimator: biased low


def test_worst_case_ties_go_to_the_strongest_attack_not_the_first():
    """A weak attack listed first (FGSM comes before the iterative attacks) ties with a strong one wherever both
    selection counts are 0; taking the first of the tied put the weak point, true accuracy .5, into the worst case
    (about .16 against the strong attack's .05: the quick start's smoke run showed it)."""
    rng = random.Random(1)
    n, passes = 4000, 2

    def counts(p: float) -> str:
        return encode_counts([sum(rng.random() < p for _ in range(passes)) for _ in range(n)], passes)

    results = {key: {"kind": kind, "bounded": True, "n_examples": n, "per_example_correct": counts(p),
                     "per_example_fresh": counts(p)}
               for key, kind, p in (("clean", "clean", 1.0), ("fgsm", "adversarial", 0.5),
                                    ("strong", "adversarial", 0.05))}
    w = worst_case(results, passes=passes)
    strong = sum(decode_counts(results["strong"]["per_example_fresh"])) / (passes * n)
    assert w["mean"] < strong + 0.025 and w["selected"]["strong"] > 0.9 * n


def test_worst_case_over_a_cover_takes_each_images_results():
    """With a cover (a cascade's images), each image has the results that reach it ('.' = not attacked)."""
    results = {"clean": {"kind": "clean", "bounded": True, "n_examples": 4, "per_example_correct": "2220",
                         "per_example_fresh": "2221"},
               "stage": {"kind": "adversarial", "bounded": True, "n_examples": 4, "per_example_correct": "01..",
                         "per_example_fresh": "12.."},
               "small": {"kind": "adversarial", "bounded": True, "n_examples": 1, "per_example_correct": "1",
                         "per_example_fresh": "2"}}
    w = worst_case(results, passes=2, cover=(0, 4))
    # image 0: stage (0) -> fresh 1; image 1: stage (1) beats clean (2) -> fresh 2; 2: clean -> 2; 3: clean -> 1
    assert decode_counts(w["per_example_correct"]) == [1, 2, 2, 1]
    assert decode_counts(w["selection"]["per_example_correct"]) == [0, 1, 2, 0]
    assert w["n_examples"] == 4 and w["selected"] == {"clean": 2, "stage": 2}
    with pytest.raises(ValueError, match="test image 2: no result covers it"):
        worst_case({"stage": results["stage"]}, passes=2, cover=(0, 4))


class CountingCNN(nn.Module):
    """The trained tiny CNN, counting the input rows it is called on (gradient and prediction passes alike)."""

    def __init__(self):
        super().__init__()
        self.net = trained_cnn()
        self.rows = 0
        self.stochastic = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.net(x)


def test_early_exit_stops_attacking_confirmed_images_and_returns_adversarial_points():
    x, y = quadrant_data(32, seed=3)
    model = CountingCNN()
    full = PGD(model, eps=0.5, alpha=0.05, steps=40)
    torch.manual_seed(0)
    xa_full = full(x, y)
    rows_full, model.rows = model.rows, 0
    quick = PGD(model, eps=0.5, alpha=0.05, steps=40).set_early_exit(3, samples=1)
    torch.manual_seed(0)
    xa = quick(x, y)
    assert quick.hparams["early_exit"] == 3 and "early_exit" not in full.hparams
    assert 0 < quick.last_info["exited"] <= 32
    assert model.rows < rows_full / 2  # broken images stopped costing gradients
    with torch.no_grad():
        wrong_quick = model(xa).argmax(1) != y
        wrong_full = model(xa_full).argmax(1) != y
    assert wrong_quick.sum() >= wrong_full.sum() - 1  # as strong as the full attack (up to one image)
    assert (xa - x).abs().max() <= 0.5 + 1e-6
    assert bool(quick.last_info["returned_adversarial"][wrong_quick].all())


class CoinNet(nn.Module):
    """A random classifier with a known truth: each draw puts (almost) all probability on the true class with
    probability ``q[i]`` for image ``i`` (read off the image's first pixel), else on class 1 - y."""

    stochastic = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.flatten(1)[:, 0]
        right = torch.rand_like(q) < q
        y = x.flatten(1)[:, 1].long()
        label = torch.where(right, y, 1 - y)
        return 20.0 * nn.functional.one_hot(label, 2).float()


def _coin_points(n: int, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 2
    x = torch.zeros(n, 1, 1, 2)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = q, y.float()
    return x, y


def test_the_protocols_exit_rarely_lets_a_point_go_that_the_scoring_still_often_gets_right():
    """The early exit decides how strong the returned points are: a point that passes it is not attacked further.
    Known truth: one scoring prediction (the mean of S = 5 draws) of a CoinNet point with q = .19 per draw is
    right with probability P(Bin(5, .19) >= 3) = .05. The first exit rule (10 predictions of 5 draws all wrong)
    let such a point go with probability .95 ** 10 = .60, and on the shipped model the cascade's points kept 2 %
    accuracy where pyautoattack's kept .3 %. The protocol's rule (single draws, all wrong) lets it go far less
    often, and still lets a point go that no draw gets right."""
    model = CoinNet()
    p5 = sum(math.comb(5, j) * 0.19**j * 0.81 ** (5 - j) for j in range(3, 6))
    assert abs(p5 - 0.05) < 0.005
    torch.manual_seed(0)
    x, y = _coin_points(4000, 0.19)
    old = confirmed_adversarial(model, x, y, 10, 5).float().mean().item()
    assert abs(old - 0.95 ** 10) < 0.03
    rule = confirmed_adversarial(model, x, y, EARLY_EXIT["early_exit"], EARLY_EXIT["confirm_samples"])
    assert rule.float().mean().item() < 0.02
    x0, y0 = _coin_points(64, 0.0)
    assert bool(confirmed_adversarial(model, x0, y0, EARLY_EXIT["early_exit"], EARLY_EXIT["confirm_samples"]).all())
    x1, y1 = _coin_points(64, 1.0)
    assert not confirmed_adversarial(model, x1, y1, EARLY_EXIT["early_exit"], EARLY_EXIT["confirm_samples"]).any()
    # targeted: the target is the class the draws land on
    assert bool(confirmed_adversarial(model, x1, y1, 20, 1, targeted=True).all())


def test_batched_single_draw_confirmation_counts_every_draw():
    """With single-draw predictions the confirmation runs in batched passes; each of the ``passes`` draws counts:
    a point wrong with probability w per draw passes with probability w ** passes."""
    model = CoinNet()
    torch.manual_seed(1)
    x, y = _coin_points(20000, 0.1)
    for passes in (1, 3, 7, 12):
        rate = confirmed_adversarial(model, x, y, passes, 1).float().mean().item()
        assert abs(rate - 0.9 ** passes) < 0.015, (passes, rate)


class CountingCoinNet(CoinNet):
    """A CoinNet the attacks can differentiate (its gradient is zero), counting the rows it is called on."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return super().forward(x) + 0.0 * x.flatten(1)[:, :1]


def test_a_failed_exit_check_waits_before_the_next_so_boundary_points_do_not_cost_a_check_every_step():
    """Known truth: a CoinNet point with q = .1 is misclassified by 90 % of the steps' draws, and a check of 50
    single draws fails (some draw is right) after about ten draws. Checked at every step, such points cost about
    ten extra forward rows per step, more than the attack's own pass; with the backoff (waits of 1, 2, 4, ...
    steps) a 100-step attack checks each at most 7 times."""
    n, steps = 64, 100
    x, y = _coin_points(n, 0.1)
    model = CountingCoinNet()
    torch.manual_seed(0)
    PGD(model, eps=0.3, steps=steps, random_start=False).set_early_exit(50, samples=1)(x, y)
    assert model.rows < 3 * n * steps  # 100 gradient passes of every image, the last prediction, the checks
    backoff, active = ExitBackoff(n, "cpu"), torch.arange(n)
    checked = torch.zeros(n)
    for step in range(steps):
        checked[active] += (backoff.next_try[active] <= step).float()
        active = active[~backoff.confirm(model, x[active], y[active], active, step, 50, 1)]  # as the attack does
    assert int(checked.max()) <= 7  # at steps 0, 1, 3, 7, 15, 31, 63
    assert int(checked[active].min()) == 7


def test_early_exit_is_refused_where_the_steps_do_not_judge_the_model():
    from lwta_plugin.attacks import build_attack

    with pytest.raises(ValueError, match="transfer does not support early_exit"):
        build_attack("transfer", trained_cnn(), eps=0.3, early_exit=3)
    with pytest.raises(ValueError, match="early_exit must be an integer >= 0"):
        EOTPGD(trained_cnn(), eps=0.3).set_early_exit(-1)
    assert build_attack("eot_pgd", trained_cnn(), eps=0.3, early_exit=4).hparams["early_exit"] == 4


@pytest.mark.skipif(not apgd_backend_available(), reason="needs pyautoattack or torchattacks")
def test_apgd_early_exit_runs_dlr_only_on_images_ce_did_not_break():
    x, y = quadrant_data(16, seed=4)
    model = CountingCNN()
    torch.manual_seed(0)
    APGDRand(model, eps=0.5, steps=10, eot_iter=1)(x, y)
    rows_full, model.rows = model.rows, 0
    torch.manual_seed(0)
    quick = APGDRand(model, eps=0.5, steps=10, eot_iter=1).set_early_exit(2, samples=1)
    quick(x, y)
    assert quick.last_info["exited"] > 0 and model.rows < rows_full


def test_adaptive_protocol_has_cascade_fresh_scoring_and_early_exit_and_they_switch_off():
    p = get_protocol("adaptive")
    check_cascade(p)
    assert p.cascade.stages[0] == "clean" and p.scoring.fresh and p.early_exit
    assert p.attack("eot_pgd").params["early_exit"] == EARLY_EXIT["early_exit"]
    assert "early_exit" not in p.attack("transfer").params
    off = resolve(p, n_examples=50, cascade=False, early_exit=False)
    assert off.cascade is None and not off.early_exit
    assert resolve(p, n_examples=50).cascade.n_examples == 50
    # the selected attacks keep their cascade (clean first); without clean there is none
    assert select_attacks(p, ["clean", "pgd", "eot_pgd"]).cascade.stages == ("clean", "pgd", "eot_pgd")
    assert select_attacks(p, ["pgd", "eot_pgd"]).cascade is None
    # recorded in the protocol (hash) and in the reproduction command
    assert "cascade" in p.to_dict() and p.to_dict()["scoring"]["fresh"] is True
    assert "cascade" not in get_protocol("paper").to_dict() and "fresh" not in get_protocol("paper").to_dict()["scoring"]
    cfg = EvaluationConfig("lwta_ibp_softmax", protocols="adaptive", cascade=False, early_exit=False)
    assert "--no-cascade" in cfg.command("lwta_ibp_softmax", "adaptive")
    assert "--no-early-exit" in cfg.command("lwta_ibp_softmax", "adaptive")
    assert "--no-cascade" not in EvaluationConfig("lwta_ibp_softmax").command("lwta_ibp_softmax", "paper")
    with pytest.raises(ValueError, match="cascade must be true or false"):
        EvaluationConfig("lwta_ibp_softmax", cascade="no")


class SlopedCoinNet(nn.Module):
    """A CoinNet whose per-draw accuracy is the image's first pixel, with a (tiny) gradient that always points the
    FGSM step towards lower accuracy, and a confidence that varies from draw to draw."""

    stochastic = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        q, y = flat[:, 0], flat[:, 1].round().long()
        label = torch.where(torch.rand_like(q) < q, y, 1 - y)
        scale = 5.0 * (0.5 + torch.rand_like(q))[:, None]
        return scale * nn.functional.one_hot(label, 2).float() + 0.01 * q[:, None] * nn.functional.one_hot(y, 2)


def test_fgsm_judges_its_two_points_by_an_averaged_prediction_not_one_draw():
    """Known truth: the clean point is right in 70 % of draws, FGSM's step (eps .7) in none. Judged by one draw
    each, the clean point looks more adversarial than the step whenever its draw is wrong (30 %) and more confident
    (half of those): 15 % of the images come back at the clean point, which the scoring gets right 70 % of the time
    (the silent successes of the shipped model's FGSM). Judged by 10-draw averages the step comes back for every
    image."""
    from lwta_plugin.attacks import FGSM

    model = SlopedCoinNet()
    x, y = _coin_points(2000, 0.7)
    torch.manual_seed(0)
    one = FGSM(model, eps=0.7, select_samples=1)
    stepped_one = (one(x, y)[:, 0, 0, 0] < 0.35).float().mean().item()
    assert abs(stepped_one - 0.85) < 0.04
    torch.manual_seed(0)
    ten = FGSM(model, eps=0.7)
    xa = ten(x, y)
    assert ten.hparams["select_samples"] == 10
    assert (xa[:, 0, 0, 0] < 0.35).float().mean().item() > 0.99
    assert bool(ten.last_info["path_adversarial"].all()) and bool(ten.last_info["returned_adversarial"].all())


def test_silent_success_counts_points_right_in_every_prediction_not_boundary_points():
    """Known truth: the clean point is right in 95 % of draws, FGSM's step (eps .45) in 50 %. FGSM returns the
    step for every image and says it met an adversarial point for the half whose 10-draw judgment came out wrong;
    nothing is lost, yet the scoring (10 single-draw predictions) gets such a point right in most predictions for
    P(Bin(10, .5) >= 6) = 38 % of them: the old rule (most predictions right) fired on ~19 % of the images. Right
    in all 10 happens for 0.1 % of them, and the indicator stays quiet. An attack that returns the clean points
    instead (right in all 10 predictions for .95 ** 10 = 60 % of the images) still fires."""
    from lwta_plugin.attacks import FGSM
    from lwta_plugin.attacks.indicators import TOLERANCE, check_silent_success

    model = SlopedCoinNet()
    x, y = _coin_points(2000, 0.95)

    class Forgetful(FGSM):
        def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            super().perturb(x, y)
            return x.clone()

    torch.manual_seed(0)
    honest = FGSM(model, eps=0.45)
    ind = check_silent_success(honest, x, y, model, passes=10, threshold=TOLERANCE)  # the evaluation's threshold
    path = honest.last_info["path_adversarial"]
    assert 0.4 < path.float().mean().item() < 0.6
    assert not ind["fired"] and ind["value"] < 0.005
    torch.manual_seed(0)
    lost = check_silent_success(Forgetful(model, eps=0.45), x, y, model, passes=10, threshold=TOLERANCE)
    assert lost["fired"] and 0.2 < lost["value"] < 0.4
