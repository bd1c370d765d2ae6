"""experiments/autoattack-standard/run.py: its per-image comparison with the full-scale cascade, on a stub peer."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "autoattack-standard" / "run.py"


def _script():
    spec = importlib.util.spec_from_file_location("autoattack_standard_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Unchanged:
    """A peer that returns the clean images: its robust accuracy is the clean accuracy."""

    def __init__(self, *args, **kwargs):
        pass

    def run_standard_evaluation(self, x, y, batch_size):
        return x.clone(), y


def test_comparison_with_the_cascade_counts_each_side(monkeypatch):
    pyautoattack = pytest.importorskip("pyautoattack")
    monkeypatch.setattr(pyautoattack, "AutoAttack", _Unchanged)
    run = _script()
    result = run.run("lwtamax_tanh16", seed=0)
    worst = json.loads((run.FULL_SCALE / "lwtamax_tanh16__adaptive.json").read_text())["worst_case"]
    ours = [c != "0" for c in worst["per_example_correct"]]
    aa = [c == "a" for c in result["autoattack_standard"]["correct"]]
    assert result["n_examples"] == len(aa) == len(ours) == 1000
    assert sum(aa) > 950  # the clean images: the clean accuracy
    assert result["only_autoattack_breaks"] == sum(o and not a for a, o in zip(aa, ours))
    assert result["only_cascade_breaks"] == sum(a and not o for a, o in zip(aa, ours)) > 900
    assert result["both_together"]["robust"] == sum(a and o for a, o in zip(aa, ours)) / 1000


def test_random_models_are_refused():
    pytest.importorskip("pyautoattack")
    with pytest.raises(SystemExit, match="random model"):
        _script().run("lwta_ibp_softmax", seed=0)
