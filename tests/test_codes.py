"""ECOC codes and decoders."""
import numpy as np
import pytest
import torch

from lwta_plugin.codes import ECOCDecoder, get_code, hadamard_code

# Reference doc section 1.5 (rows = classes 0..9), recomputed from the authors' recipe.
TANH16_ROWS = """\
- + - + - - + - + - - + + - - +
- - + - + + - - + - - + + + + -
- - - + - + - + - + - + - + + +
- + - - + + - + + - + - - - - +
+ + + - - - - - + + - - - + - +
+ - - - - - - + + + + + + - - -
+ + - + + - - + - - - - + + + -
+ - - + + + + - + + - - - - + -
+ + + + + + + + + + + + + + - +
- - - - + - + - - + + - + + + +"""


def test_hadamard_code_row_for_row():
    expected = np.array([[1.0 if c == "+" else -1.0 for c in row.split()] for row in TANH16_ROWS.splitlines()])
    np.testing.assert_array_equal(hadamard_code(10, 16, seed=59), expected)


def test_hadamard_code_properties():
    m = hadamard_code(10, 16)
    dots = m @ m.T
    off = dots[~np.eye(10, dtype=bool)]
    assert set(np.unique(off).tolist()) <= {0.0, -2.0}
    hamming = (16 - off) / 2
    assert hamming.min() >= 8 and hamming.max() <= 9


def test_code_table():
    assert get_code("softmax").activation == "softmax" and np.array_equal(get_code("softmax").matrix, np.eye(10))
    assert get_code("logistic").loss == "bce"
    assert get_code("tanh16").matrix.shape == (10, 16) and get_code("tanh16").loss == "hinge"
    assert get_code("logisticens10").chunks == 2 and get_code("tanhens16").chunks == 4
    with pytest.raises(ValueError, match="unknown output code"):
        get_code("tanh32")


def test_decoder_softmax_hand_computed():
    dec = ECOCDecoder(get_code("softmax"))
    raw = torch.tensor([[0.0, float(np.log(3.0))] + [-1e9] * 8])
    # softmax -> [0.25, 0.75, 0...]; identity code -> same; log(relu(c) + 1e-6)
    out = dec(raw)
    assert torch.allclose(out[0, :2], torch.log(torch.tensor([0.25, 0.75]) + 1e-6))
    assert torch.allclose(out[0, 2:], torch.full((8,), np.log(1e-6)))
    assert torch.equal(dec(raw, "raw"), raw)


def test_decoder_tanh_hand_computed():
    code = get_code("tanh16")
    dec = ECOCDecoder(code)
    M = torch.tensor(code.matrix)
    raw = torch.full((1, 16), 100.0) * M[3]  # saturated tanh: exactly codeword 3
    corr = dec(raw, "correlations")
    assert torch.allclose(corr[0, 3], torch.tensor(16.0))
    assert torch.allclose(corr, (torch.tanh(raw) @ M.T))
    logits = dec(raw)
    assert logits.argmax() == 3
    # negative correlations are floored at log(1e-6): zero gradient there (the saturation Tramer et al. exploit)
    neg = corr[0] < 0
    assert torch.allclose(logits[0, neg], torch.tensor(np.log(1e-6), dtype=torch.float32))
    assert torch.allclose(dec(raw, "raw"), raw @ M.T)


def test_decoder_logistic_hand_computed():
    dec = ECOCDecoder(get_code("logistic"))
    raw = torch.zeros(1, 10)
    raw[0, 4] = 2.0
    corr = dec(raw, "correlations")
    assert torch.allclose(corr[0, 4], torch.sigmoid(torch.tensor(2.0)))
    assert torch.allclose(corr[0, 0], torch.tensor(0.5))


def test_code_losses():
    code = get_code("tanh16")
    dec = ECOCDecoder(code)
    y = torch.tensor([2])
    target = torch.tensor(code.matrix[2])
    assert dec.loss(target.unsqueeze(0) * 2.0, y) == 0  # margin >= 1 everywhere
    assert torch.allclose(dec.loss(torch.zeros(1, 16), y), torch.tensor(1.0))
    dec_l = ECOCDecoder(get_code("logistic"))
    raw = torch.zeros(1, 10)
    assert torch.allclose(dec_l.loss(raw, torch.tensor([0])), torch.tensor(10 * np.log(2.0), dtype=torch.float32))


def test_bce_is_the_per_example_negative_log_likelihood():
    """BCE sums over the independent bits (log p(y|x) of the ELBO) and averages over the batch."""
    dec = ECOCDecoder(get_code("logistic"))
    raw = torch.tensor([[2.0, -1.0] + [0.0] * 8, [0.5] * 10])
    y = torch.tensor([0, 3])
    p = torch.sigmoid(raw)
    target = torch.zeros(2, 10)
    target[0, 0] = target[1, 3] = 1
    nll = -(target * p.log() + (1 - target) * (1 - p).log()).sum(1).mean()
    assert torch.allclose(dec.loss(raw, y), nll)
