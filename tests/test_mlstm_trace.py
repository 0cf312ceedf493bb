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


@pytest.mark.parametrize("batch_first", [False, True])
def test_trace_gives_forwards_output_and_state(batch_first):
    layer = _layer(num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    x = x if batch_first else x.transpose(0, 1)
    state = tuple(0.1 * torch.randn(s, dtype=torch.float64) for s in layer.state_shapes(2))
    state = (state[0], state[1], state[2].abs())
    out, final = layer(x, state)
    trace = layer.trace(x, state)
    torch.testing.assert_close(trace.output, out)
    for a, b in zip(trace.state, final):
        torch.testing.assert_close(a, b)
    # the reverse direction's h in time order is the second half of the output
    h = trace.output if not batch_first else trace.output.transpose(0, 1)
    torch.testing.assert_close(trace.steps[1][1].h, h[..., 8:])


def test_states_and_gates_follow_the_equations_and_bptt_through_C():
    layer = _layer()
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
    h_tilde = (C @ q.unsqueeze(-1)).squeeze(-1) / den[..., None]
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
