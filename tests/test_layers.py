"""LWTA and IBP layers: sparsity, sampling distributions, KL terms, sample groups."""
import math

import pytest
import torch
from scipy import stats

from lwta_plugin.layers import (
    IBPUtility,
    Sampling,
    StochasticConv2d,
    StochasticLinear,
    bernoulli_kl,
    categorical_kl_to_uniform,
    kumaraswamy_beta_kl,
    kumaraswamy_log_sample,
    lwta,
    same_padding,
    sample_winner_mask,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("U", [2, 3, 4])
def test_exactly_one_winner_per_block_dense(U):
    layer = StochasticLinear(12, 8 * U, U=U, activation="lwta", ibp=True).eval()
    out = layer(torch.randn(64, 12)).view(64, 8, U)
    nonzero = (out != 0).sum(-1)
    assert (nonzero <= 1).all()
    assert nonzero.float().mean() > 0.99  # h == 0 exactly has probability 0


@pytest.mark.parametrize("U", [2, 4])
def test_exactly_one_winner_per_block_conv_at_every_location(U):
    layer = StochasticConv2d(3, 4 * U, 3, U=U, activation="lwta", ibp=False).eval()
    out = layer(torch.randn(5, 3, 9, 9))
    assert out.shape == (5, 4 * U, 9, 9)
    assert ((out.view(5, 4, U, 9, 9) != 0).sum(2) == 1).all()


def test_winner_keeps_value_of_its_unit():
    h = torch.randn(100, 6, 2)
    out = lwta(h, 2, "sample", 1.0)
    winner = out != 0
    assert torch.equal(out[winner], h[winner])


@pytest.mark.parametrize("U", [2, 4])
def test_winner_frequencies_match_softmax(U):
    logits = torch.tensor([0.3, -1.0, 1.2, 0.0][:U])
    p = torch.softmax(logits, 0).numpy()
    n = 20000
    mask = sample_winner_mask(logits.expand(n, U).clone(), 1)
    counts = mask.sum(0).numpy()
    chi2 = stats.chisquare(counts, p * n)
    assert chi2.pvalue > 1e-3, (counts / n, p)


@pytest.mark.parametrize("U", [2, 3])
def test_exact_and_concrete_samplers_agree_in_distribution(U):
    logits = torch.tensor([0.8, -0.4, 0.1][:U])
    n = 20000
    h = logits.expand(n, U).clone()
    exact = sample_winner_mask(h, 1).argmax(1)
    concrete = lwta(h, 1, "concrete", 0.01).abs().argmax(1)  # near one-hot, winner = largest |h * xi|
    # compare winner frequencies of the two samplers (two-sample chi-square on the contingency table)
    table = torch.stack([torch.bincount(exact, minlength=U), torch.bincount(concrete, minlength=U)]).numpy()
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_argmax_and_expected_modes():
    h = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    assert torch.equal(lwta(h, 2, "argmax", 1.0), torch.tensor([[[0.0, 2.0], [3.0, 0.0]]]))
    assert torch.allclose(lwta(h, 2, "expected", 1.0), h * torch.softmax(h, 2))


def test_straight_through_gradient_is_softmax_gradient():
    h = torch.randn(50, 3, 2, requires_grad=True)
    out = lwta(h, 2, "sample", 1.0, straight_through=True)
    out.sum().backward()
    g_st = h.grad.clone()
    h2 = h.detach().clone().requires_grad_(True)
    mask = (out.detach() != 0).float()
    p = torch.softmax(h2, 2)
    (h2 * (mask + p - p.detach())).sum().backward()
    assert torch.allclose(g_st, h2.grad)


def test_categorical_kl_closed_form():
    for U in (2, 3, 4):
        h = torch.randn(7, 5, U, 3)
        q = torch.softmax(h, 2)
        expected = (q * torch.log(q * U)).sum(2).flatten(1).sum(1)
        assert torch.allclose(categorical_kl_to_uniform(h, 2), expected, atol=1e-5)


def test_bernoulli_kl_full_form():
    logit = torch.tensor([-2.0, 0.0, 3.0])
    pi = torch.tensor([0.3, 0.5, 0.9])
    q = torch.sigmoid(logit)
    expected = q * torch.log(q / pi) + (1 - q) * torch.log((1 - q) / (1 - pi))
    assert torch.allclose(bernoulli_kl(logit, pi.log()), expected, atol=1e-6)
    assert bernoulli_kl(torch.tensor([0.0]), torch.tensor([0.5]).log()).abs() < 1e-7


@pytest.mark.parametrize("a,b,alpha", [(2.0, 1.0, 1.0), (5.0, 0.7, 1.0), (1.3, 2.5, 2.0)])
def test_kumaraswamy_beta_kl_matches_monte_carlo(a, b, alpha):
    at, bt = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    n = 400000
    log_v = kumaraswamy_log_sample(at.expand(n).clone(), bt.expand(n).clone())
    v = log_v.exp()
    log_q = math.log(a * b) + (a - 1) * log_v + (b - 1) * torch.log1p(-v.pow(a))
    log_p = math.log(alpha) + (alpha - 1) * log_v  # Beta(alpha, 1) density alpha * v^(alpha-1)
    mc = (log_q - log_p)
    se = mc.std() / math.sqrt(n)
    closed = kumaraswamy_beta_kl(at, bt, alpha)
    assert abs(float(mc.mean() - closed)) < 5 * float(se) + 1e-3


def test_kumaraswamy_sampler_mean():
    a, b = torch.full((200000,), 3.0), torch.full((200000,), 2.0)
    v = kumaraswamy_log_sample(a, b).exp()
    exact = b[0] * math.gamma(1 + 1 / 3.0) * math.gamma(2.0) / math.gamma(1 + 1 / 3.0 + 2.0)
    assert abs(float(v.mean()) - float(exact)) < 3e-3


def test_ibp_kl_uses_cumulative_product_over_blocks():
    ibp = IBPUtility((3, 4))
    torch.manual_seed(1)
    a, b = torch.nn.functional.softplus(ibp.conc1), torch.nn.functional.softplus(ibp.conc0)
    log_pi = torch.cumsum(kumaraswamy_log_sample(a, b), 0)
    torch.manual_seed(1)
    kl = ibp.kl()
    expected = bernoulli_kl(ibp.t_pi, log_pi).sum() + kumaraswamy_beta_kl(a, b).sum()
    assert torch.allclose(kl, expected)
    assert log_pi.shape == (4,) and (log_pi[1:] <= log_pi[:-1]).all()


def test_ibp_init_follows_paper():
    ibp = IBPUtility((10, 32))
    assert torch.allclose(torch.nn.functional.softplus(ibp.conc1), torch.full((32,), 32.0))
    assert torch.allclose(torch.nn.functional.softplus(ibp.conc0), torch.ones(32))


def test_ibp_test_time_z_is_exact_bernoulli():
    ibp = IBPUtility((2, 3))
    with torch.no_grad():
        ibp.t_pi.copy_(torch.tensor([[0.0, 1.0, -1.0], [2.0, -2.0, 0.5]]))
    z = ibp.sample(20000, "sample", Sampling())
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    freq = z.mean(0)
    assert torch.allclose(freq, torch.sigmoid(ibp.t_pi.detach()), atol=0.015)


def test_units_of_a_block_share_their_utility():
    layer = StochasticLinear(5, 6, U=2, activation="none", ibp=True).eval()
    z = torch.tensor([[[1.0, 0.0, 1.0]] * 5])  # [g=1, in=5, K=3]
    w = layer._masked_weight(z)[0]
    assert torch.equal(w[2:4], torch.zeros(2, 5)) and torch.equal(w[:2], layer.weight[:2])


def test_conv_z_masks_whole_kernels():
    layer = StochasticConv2d(2, 4, 3, U=2, activation="none", ibp=True).eval()
    with torch.no_grad():
        layer.ibp.t_pi.copy_(torch.tensor([50.0, -50.0]))  # block 0 always on, block 1 always off
    out = layer(torch.randn(3, 2, 5, 5))
    assert torch.equal(out[:, 2:], layer.bias[2:].view(1, 2, 1, 1).expand(3, 2, 5, 5))
    assert out[:, :2].abs().sum() > 0


def test_sample_groups_draw_independent_z():
    layer = StochasticLinear(40, 40, U=2, activation="none", ibp=True).eval()
    with torch.no_grad():
        layer.ibp.t_pi.zero_()  # q = 0.5
    x = torch.randn(1, 40).repeat(8, 1)
    out = layer(x, n=8)
    assert len({tuple(r.tolist()) for r in out}) == 8
    same = layer(x, n=1)  # one group: identical rows
    assert torch.equal(same[0], same[7])


@pytest.mark.parametrize("size,k,s,expected", [(28, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (32, 5, 2, (1, 2)),
                                               (4, 2, 1, (0, 1)), (28, 5, 1, (2, 2))])
def test_tensorflow_same_padding(size, k, s, expected):
    assert same_padding(size, k, s) == expected


def test_unknown_modes_are_rejected():
    with pytest.raises(ValueError, match="winner mode"):
        Sampling(winner="gumbel")
    with pytest.raises(ValueError, match="activation"):
        StochasticLinear(3, 4, activation="elu")
    with pytest.raises(ValueError, match="U=3"):
        StochasticLinear(3, 4, U=3)


@pytest.mark.parametrize("U", [2, 3, 4])
def test_argmax_mask_is_the_one_hot_argmax_with_first_index_on_ties(U):
    from lwta_plugin.layers import argmax_mask

    g = torch.Generator().manual_seed(U)
    h = torch.randint(-2, 3, (7, 5, U, 3, 3), generator=g).float()  # many ties
    expected = torch.zeros_like(h).scatter_(2, h.argmax(2, keepdim=True), 1.0)
    assert torch.equal(argmax_mask(h, 2), expected)
    d = torch.randn(6, 4, U, generator=g)
    assert torch.equal(argmax_mask(d, 2), torch.zeros_like(d).scatter_(2, d.argmax(2, keepdim=True), 1.0))


# ------------------------------------------------------------------ reference-code behaviour (opt-in, *_refcode)


def test_reference_code_tiles_z_over_units_instead_of_sharing_it_within_a_block():
    paper = StochasticLinear(5, 6, U=2, activation="none", ibp=True)
    ref = StochasticLinear(5, 6, U=2, activation="none", ibp=True, reference_code=True)
    z = torch.tensor([[[1.0, 0.0, 1.0]] * 5])  # [g=1, in=5, K=3]: block 1 (units 2, 3) off
    assert paper._units(z.transpose(1, 2), 1)[0, :, 0].tolist() == [1, 1, 0, 0, 1, 1]
    # tf.tile: unit j gets z[j mod K], so the off utility lands on units 1 and 4, in different blocks
    assert ref._units(z.transpose(1, 2), 1)[0, :, 0].tolist() == [1, 0, 1, 1, 0, 1]
    conv = StochasticConv2d(2, 6, 3, U=2, activation="none", ibp=True, reference_code=True)
    assert conv._units(torch.tensor([1.0, 0.0, 1.0]), 0).tolist() == [1, 0, 1, 1, 0, 1]
    assert conv._units(torch.tensor([[1.0, 0.0, 1.0]] * 2), 1).tolist() == [[1, 0, 1, 1, 0, 1]] * 2


def test_reference_code_sticks_run_over_the_input_axis_with_one_term_kl():
    ibp = IBPUtility((3, 4), reference_code=True)
    assert ibp.conc1.shape == ibp.conc0.shape == (3, 4)  # one stick per (input, block)
    assert torch.allclose(ibp.conc1, torch.full((3, 4), 2.0)) and torch.allclose(ibp.conc0, torch.full((3, 4), 0.5453))
    torch.manual_seed(1)
    a, b = torch.nn.functional.softplus(ibp.conc1), torch.nn.functional.softplus(ibp.conc0)
    log_pi = torch.cumsum(kumaraswamy_log_sample(a, b), 0).clamp(min=math.log(1e-8))  # product over the 3 inputs
    torch.manual_seed(1)
    kl = ibp.kl()
    q = torch.sigmoid(ibp.t_pi)
    expected = (q * (torch.log(q) - log_pi)).sum() + kumaraswamy_beta_kl(a, b).sum()
    assert torch.allclose(kl, expected)
    # the missing (1 - q) term: the full KL differs once q is far from 1
    with torch.no_grad():
        ibp.t_pi.fill_(-1.0)
    torch.manual_seed(1)
    ref = ibp.kl()
    torch.manual_seed(1)
    full = bernoulli_kl(ibp.t_pi, torch.cumsum(kumaraswamy_log_sample(a, b), 0)).sum() + kumaraswamy_beta_kl(a, b).sum()
    assert not torch.allclose(ref, full)


def test_reference_code_constraints_clip_after_a_step():
    dense, conv = IBPUtility((3, 4), reference_code=True), IBPUtility((4,), reference_code=True)
    with torch.no_grad():
        for ibp in (dense, conv):
            ibp.t_pi.fill_(-100.0)
            ibp.conc1.fill_(-100.0)
    dense.constrain_()
    conv.constrain_()
    assert dense.t_pi.min() == -5.0 and conv.t_pi.min() == -7.0 and dense.conc1.min() == -6.0
    paper = IBPUtility((3, 4))
    with torch.no_grad():
        paper.t_pi.fill_(-100.0)
    paper.constrain_()
    assert paper.t_pi.min() == -100.0  # the paper's model has no constraints


def test_reference_code_winner_kl_is_divided_by_u_and_by_n_in_conv_layers():
    x = torch.randn(4, 5)
    paper = StochasticLinear(5, 6, U=2, ibp=False).train()
    ref = StochasticLinear(5, 6, U=2, ibp=False, reference_code=True).train()
    ref.load_state_dict(paper.state_dict())
    paper(x)
    ref(x)
    assert torch.allclose(ref.kl_local, paper.kl_local / 2)
    xc = torch.randn(2, 2, 5, 5)
    pc = StochasticConv2d(2, 4, 3, U=2, ibp=False).train()
    rc = StochasticConv2d(2, 4, 3, U=2, ibp=False, reference_code=True).train()
    rc.load_state_dict(pc.state_dict())
    pc(xc)
    rc(xc)
    assert torch.allclose(rc.kl_local, pc.kl_local / (2 * 60000))
