"""Fuzz (hypothesis) over layer inputs and model configs: no crash other than the documented errors."""
import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lwta_plugin.layers import ACTIVATIONS, Sampling, StochasticConv2d, StochasticLinear, set_sampling
from lwta_plugin.models import CODES, create_model, parse_name

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
winner_modes = st.sampled_from(["sample", "concrete", "argmax", "expected"])
z_modes = st.sampled_from(["sample", "concrete", "expected", "ones"])
finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@FAST
@given(U=st.integers(1, 5), K=st.integers(1, 6), din=st.integers(1, 9), batch=st.integers(1, 4), n=st.integers(1, 3),
       act=st.sampled_from(ACTIVATIONS), ibp=st.booleans(), winner=winner_modes, zmode=z_modes,
       train=st.booleans(), scale=st.floats(1e-3, 1e3), st_=st.booleans())
def test_linear_layer_any_config(U, K, din, batch, n, act, ibp, winner, zmode, train, scale, st_):
    layer = StochasticLinear(din, K * U, U=U, activation=act, ibp=ibp)
    layer.train(train)
    set_sampling(layer, Sampling(winner=winner, z=zmode, straight_through=st_))
    x = (torch.randn(n * batch, din) * scale).requires_grad_(True)
    out = layer(x, n)
    assert out.shape == (n * batch, K * U)
    assert torch.isfinite(out).all()
    (out.sum() + layer.kl()).backward()
    assert torch.isfinite(x.grad).all()
    if act == "lwta" and not train and winner in ("sample", "argmax"):
        assert ((out.view(-1, K, U) != 0).sum(-1) <= 1).all()


@FAST
@given(U=st.integers(1, 4), K=st.integers(1, 4), cin=st.integers(1, 3), k=st.integers(1, 5), stride=st.integers(1, 2),
       size=st.integers(1, 9), n=st.integers(1, 3), act=st.sampled_from(ACTIVATIONS), ibp=st.booleans(),
       winner=winner_modes, zmode=z_modes, train=st.booleans(), bn=st.booleans())
def test_conv_layer_any_config(U, K, cin, k, stride, size, n, act, ibp, winner, zmode, train, bn):
    layer = StochasticConv2d(cin, K * U, k, stride, U=U, activation=act, ibp=ibp, batchnorm=bn)
    layer.train(train)
    set_sampling(layer, Sampling(winner=winner, z=zmode))
    batch = 2 if (bn and train) else 1
    x = torch.randn(n * batch, cin, size, size, requires_grad=True)
    out = layer(x, n)
    assert out.shape == (n * batch, K * U, math.ceil(size / stride), math.ceil(size / stride))
    assert torch.isfinite(out).all()
    (out.sum() + layer.kl()).backward()
    assert torch.isfinite(x.grad).all()


@FAST
@given(values=st.lists(finite, min_size=4, max_size=4))
def test_extreme_activations_stay_finite(values):
    layer = StochasticLinear(1, 4, U=2, activation="lwta", ibp=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values).view(4, 1))
    for train in (True, False):
        layer.train(train)
        out = layer(torch.ones(3, 1))
        assert torch.isfinite(out).all() and torch.isfinite(layer.kl())


@settings(max_examples=25, deadline=None)
@given(name=st.text(min_size=0, max_size=30))
def test_arbitrary_model_names_give_value_error(name):
    try:
        cfg = parse_name(name)
    except ValueError as e:
        assert "model" in str(e) or "U" in str(e) or "ReLU" in str(e)
    else:
        assert cfg.code in CODES


@settings(max_examples=8, deadline=None)
@given(act=st.sampled_from(["relu", "lwtamax", "lwta"]), ibp=st.booleans(), code=st.sampled_from(CODES),
       u4=st.booleans(), samples=st.integers(1, 3), output=st.sampled_from(["logits", "correlations", "raw"]))
def test_every_model_config_runs(act, ibp, code, u4, samples, output):
    name = f"{act}{'_ibp' if ibp else ''}_{code}{'_u4' if u4 else ''}"
    if act == "relu" and (ibp or u4):
        with pytest.raises(ValueError):
            create_model(name)
        return
    m = create_model(name, samples=samples, output=output).eval()
    with torch.no_grad():
        out = m(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------------------
# public entry points: validated model inputs, labels, load_model arguments, damaged checkpoint bytes

_VALIDATED = {}


def _validated_model():
    if "m" not in _VALIDATED:
        from lwta_plugin.validation import enable_input_validation

        torch.manual_seed(0)
        _VALIDATED["m"] = enable_input_validation(create_model("lwta_softmax", samples=2).eval())
    return _VALIDATED["m"]


_DTYPES = [torch.float32, torch.float64, torch.float16, torch.uint8, torch.int64, torch.bool]
_SPECIAL = st.sampled_from([0.0, 1.0, 0.5, -1e-5, 1 + 1e-5, -0.5, 2.0, 255.0, 1e30, -1e30,
                            float("nan"), float("inf"), float("-inf")])


@settings(max_examples=30, deadline=None)
@given(shape=st.one_of(st.just([2, 1, 28, 28]), st.lists(st.integers(0, 3), max_size=5),
                       st.tuples(st.integers(0, 3), st.sampled_from([1, 3]), st.sampled_from([28, 32]),
                                 st.sampled_from([28, 32])).map(list)),
       dtype=st.sampled_from(_DTYPES), special=_SPECIAL, where=st.integers(0, 10 ** 6))
def test_validated_forward_gives_output_or_value_error(shape, dtype, special, where):
    model = _validated_model()
    x = torch.rand(*shape) if shape else torch.rand(())
    if x.numel():
        x.view(-1)[where % x.numel()] = special
    x = x.to(dtype) if dtype.is_floating_point else x.clamp(0, 1).to(dtype)
    try:
        with torch.no_grad():
            out = model(x)
    except ValueError as e:
        assert str(e).startswith("lwta_softmax (mnist): ") and "expected" in str(e)
    else:  # only valid input gets through: a non-empty float32 batch [B, 1, 28, 28] with finite values in [0, 1]
        assert dtype == torch.float32 and list(x.shape[1:]) == [1, 28, 28] and x.shape[0] > 0
        assert torch.isfinite(x).all() and x.min() >= -1e-4 and x.max() <= 1 + 1e-4
        assert out.shape == (x.shape[0], 10) and torch.isfinite(out).all()


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(-3, 13), min_size=0, max_size=5), n=st.integers(0, 5),
       dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.float32]))
def test_check_labels_accepts_exactly_valid_labels(values, n, dtype):
    from lwta_plugin.validation import check_labels

    y = torch.tensor(values, dtype=torch.int64)
    if dtype == torch.uint8:
        y = y.clamp(0, 255)
    y = y.to(dtype)
    valid = (not dtype.is_floating_point and len(values) == n > 0 and bool(((y >= 0) & (y < 10)).all()))
    try:
        check_labels(y, 10, batch=n)
    except ValueError as e:
        assert not valid and str(e).startswith("labels: ") and "expected a 1-D integer tensor" in str(e)
    else:
        assert valid


@settings(max_examples=25, deadline=None)
@given(name=st.one_of(st.text(max_size=20), st.sampled_from(["lwta_ibp_tanh16", "relu_softmax", "lwta_ibp_tanh"]),
                      st.none(), st.integers()),
       dataset=st.one_of(st.sampled_from(["mnist", "cifar10", "fashion_mnist", "MNIST", "svhn", ""]), st.none()),
       threat=st.sampled_from(["Linf", "L2", "corruptions", "linf", ""]),
       samples=st.one_of(st.none(), st.integers(-2, 3), st.floats(0, 3), st.text(max_size=2)))
def test_load_model_arguments_fail_with_documented_errors(tmp_path_factory, name, dataset, threat, samples):
    from lwta_plugin import zoo

    empty = tmp_path_factory.getbasetemp() / "empty_store"  # no models shipped anywhere
    try:
        zoo.load_model(name, dataset=dataset, threat_model=threat, samples=samples, store=empty)
    except zoo.ModelNotAvailableError as e:  # a valid request: says how to train the model
        assert "lwta train --model" in str(e)
    except ValueError as e:
        assert str(e).startswith(("unknown ", "samples must be")), str(e)
    else:
        raise AssertionError("nothing to load, yet load_model returned")


_CKPT = {}


def _checkpoint_bytes():
    if "data" not in _CKPT:
        import io

        from lwta_plugin.checkpoint import save_checkpoint

        torch.manual_seed(0)
        model = create_model("lwta_ibp_softmax")
        buf = io.BytesIO()
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(Path(d) / "c.pt", model, {"name": model.config.name, "dataset": "mnist"})
            buf.write((Path(d) / "c.pt").read_bytes())
        _CKPT["data"], _CKPT["state"] = buf.getvalue(), model.state_dict()
    return _CKPT["data"], _CKPT["state"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 10 ** 9), st.integers(1, 255)), min_size=1, max_size=3),
       cut=st.one_of(st.none(), st.integers(0, 10 ** 9)))
def test_damaged_checkpoint_bytes_are_refused_or_harmless(tmp_path, edits, cut):
    from lwta_plugin import zoo
    from lwta_plugin.checkpoint import CheckpointError

    data, state = _checkpoint_bytes()
    damaged = bytearray(data)
    for pos, xor in edits:
        damaged[pos % len(damaged)] ^= xor
    if cut is not None:
        damaged = damaged[: cut % len(damaged)]
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(damaged))
    try:
        model = zoo.load_model("lwta_ibp_softmax", checkpoint=path)
    except CheckpointError:
        pass  # refused with a named error
    else:  # the damage missed everything that matters (zip padding, meta data): the weights are intact
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


# --------------------------------------------------------------------------------------------------------------
# leaderboard entries: a mutated figure is accepted only when the per-example counts support it

_ENTRIES: dict[str, dict] = {}
_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
_FIGURE_TOLERANCE = 1e-9  # stored statistics carry 12 significant digits


def _generated_entry() -> dict:
    """A fresh entry (the current format: recorded attack paths, autoattack_rand_acc,
    external) of a tiny evaluation with a cheap attack; one attack covers fewer images than the others."""
    import json
    import tempfile
    from pathlib import Path

    import torch.nn.functional as F
    from _tiny_models import make_checkpoint

    from lwta_plugin.evaluation import EvaluationConfig, evaluate

    def factory(spec, model):
        eps = spec.params.get("eps") or 0.5

        def attack(x, y):
            xa = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
            attack.last_info = {"path_adversarial": torch.arange(len(x)) % 2 == 0}
            return (x + eps * g.sign()).clamp(0, 1).detach()

        attack.hparams, attack.last_info = dict(spec.params), {}
        return attack

    g = torch.Generator().manual_seed(3)
    data = torch.rand(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp) / "m.pt")
        config = EvaluationConfig("lwta_ibp_softmax", protocols="adaptive", out_dir=Path(tmp) / "out",
                                  checkpoints={"lwta_ibp_softmax": str(ckpt)}, n_examples=6, batch_size=3, passes=3,
                                  attacks=["clean", "fgsm", "eot_pgd", "eot_pgd_2x", "apgd_rand", "noise"],
                                  overrides={"adaptive": {"eot_pgd_2x": {"n_examples": 2}}})
        (status,) = evaluate(config, data=data, attack_factory=factory, log=None, progress=False)
        return json.loads(Path(status["path"]).read_text(encoding="utf-8"))


def _valid_entries() -> dict[str, dict]:
    import json

    if not _ENTRIES:
        torch.set_num_threads(1)
        _ENTRIES["generated"] = _generated_entry()
        for name in ("lwta_ibp_softmax_u4__paper", "lwta_ibp_logistic__ladder"):  # committed, format 1
            path = _ROOT / "leaderboard" / "mnist" / "Linf" / f"{name}.json"
            if path.is_file():
                _ENTRIES[name] = json.loads(path.read_text(encoding="utf-8"))
    return _ENTRIES


def _close(a, b) -> bool:
    return abs(a - b) <= _FIGURE_TOLERANCE


def _oracle(entry: dict) -> None:
    """The published figures of ``entry`` recomputed from its counts, independently of lwta_plugin.figures: every
    attack's summary, the worst case (per image over the results that cover it, or over the images all share for
    format 1), clean_acc, external."""
    from lwta_plugin.entries import pct
    from lwta_plugin.statistics import decode_counts, summarize_counts

    passes = entry["protocol"]["scoring"]["passes"]
    counts, spans = {}, {}
    for key, r in entry["attacks"].items():
        counts[key] = decode_counts(r["per_example_correct"])
        assert len(counts[key]) == r["n_examples"] and max(counts[key]) <= passes
        for k, v in summarize_counts(counts[key], passes).items():
            assert _close(r[k], v), (key, k)
        spans[key] = range(r.get("start", 0), r.get("start", 0) + r["n_examples"])
    assert entry["clean_acc"] == pct(entry["attacks"]["clean"]["mean"])
    inside = [k for k, r in entry["attacks"].items()
              if r["kind"] == "clean" or (r["kind"] == "adversarial" and r["bounded"]
                                          and abs(r["hyperparameters"]["eps"] - 0.3) < 1e-12)]
    attacked = [k for k in inside if entry["attacks"][k]["kind"] != "clean"] or inside
    if entry["format"].endswith("-1"):
        images = sorted(set.intersection(*(set(spans[k]) for k in inside)))
    else:
        images = sorted(set().union(*(set(spans[k]) for k in attacked)))
    w = entry["worst_case"]
    if w.get("method") == "fresh":  # cascade entries: select on the selection draws, score on the fresh ones
        c = entry["cascade"]
        res = {k: entry["attacks"][k] for k in inside}
        res.update({f"cascade/{s['attack']}": dict(s, start=c["start"], n_examples=c["n_examples"])
                    for s in c["stages"]})
        images = list(range(c["start"], c["start"] + c["n_examples"]))
        expected, low = [], []
        for i in images:
            options = []
            for n, k in enumerate(w["attacks"]):
                r, s0 = res[k], res[k].get("start", 0)
                if s0 <= i < s0 + r["n_examples"] and r["per_example_correct"][i - s0] != ".":
                    options.append((int(r["per_example_correct"][i - s0], 36), n, k))
            best, _, k = min(options)
            low.append(best)
            expected.append(int(res[k]["per_example_fresh"][i - res[k].get("start", 0)], 36))
        assert sorted(w["attacks"]) == sorted(res)
        assert decode_counts(w["selection"]["per_example_correct"]) == low
    else:
        expected = [min(counts[k][i - spans[k].start] for k in inside if i in spans[k]) for i in images]
    assert decode_counts(w["per_example_correct"]) == expected and w["n_examples"] == len(images)
    for k, v in summarize_counts(expected, passes).items():
        assert _close(w[k], v), ("worst_case", k)
    if "parts" in w:
        assert [i for p in w["parts"] for i in range(p["start"], p["start"] + p["n_examples"])] == images
        for p in w["parts"]:
            for i in range(p["start"], p["start"] + p["n_examples"]):
                assert sorted(p["attacks"]) == sorted(k for k in inside if i in spans[k])
    if entry["protocol"]["adaptive"]:
        assert entry["external"] == pct((entry.get("worst_case_all_protocols") or w)["mean"])


_FIGURES = ("mean", "ci_low", "ci_high")
_NUMBER_EDITS = st.one_of(st.floats(0, 1), st.sampled_from([1e-13, -1e-13, 1e-7, -1e-7, 0.01, -0.01, 0.5, 1.0]))


@st.composite
def _entry_mutation(draw):
    """``(entry name, mutated entry)``: one numeric figure or count string of a valid entry changed, optionally with
    the attack's own summary recomputed to match new counts (a careful forger)."""
    import copy

    from lwta_plugin.statistics import decode_counts, encode_counts, summarize_counts

    entries = _valid_entries()
    name = draw(st.sampled_from(sorted(entries)))
    entry = copy.deepcopy(entries[name])
    passes = entry["protocol"]["scoring"]["passes"]
    where = draw(st.sampled_from(["attack", "worst_case", "percent"]))
    if where == "percent":
        key = draw(st.sampled_from([k for k in ("clean_acc", "autoattack_rand_acc", "external", "reported") if k in entry]))
        entry[key] = f"{draw(st.integers(0, 10000)) / 100:.2f}"
        return name, entry
    target = entry["worst_case"] if where == "worst_case" else entry["attacks"][draw(st.sampled_from(sorted(
        entry["attacks"])))]
    field = draw(st.sampled_from([*_FIGURES, "n_examples", "per_example_correct"]
                                 + (["parts"] if "parts" in target else [])))
    if field in _FIGURES:
        edit = draw(_NUMBER_EDITS)
        target[field] = edit if edit >= 0.5 or edit == 0 else min(1.0, max(0.0, target[field] + edit))
    elif field == "n_examples":
        target[field] = max(1, target[field] + draw(st.sampled_from([-1, 1, 5])))
    elif field == "parts":
        part = target["parts"][draw(st.integers(0, len(target["parts"]) - 1))]
        part[draw(st.sampled_from(["start", "n_examples", "mean"]))] = draw(st.integers(0, 3))
    else:
        counts = decode_counts(target[field])
        i = draw(st.integers(0, len(counts) - 1))
        how = draw(st.sampled_from(["set", "swap", "drop", "append"]))
        if how == "set":
            counts[i] = draw(st.integers(0, passes))
        elif how == "swap":
            j = draw(st.integers(0, len(counts) - 1))
            counts[i], counts[j] = counts[j], counts[i]
        elif how == "drop":
            del counts[i]
        else:
            counts.append(draw(st.integers(0, passes)))
        if counts:
            target[field] = encode_counts(counts, passes)
            if draw(st.booleans()):  # the forger also fixes the summary (and the count) of what was edited
                target.update(summarize_counts(counts, passes), n_examples=len(counts))
    return name, entry


@pytest.fixture(scope="module")
def valid_entries() -> dict[str, dict]:
    """Built once, before hypothesis draws (an evaluation seeds the global RNGs)."""
    return _valid_entries()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=_entry_mutation())
def test_entry_figures_are_accepted_only_when_the_counts_support_them(valid_entries, mutation):
    """Validation either refuses a mutated entry or every published figure of it is what its counts give."""
    from lwta_plugin.entries import validate_entry

    name, entry = mutation
    try:
        validate_entry(entry)
    except ValueError:
        event(f"{name}: refused")
        return
    event(f"{name}: accepted")  # e.g. a nudge below the stored precision, a swap of equal counts
    _oracle(entry)


def test_the_valid_entries_pass_the_oracle(valid_entries):
    """The fuzz test's starting points: valid, and their figures are those of their counts."""
    from lwta_plugin.entries import validate_entry

    entries = valid_entries
    assert "generated" in entries
    for entry in entries.values():
        validate_entry(entry)
        _oracle(entry)
