"""mLSTM.trace: every step's gates and states, and the gradient BPTT carries through the matrix
memory, checked against the equations."""

from __future__ import annotations

import math

import pytest
import torch

import lstmkit
from lstmkit.layers.mlstm import _project


def _layer(**kwargs):
    torch.manual_seed(0)
    return lstmkit.mLSTM(3, 8, num_heads=2, dtype=torch.float64, **kwargs)


def _traced_as_forward(layer, x, *args, **kwargs):
    """layer.trace(x, ...), checked to give forward's output and final state."""
    out, final = layer(x, *args, **kwargs)
    trace = layer.trace(x, *args, **kwargs)
    torch.testing.assert_close(trace.output, out)
    for a, b in zip(trace.state, final):
        torch.testing.assert_close(a, b)
    return trace


@pytest.mark.parametrize("batch_first", [False, True])
def test_trace_gives_forwards_output_and_state(batch_first):
    layer = _layer(num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    x = x if batch_first else x.transpose(0, 1)
    state = tuple(0.1 * torch.randn(s, dtype=torch.float64) for s in layer.state_shapes(2))
    state = (state[0], state[1], state[2].abs())
    trace = _traced_as_forward(layer, x, state)
    # the reverse direction's h in time order is the second half of the output
    h = trace.output if not batch_first else trace.output.transpose(0, 1)
    torch.testing.assert_close(trace.steps[1][1].h, h[..., 8:])


@pytest.mark.parametrize("head_norm", [False, True])
def test_states_and_gates_follow_the_equations_and_bptt_through_C(head_norm):
    layer = _layer(head_norm=head_norm)
    if head_norm:
        with torch.no_grad():
            layer.weight_norm_l0.uniform_(0.5, 1.5)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    trace = layer.trace(x)
    w = torch.randn_like(trace.output)
    (trace.output * w).sum().backward()
    st = trace.steps[0][0]
    q, k, v, i_pre, f_pre, o = layer._split(_project(x, *layer._stacked(0)))
    q, k, v = (t.detach().permute(2, 0, 1, 3) for t in (q, k, v))          # (T, N, NH, d)
    C, n, m = st.states["C"], st.states["n"], st.states["m"]
    i, f = st.gates["i"], st.gates["f"]
    T, N, NH, d = q.shape
    outer = v.unsqueeze(-1) * k.unsqueeze(-2)                                 # v_t k_t^T
    torch.testing.assert_close(C[0], outer[0])                                # from C_0 = 0
    torch.testing.assert_close(C[1:], f[1:, ..., None, None] * C[:-1]
                               + i[1:, ..., None, None] * outer[1:])
    torch.testing.assert_close(n[1:], f[1:, ..., None] * n[:-1] + i[1:, ..., None] * k[1:])
    assert torch.all((f >= 0) & (f <= 1)) and torch.all((i >= 0) & (i <= 1))
    torch.testing.assert_close(st.gates["o"], torch.sigmoid(o.detach()))
    qn = (n * q).sum(-1)
    den = torch.maximum(qn.abs(), torch.exp(-m))                             # (T, N, NH)
    h_tilde = (C @ q.unsqueeze(-1)).squeeze(-1) / den[..., None]               # (T, N, NH, d)
    if head_norm:                       # GN: each head's d values normalised, then weighted
        mu, var = h_tilde.mean(-1, keepdim=True), h_tilde.var(-1, unbiased=False, keepdim=True)
        gn = (h_tilde - mu) / torch.sqrt(var + 1e-5) * layer.weight_norm_l0.detach().view(NH, d)
        torch.testing.assert_close(st.h, st.gates["o"] * gn.reshape(T, N, 8))
        return                          # the BPTT check below is for h = o * h~
    torch.testing.assert_close(st.h, st.gates["o"] * h_tilde.reshape(T, N, 8))
    # dL/dh_t is the output's gradient (no h feeds the next step); dL/dC_t: the direct term
    # g_t q_t^T / den_t plus what the next step carries back, f'_{t+1} dL/dC_{t+1}
    torch.testing.assert_close(st.grad_h, w)
    g = (w * st.gates["o"]).reshape(T, N, NH, d)                              # dL/dh~_t
    direct = g.unsqueeze(-1) * q.unsqueeze(-2) / den[..., None, None]
    dC = st.grad_states["C"]
    torch.testing.assert_close(dC[-1], direct[-1])
    torch.testing.assert_close(dC[:-1], direct[:-1] + f[1:, ..., None, None] * dC[1:])
    assert math.isfinite(dC.abs().max().item())


def test_trace_before_backward_has_no_gradients_and_bad_input_is_named():
    layer = _layer()
    trace = layer.trace(torch.randn(4, 1, 3, dtype=torch.float64))
    assert trace.steps[0][0].grad_h is None and trace.steps[0][0].grad_states["C"] is None
    with pytest.raises(ValueError, match="trace takes a batched 3-D input"):
        layer.trace(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected input \(L >= 1, N, 3\)"):
        layer.trace(torch.randn(4, 1, 5, dtype=torch.float64))


def test_trace_with_lengths_keeps_each_sequence_as_if_alone():
    """Right-padded, any order: the output, the final state and every kept value of each
    sequence (the reverse direction read from its own end) equal a trace of it alone; zero
    past each length."""
    layer = _layer(num_layers=2, bidirectional=True)
    lengths = torch.tensor([3, 6, 1])
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    trace = _traced_as_forward(layer, x, lengths=lengths)
    trace.output.pow(2).sum().backward()
    for k, n in enumerate(lengths.tolist()):
        alone = layer.trace(x[:n, k:k + 1])
        alone.output.pow(2).sum().backward()
        for row, row_alone in zip(trace.steps, alone.steps):
            for st, sa in zip(row, row_alone):
                pairs = [(st.h, sa.h), (st.grad_h, sa.grad_h)]
                pairs += [(st.gates[g], sa.gates[g]) for g in "ifo"]
                pairs += [(st.states[s], sa.states[s]) for s in "Cnm"]
                pairs += [(st.grad_states[s], sa.grad_states[s]) for s in "Cn"]
                for got, want in pairs:
                    torch.testing.assert_close(got[:n, k], want[:, 0])
                    assert (got[n:, k] == 0).all()


def test_xlstm_trace_is_each_layers_trace():
    torch.manual_seed(2)
    stack = lstmkit.xLSTM(3, 4, num_layers=3, num_heads=2, bidirectional=True,
                          dtype=torch.float64)
    lengths = torch.tensor([6, 5, 2])                     # the sLSTM wants longest first
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    trace = _traced_as_forward(stack, x, lengths=lengths)
    trace.output.sum().backward()
    h = x
    for layer, row in zip(stack.layers, trace.steps):
        alone = layer.trace(h.detach(), lengths=lengths)
        assert len(row) == 2 and type(row[0]) is type(alone.steps[0][0])
        torch.testing.assert_close(row[1].h, alone.steps[0][1].h)
        torch.testing.assert_close(row[0].gates["i"], alone.steps[0][0].gates["i"])
        assert row[0].grad_h is not None
        h = alone.output
    with pytest.raises(ValueError, match="trace takes a batched 3-D input"):
        stack.trace(x[:, 0])
