"""lstmkit.dropout: the counter-based mask of the compiled extension against the definition
y = x * m / (1 - p), m_i ~ Bernoulli(1 - p): values, keep rate, independence, the gradient
(gradcheck in float64 and the mask itself), seeding, threads, and the fallback to torch."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from lstmkit import dropout as dropout_mod
from lstmkit.dropout import Dropout, dropout, dropout_with_seed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_values_and_keep_rate(ext, dtype, p):
    torch.manual_seed(0)
    x = torch.randn(400_000, dtype=dtype)
    y = dropout(x, p)
    kept = y != 0
    assert torch.equal(y[kept], x[kept] * (1.0 / (1.0 - p)))      # kept: scaled by 1/(1-p)
    n = x.numel()
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * sd
    # neighbours are independent: both kept at rate (1-p)^2
    both = (kept[:-1] & kept[1:]).double().mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * ((1 - p) ** 2 * (1 - (1 - p) ** 2) / n) ** 0.5


def test_masks_differ_between_calls_and_repeat_with_the_seed(ext):
    x = torch.ones(10_000)
    torch.manual_seed(1)
    a, b = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(1)
    a2 = dropout(x, 0.5)
    assert torch.equal(a, a2)
    assert not torch.equal(a, b)
    assert 0.4 < ((a != 0) == (b != 0)).double().mean().item() < 0.6   # unrelated masks


def test_mask_is_the_same_on_any_number_of_threads(ext):
    x = torch.randn(300_000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = dropout_with_seed(x, 0.3, 12345)
        torch.set_num_threads(max(2, threads))
        many = dropout_with_seed(x, 0.3, 12345)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_gradient_is_the_mask(ext):
    x = torch.randn(64, 33, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: dropout_with_seed(t, 0.4, 7), (x,))
    y = dropout_with_seed(x, 0.4, 7)
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, g)
    mask = (y != 0).to(x.dtype)
    torch.testing.assert_close(dx, g * mask / 0.6, rtol=0, atol=1e-15)


def test_non_contiguous_input_and_shape(ext):
    x = torch.randn(20, 30).t()
    y = dropout_with_seed(x, 0.5, 3)
    assert y.shape == x.shape
    torch.testing.assert_close(y, dropout_with_seed(x.contiguous(), 0.5, 3))


def test_module_and_edge_cases(ext):
    x = torch.randn(100, 10)
    m = Dropout(0.3)
    m.eval()
    assert m(x) is x                                         # eval: identity
    m.train()
    assert not torch.equal(m(x), x)
    assert dropout(x, 0.0) is x
    assert torch.count_nonzero(dropout(x, 1.0)) == 0         # p = 1: torch's, all dropped
    with pytest.raises(ValueError, match=r"\[0, 1\], got 1.5"):
        dropout(x, 1.5)
    bf = x.bfloat16()                                        # other dtypes: torch's dropout
    assert dropout(bf, 0.5).dtype == torch.bfloat16


def test_falls_back_to_torch_without_the_extension(monkeypatch):
    monkeypatch.setattr(dropout_mod.compiled, "_load", lambda: None)
    called = []
    real = torch.nn.functional.dropout
    monkeypatch.setattr(dropout_mod.F, "dropout",
                        lambda *a, **k: called.append(1) or real(*a, **k))
    y = dropout(torch.ones(1000), 0.5)
    assert called and set(y.unique().tolist()) <= {0.0, 2.0}
