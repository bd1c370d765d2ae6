"""Diagnostic plots: files, data, winner probabilities (paper Fig. 2), PGD logit trajectories (Fig. 3)."""
from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("matplotlib")

from lwta_plugin import plots
from lwta_plugin.attacks import PGD
from lwta_plugin.layers import StochasticConv2d, StochasticLinear
from lwta_plugin.models import create_model

torch.set_num_threads(1)
PNG = b"\x89PNG\r\n\x1a\n"
TINY = {"settings": plots.PlotSettings(n_images=6, steps=1, passes=1, eot_values=(1, 2), trajectory_steps=3,
                                       winner_samples=2), "progress": False}


def _model(name: str = "lwta_ibp_softmax", seed: int = 0):
    torch.manual_seed(seed)
    return create_model(name, "mnist", samples=2).eval()


def _data(n: int = 6):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 1, 28, 28, generator=g), torch.tensor([0, 1, 2, 0, 1, 2][:n])


def test_make_plots_writes_every_plot_and_its_data(tmp_path):
    model = _model()
    x, y = _data()
    paths = plots.make_plots(model, x, y, "mnist", tmp_path, "lwta_ibp_softmax", seed=0, **TINY)
    names = [p.name for p in paths]
    assert names == [f"lwta_ibp_softmax__{k}" for k in ("acc_vs_eps.png", "acc_vs_eot.png", "winners.png",
                                                         "logits_pgd.png", "plots.json")]
    for p in paths[:-1]:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 1000
    data = json.loads(paths[-1].read_text())
    assert data["format"] == plots.PLOTS_FORMAT and data["n_images"] == 6 and data["eps"] == 0.3
    eps = data["acc_vs_eps"]
    assert eps["eps"][0] == 0 and eps["eps"][-1] == pytest.approx(0.45) and len(eps["accuracy"]) == len(eps["eps"])
    assert all(0 <= a <= 1 for a in eps["accuracy"] + data["acc_vs_eot"]["accuracy"])
    assert data["acc_vs_eot"]["eot"] == [1, 2]
    w = data["winners"]
    assert w["layer"] == "body.8" and w["U"] == 2 and w["activation"] == "lwta"  # dense 128 -> 64, LWTA
    benign = w["benign"]
    assert len(benign) == 10 and len(benign[0]) == 64
    assert benign[5] == [None] * 64  # no image of class 5
    for row in benign[:3] + w["pgd"][:3]:
        assert all(abs(row[i] + row[i + 1] - 1) < 1e-4 for i in range(0, 64, 2))  # a block's probabilities
    traj = data["logits_pgd"]
    assert traj["label"] == 0 and len(traj["raw_logits"]) == 4 and len(traj["raw_logits"][0]) == 10
    assert not model.training


def test_plots_are_reproducible(tmp_path):
    x, y = _data()
    a = plots.make_plots(_model(), x, y, "mnist", tmp_path / "a", "m", seed=5, **TINY)[-1].read_bytes()
    b = plots.make_plots(_model(), x, y, "mnist", tmp_path / "b", "m", seed=5, **TINY)[-1].read_bytes()
    assert a == b


def test_relu_network_has_no_winner_plot(tmp_path):
    x, y = _data()
    paths = plots.make_plots(_model("relu_softmax"), x, y, "mnist", tmp_path, "relu_softmax", **TINY)
    assert [p.name for p in paths] == ["relu_softmax__acc_vs_eps.png", "relu_softmax__acc_vs_eot.png",
                                       "relu_softmax__logits_pgd.png", "relu_softmax__plots.json"]
    assert json.loads(paths[-1].read_text())["winners"] is None


def test_winner_probabilities_of_conv_and_deterministic_layers():
    x, y = _data()
    model = _model("lwta_ibp_softmax_u4")
    conv = next(m for _, m in plots.lwta_layers(model) if isinstance(m, StochasticConv2d))
    p = plots.winner_probabilities(model, x, y, conv, samples=3)
    assert p.shape == (10, 64) and torch.isnan(p[3:]).all()
    assert torch.allclose(p[:3].view(3, 16, 4).sum(-1), torch.ones(3, 16), atol=1e-5)
    det = _model("lwtamax_softmax")
    _, layer = plots.pick_layer(det)
    assert isinstance(layer, StochasticLinear) and layer.activation == "lwtamax"
    p = plots.winner_probabilities(det, x, y, layer, samples=1)
    assert torch.all((p[:3] >= 0) & (p[:3] <= 1))
    assert torch.allclose(p[:3].view(3, -1, 2).sum(-1), torch.ones(3, p.shape[1] // 2))


def test_capture_is_removed_even_after_an_error():
    model = _model()
    _, layer = plots.pick_layer(model)
    with pytest.raises(RuntimeError, match="boom"), plots.capture_winners(layer) as store:
        model.forward_samples(_data()[0], 1)
        assert len(store) == 1
        raise RuntimeError("boom")
    assert "_activate" not in layer.__dict__


def test_pgd_stays_in_the_ball_and_records_the_trajectory():
    model = _model()
    x, y = _data(2)
    record: list[torch.Tensor] = []
    xa = plots.pgd(model, x, y, 0.1, steps=3, eot=2, on_step=plots.raw_logits_recorder(model, record))
    assert (xa - x).abs().max() <= 0.1 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    assert len(record) == 4 and record[0].shape == (2, 10)
    assert torch.equal(plots.pgd(model, x, y, 0.0, steps=3), x)


def test_pgd_is_the_package_attack():
    """Without a recorder, the plots' PGD is exactly :class:`lwta_plugin.attacks.PGD` with EOT samples."""
    model = _model()
    x, y = _data(3)
    torch.manual_seed(1)
    ours = plots.pgd(model, x, y, 0.2, steps=2, eot=3)
    torch.manual_seed(1)
    assert torch.equal(ours, PGD(model, eps=0.2, alpha=0.25, steps=2, eot_samples=3)(x, y))


def test_bad_arguments():
    x, y = _data()
    with pytest.raises(ValueError, match="n_images must be >= 1"):
        plots.PlotSettings(n_images=0)
    with pytest.raises(ValueError, match="eot_values"):
        plots.PlotSettings(eot_values=(0, 1))
    assert plots.PlotSettings(eot_values=[1, 2]).eot_values == (1, 2)
    with pytest.raises(ValueError, match="no eps for data set"):
        plots.make_plots(_model(), x, y, "svhn", "unused", "m", **TINY)


def test_nested_turns_nan_into_none():
    assert plots._nested(torch.tensor([[1.0, math.nan], [0.1234567, 2.0]])) == [[1.0, None], [0.123457, 2.0]]


def test_curves_carry_intervals_and_the_baseline_is_overlaid(tmp_path):
    model, base = _model(), _model("relu_softmax", seed=1)
    x, y = _data()
    paths = plots.make_plots(model, x, y, "mnist", tmp_path, "lwta_ibp_softmax", baseline=("relu_softmax", base),
                             **TINY)
    data = json.loads(paths[-1].read_text())
    for curve in (data["acc_vs_eps"], data["acc_vs_eot"], data["baseline"]["acc_vs_eps"],
                  data["baseline"]["acc_vs_eot"]):
        assert len(curve["ci_low"]) == len(curve["accuracy"]) == len(curve["ci_high"])
        assert all(lo <= a <= hi for lo, a, hi in zip(curve["ci_low"], curve["accuracy"], curve["ci_high"]))
        assert any(hi > lo for lo, hi in zip(curve["ci_low"], curve["ci_high"]))  # 6 images: real width
    assert data["baseline"]["model"] == "relu_softmax"
    assert data["baseline"]["acc_vs_eps"]["eps"] == data["acc_vs_eps"]["eps"]
    assert data["winners"]["layer_description"] == "dense LWTA layer 2 of 2, 64 units in blocks of U = 2 (body.8)"


def test_eps_grid_is_refined_where_the_curve_falls():
    pts = [{"mean": m} for m in (1.0, 0.95, 0.2, 0.1)]
    assert plots.refine_eps([0.0, 0.1, 0.2, 0.3], pts, extra=1) == pytest.approx(0.15)
    assert plots.refine_eps([0.0, 0.1, 0.2, 0.3], pts, extra=0) is None
    flat = [{"mean": m} for m in (1.0, 0.95, 0.9, 0.85)]
    assert plots.refine_eps([0.0, 0.1, 0.2, 0.3], flat, extra=3) is None


def test_refined_points_land_in_the_steep_part(monkeypatch):
    """A model whose accuracy is a step at eps = 0.12: refinement adds points between 0.075 and 0.15."""
    monkeypatch.setattr(plots, "pgd", lambda model, x, y, eps, steps, eot=1, on_step=None: torch.full_like(x, eps))
    monkeypatch.setattr(plots, "accuracy_point", lambda model, x_adv, y, passes: {
        "mean": 1.0 if x_adv.flatten()[0] < 0.12 else 0.0, "ci_low": 0.0, "ci_high": 1.0})
    eps, pts = plots.accuracy_vs_eps(None, torch.zeros(2, 1, 2, 2), torch.zeros(2), [0, 0.075, 0.15, 0.3], 1, 1,
                                     refine=3)
    extra = sorted(set(eps) - {0, 0.075, 0.15, 0.3})
    assert len(extra) == 3 and all(0.075 < e < 0.15 for e in extra)
    assert eps == sorted(eps) and len(pts) == len(eps)


def test_layer_names_a_person_reads():
    ens = create_model("lwta_ibp_logisticens10", "mnist")
    name, _ = plots.pick_layer(ens)
    assert plots.describe_layer(ens, name) == ("dense LWTA layer 2 of 3 of output head 10 of 10, 8 units in blocks "
                                               f"of U = 2 ({name})")
    assert plots.describe_layer(_model(), "body.0").startswith("conv LWTA layer 1 of 6, 64 channels")
    assert plots.relu_baseline_name(_model("relu_softmax"), "mnist") is None  # a ReLU model has no ReLU baseline
    assert plots.relu_baseline_name(_model(), "mnist") == "relu_softmax"  # shipped
