"""lstmkit.analysis.gradflow: the Jacobian products against autograd, the measured curves against
what the theory says they must do (vanish, explode, be clipped), and against an independent
reference (tests/reference_cells.py)."""

import math
import pathlib
import sys

import numpy as np
import pytest
import torch

import lstmkit
from lstmkit.analysis import gradflow
from lstmkit.init import orthogonal_recurrent_

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from reference_cells import gru_step, lstm_step  # noqa: E402

DT = torch.float64
T, B, I, H = 12, 3, 3, 5


def _x(seed=0, dtype=DT, T_=T):
    return torch.randn(T_, B, I, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- RNN product
@pytest.mark.parametrize("t", [0, 1, 6, T - 1, T])
def test_rnn_jacobian_product_formula_equals_autograd(t):
    torch.manual_seed(0)
    rnn = lstmkit.RNN(I, H, dtype=DT)
    formula, autograd = gradflow.rnn_jacobian_product(rnn, _x(), t)
    assert formula.shape == autograd.shape == (B, H, H)
    torch.testing.assert_close(formula, autograd, atol=1e-10, rtol=0)
    if t == T:
        torch.testing.assert_close(formula, torch.eye(H, dtype=DT).expand(B, H, H))


def test_rnn_jacobian_product_batch_first_and_large_weights():
    torch.manual_seed(1)
    rnn = orthogonal_recurrent_(lstmkit.RNN(I, H, batch_first=True, dtype=DT), gain=2.5)
    formula, autograd = gradflow.rnn_jacobian_product(rnn, _x().transpose(0, 1), 2)
    torch.testing.assert_close(formula, autograd, atol=1e-10, rtol=1e-10)
    assert formula.abs().max() > 1                                   # not a trivially small case


def test_jacobian_norms_match_the_rnn_product():
    torch.manual_seed(0)
    rnn = lstmkit.RNN(I, H, dtype=DT)
    x = _x()
    curve = gradflow.jacobian_norms(rnn, x)
    fro = gradflow.jacobian_norms(rnn, x, norm="frobenius")
    assert curve.shape == (T + 1,)
    for k in (0, 1, 5, T):
        formula, _ = gradflow.rnn_jacobian_product(rnn, x, T - k)
        spectral = torch.linalg.matrix_norm(formula, ord=2).mean()
        assert curve[k] == pytest.approx(float(spectral), rel=1e-10)
        assert fro[k] == pytest.approx(float(formula.norm(dim=(1, 2)).mean()), rel=1e-10)


# ----------------------------------------------------------------------------- LSTM cell path
@pytest.mark.parametrize("dtype, variant", [(torch.float32, {}), (DT, {}),
                                            (torch.float32, {"coupled": True}),
                                            (torch.float32, {"proj_size": 2})])
def test_lstm_cell_path_product(dtype, variant):
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H, dtype=dtype, **variant)
    x = _x(dtype=dtype)
    f = lstm.trace(x).steps[0][0].gates["f"]                         # (T, B, H), f[s-1] = f_s
    for t in (0, 4, T - 1, T):
        formula, autograd = gradflow.lstm_cell_path_product(lstm, x, t)
        assert formula.shape == autograd.shape == (B, H)
        torch.testing.assert_close(formula, autograd, atol=1e-6, rtol=0)
        product = torch.ones(B, H, dtype=dtype)
        for s in range(t + 1, T + 1):
            product = product * f[s - 1]
        torch.testing.assert_close(formula, product, atol=1e-6, rtol=0)


def test_forget_bias_one_keeps_the_cell_path_open():
    """With b_f = 1, prod f over 10 steps stays far above its value with b_f = -3."""
    x = _x(T_=20)
    kept = {}
    for b_f in (1.0, -3.0):
        torch.manual_seed(0)
        lstm = lstmkit.LSTM(I, H, dtype=DT)
        with torch.no_grad():
            lstm.bias_ih_l0[H:2 * H] = b_f
            lstm.bias_hh_l0[H:2 * H] = 0
        formula, autograd = gradflow.lstm_cell_path_product(lstm, x, 10)
        torch.testing.assert_close(formula, autograd, atol=1e-12, rtol=0)
        norms = gradflow.gradient_norms(lstm, x)
        kept[b_f] = float(formula.mean()), norms["grad_c"][0, 0, 9]         # dL/dc_10
    assert kept[1.0][0] > 1e-3 and kept[-3.0][0] < 1e-10
    assert kept[1.0][1] > 1e6 * kept[-3.0][1]


# ----------------------------------------------------------------------------- curves
def test_small_weights_vanish_geometrically():
    torch.manual_seed(0)
    rnn = orthogonal_recurrent_(lstmkit.RNN(I, 16, dtype=DT), gain=0.5)
    curve = gradflow.jacobian_norms(rnn, _x(T_=40))
    k = np.arange(41)
    assert np.all(curve <= 0.5 ** k * (1 + 1e-9))                      # ||prod|| <= ||W_hh||^k
    assert np.all(np.diff(curve) < 0)
    assert 0.3 < gradflow.geometric_rate(curve) < 0.5 + 1e-9


def test_exploding_demo_grows_and_clipping_keeps_direction():
    demo = gradflow.exploding_demo(hidden=32, length=60, scale=3.0, max_norm=1.0)
    norms = demo["grad_h"]
    assert norms.shape == (61,)
    assert demo["rate"] > 1.15
    assert norms[60] > 1e4 * norms[10] and norms[10] > norms[1]
    assert demo["total_norm"] > 1e3
    assert demo["clipped_norm"] <= 1.0 + 1e-9
    assert demo["clipped_norm"] == pytest.approx(1.0, rel=1e-9)
    assert demo["cosine"] == pytest.approx(1.0, abs=1e-12)


def test_gradient_norms_shapes_and_no_side_effects():
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, dtype=DT)
    g = gradflow.gradient_norms(lstm, _x())
    assert g["grad_h"].shape == g["grad_c"].shape == (2, 2, T)
    assert g["grad_h0"].shape == g["grad_c0"].shape == (2, 2)
    # top layer, forward: dL/dh_T = 1 for L = sum of the last output
    assert g["grad_h"][1, 0, T - 1] == pytest.approx(math.sqrt(H))
    assert all(p.grad is None for p in lstm.parameters())
    gru = lstmkit.GRU(I, H, batch_first=True, dtype=DT)
    g = gradflow.gradient_norms(gru, _x().transpose(0, 1), loss_fn=lambda out: out.pow(2).sum())
    assert g["grad_c"] is None and g["grad_h"].shape == (1, 1, T)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_jacobian_norms_against_a_reference_loop(kind):
    """dh_T/dh_{T-k} (c held fixed for the LSTM) from the reference cells' equations."""
    torch.manual_seed(0)
    layer = lstmkit.LSTM(I, H, dtype=DT) if kind == "lstm" else lstmkit.GRU(I, H, dtype=DT)
    w = [p.detach() for p in (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0,
                              layer.bias_hh_l0)]
    x = _x()
    curve = gradflow.jacobian_norms(layer, x)

    def step(x_t, h, c):
        if kind == "lstm":
            h, c, _ = lstm_step(x_t, h, c, *w)
            return h, c
        return gru_step(x_t, h, *w)[0], c

    for k in (1, 4, T):
        h = c = torch.zeros(B, H, dtype=DT)
        for s in range(T - k):
            h, c = step(x[s], h, c)

        def h_T(h_start, c_start=c, k=k):
            hh, cc = h_start, c_start
            for s in range(T - k, T):
                hh, cc = step(x[s], hh, cc)
            return hh

        J = torch.autograd.functional.jacobian(h_T, h)               # (B, H, B, H)
        J = torch.stack([J[b, :, b] for b in range(B)])
        assert curve[k] == pytest.approx(float(torch.linalg.matrix_norm(J, ord=2).mean()),
                                         rel=1e-9)


def test_compare_cells_and_table():
    result = gradflow.compare_cells(length=30, hidden=8, batch=4)
    assert set(result["cells"]) == {"rnn", "lstm", "gru"}
    assert set(result["cells"]["lstm"]) == {"grad_h", "grad_c", "jacobian"}
    for curves in result["cells"].values():
        for curve in curves.values():
            assert curve.shape == (31,) and np.all(np.isfinite(curve)) and np.all(curve > 0)
        assert curves["jacobian"][0] == pytest.approx(1.0)
        assert curves["jacobian"][30] < curves["jacobian"][1]       # default init: vanishing
    table = gradflow.format_table(result)
    lines = table.splitlines()
    assert lines[0] == "| cell | quantity | k=1 | k=10 | k=25 |"
    assert len(lines) == 2 + 2 + 3 + 2
    assert f"{result['cells']['rnn']['grad_h'][25]:.3g}" in lines[2]


def test_errors_are_plain():
    x = _x()
    with pytest.raises(ValueError, match="tanh"):
        gradflow.rnn_jacobian_product(lstmkit.RNN(I, H, nonlinearity="relu", dtype=DT), x, 0)
    with pytest.raises(ValueError, match="one-layer"):
        gradflow.jacobian_norms(lstmkit.GRU(I, H, num_layers=2, dtype=DT), x)
    with pytest.raises(ValueError, match="peephole"):
        gradflow.lstm_cell_path_product(lstmkit.LSTM(I, H, peephole=True, dtype=DT), x, 0)
    with pytest.raises(ValueError, match="t must be in"):
        gradflow.rnn_jacobian_product(lstmkit.RNN(I, H, dtype=DT), x, T + 1)
    with pytest.raises(TypeError, match="lstmkit.LSTM"):
        gradflow.lstm_cell_path_product(lstmkit.GRU(I, H, dtype=DT), x, 0)
    with pytest.raises(ValueError, match="unknown cells"):
        gradflow.compare_cells(cells=("lstm", "transformer"))


def test_trained_cells_measure_the_task_loss_gradient():
    """After training, the curves follow the task's own loss back; training changes them."""
    from lstmkit.analysis.gradflow import trained_cells

    trained = trained_cells(("rnn", "lstm"), length=12, hidden=8, steps=40, batch=16)
    assert set(trained["cells"]) == {"rnn", "lstm"} and set(trained["mse"]) == {"rnn", "lstm"}
    for name, curves in trained["cells"].items():
        assert curves["grad_h"].shape == (13,) and (curves["grad_h"] > 0).all()
        assert 0 < trained["mse"][name] < 1.0
    assert "grad_c" in trained["cells"]["lstm"] and "grad_c" not in trained["cells"]["rnn"]
    with pytest.raises(ValueError, match="unknown cells"):
        trained_cells(("transformer",), length=4, steps=1)
    untrained = trained_cells(("lstm",), length=12, hidden=8, steps=0, batch=16)
    assert untrained["mse"]["lstm"] != trained["mse"]["lstm"]
    assert not np.allclose(untrained["cells"]["lstm"]["jacobian"],
                           trained["cells"]["lstm"]["jacobian"])


# ----------------------------------------------------------------------------- after 2024
@pytest.mark.parametrize("cls", [lstmkit.minGRU, lstmkit.minLSTM])
def test_min_rnn_jacobian_is_the_product_of_its_decays(cls):
    """h_t = a_t h_(t-1) + b_t, a_t from x_t alone: dh_T/dh_t = diag(prod_{s=t+1..T} a_s), so
    its spectral norm is the largest product over the units."""
    torch.manual_seed(0)
    layer = cls(I, H, dtype=DT)
    x = _x()
    gates = layer.trace(x).steps[0][0].gates
    a = 1 - gates["z"] if cls is lstmkit.minGRU else gates["f"]             # (T, B, H)
    tail = torch.cat([torch.ones(1, B, H, dtype=DT), a.flip(0).cumprod(0)])   # k = 0..T
    expected = tail.amax(-1).mean(-1).numpy()
    np.testing.assert_allclose(gradflow.jacobian_norms(layer, x), expected, rtol=1e-10)


def test_mlstm_memory_gradient_is_the_product_of_forget_gates():
    """No h_(t-1) in step t: with the loss at step T only, dL/dC_t = f'_(t+1) dL/dC_(t+1) (one
    head, the stabilised forget gate), the mLSTM's dc_T/dc_t = prod f; and dL/dh_t = 0 before T.
    Its jacobian of h is refused by name."""
    torch.manual_seed(0)
    layer = lstmkit.mLSTM(I, 4, dtype=DT)
    x = _x()
    g = gradflow.gradient_norms(layer, x)
    assert g["grad_h0"] is None and g["grad_c"] is None
    assert (g["grad_h"][0, 0, :-1] == 0).all() and g["grad_h"][0, 0, -1] > 0
    trace = layer.trace(x)
    trace.output[-1].sum().backward()
    st = trace.steps[0][0]
    last = st.grad_states["C"][-1].flatten(1).norm(dim=-1)                   # (B,)
    f = st.gates["f"][..., 0]                                               # (T, B)
    decay = torch.cat([f[1:].flip(0).cumprod(0).flip(0), torch.ones(1, B, dtype=DT)])
    np.testing.assert_allclose(g["grad_C"][0, 0], (decay * last).mean(-1).numpy(), rtol=1e-10)
    assert g["grad_C0"][0, 0] > 0
    with pytest.raises(ValueError, match="does not enter step t"):
        gradflow.jacobian_norms(layer, x)
    with pytest.raises(ValueError, match="batched 3-D input"):
        gradflow.gradient_norms(layer, x[:, 0])


def test_compare_cells_takes_the_cells_after_2024():
    result = gradflow.compare_cells(("slstm", "mlstm", "mingru", "minlstm"), length=20,
                                    hidden=8, batch=4)
    assert set(result["cells"]["mlstm"]) == {"grad_C", "grad_n"}
    assert set(result["cells"]["mingru"]) == {"grad_h", "jacobian"}
    for curves in result["cells"].values():
        for curve in curves.values():
            assert curve.shape == (21,) and np.all(np.isfinite(curve)) and np.all(curve > 0)
    assert "| mlstm | mean norm dL/dC_{T-k} |" in gradflow.format_table(result)
    with pytest.raises(ValueError, match="unknown cells"):
        gradflow.compare_cells(("xlstm",))
