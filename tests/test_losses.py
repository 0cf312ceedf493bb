"""The fused decoder + cross-entropy against autograd through F.linear and F.cross_entropy."""

import pytest
import torch
import torch.nn.functional as F

from lstmkit.losses import linear_cross_entropy
from lstmkit.tasks.models import LanguageModel


def inputs(N, H, V, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, H, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(V, H, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(V, (N,), generator=g)
    return h, w, b, y


def test_gradcheck_float64():
    h, w, b, y = inputs(7, 5, 11, torch.float64)
    assert torch.autograd.gradcheck(lambda h, w, b: linear_cross_entropy(h, w, b, y), (h, w, b))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("N,H,V", [(1, 3, 2), (40, 16, 300), (64, 32, 1000)])
def test_matches_autograd(N, H, V, dtype, tol):
    h, w, b, y = inputs(N, H, V, dtype, seed=N + V)
    ours = linear_cross_entropy(h, w, b, y)
    # a non-unit upstream gradient, as a summed-over-steps loss gives
    (ours * 3.5).backward()
    got = [t.grad.clone() for t in (h, w, b)]
    for t in (h, w, b):
        t.grad = None
    ref = F.cross_entropy(F.linear(h, w, b), y)
    (ref * 3.5).backward()
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    for g, t in zip(got, (h, w, b)):
        torch.testing.assert_close(g, t.grad, rtol=tol, atol=tol)


def test_only_needed_gradients_and_no_grad():
    h, w, b, y = inputs(6, 4, 9, torch.float64)
    h.requires_grad_(False)
    linear_cross_entropy(h, w, b, y).backward()
    assert h.grad is None and w.grad is not None and b.grad is not None
    with torch.no_grad():
        value = linear_cross_entropy(h, w, b, y)
    torch.testing.assert_close(value, F.cross_entropy(F.linear(h, w, b), y))


@pytest.mark.parametrize("tie", [False, True])
def test_language_model_loss_equals_its_logits(tie):
    torch.manual_seed(0)
    model = LanguageModel(50, embed=16, hidden=16, layers=2, tie=tie).double()
    x, y = torch.randint(50, (2, 7, 3))
    loss, _ = model.loss(x, y)
    loss.backward()
    got = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    logits, _ = model(x)
    ref = F.cross_entropy(logits.reshape(-1, 50), y.reshape(-1))
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    for k, p in model.named_parameters():
        torch.testing.assert_close(got[k], p.grad, rtol=1e-10, atol=1e-12)
