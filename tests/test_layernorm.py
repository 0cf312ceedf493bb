"""LayerNorm LSTM and GRU ("lstm-ln", "gru-ln"): the layers against an independent autograd
implementation (torch.nn.functional.layer_norm, one loop per sequence), gradcheck of every input
and parameter, the trace, the parameters' initial values and training from the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from lstmkit.layers import Recurrent, make_layer

D64 = torch.float64
CELLS = ("lstm-ln", "gru-ln")


def lstm_ln_step(p, x, h, c):
    H = h.shape[-1]
    a = F.layer_norm(p("weight_ih") @ x, (4 * H,), p("ln_ih_weight"), p("bias_ih")) \
        + F.layer_norm(p("weight_hh") @ h, (4 * H,), p("ln_hh_weight"), p("bias_hh"))
    i, f, g, o = a.chunk(4)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    n = F.layer_norm(c, (H,), p("ln_c_weight"), p("ln_c_bias"))
    return torch.sigmoid(o) * torch.tanh(n), c


def gru_ln_step(p, x, h, _):
    H = h.shape[-1]
    a_r, a_z, a_n = F.layer_norm(p("weight_ih") @ x, (3 * H,), p("ln_ih_weight"),
                                 p("bias_ih")).chunk(3)
    e_r, e_z, e_n = F.layer_norm(p("weight_hh") @ h, (3 * H,), p("ln_hh_weight"),
                                 p("bias_hh")).chunk(3)
    r, z = torch.sigmoid(a_r + e_r), torch.sigmoid(a_z + e_z)
    n = torch.tanh(a_n + r * e_n)
    return (1 - z) * n + z * h, None


def independent(layer, x, h0, c0, lengths):
    """The layer written out: each sequence alone, each layer and direction a loop over its
    steps. x (T, B, I); returns output (T, B, D*H) zero past each length, h_n, c_n."""
    step = lstm_ln_step if layer.cell_name == "lstm-ln" else gru_ln_step
    T, B, _ = x.shape
    D = 2 if layer.bidirectional else 1
    outputs, h_n, c_n = [], [[None] * B for _ in h0], [[None] * B for _ in h0]
    for b in range(B):
        seq = x[: lengths[b], b]
        for k in range(layer.num_layers):
            results = []
            for d in range(D):
                sfx = f"_l{k}" + ("_reverse" if d else "")

                def p(name, sfx=sfx):
                    return getattr(layer, name + sfx, None)

                s = k * D + d
                h, c, ys = h0[s, b], c0[s, b], []
                for xt in (seq.flip(0) if d else seq):
                    h, c = step(p, xt, h, c)
                    ys.append(h)
                ys = torch.stack(ys)
                results.append(ys.flip(0) if d else ys)
                h_n[s][b], c_n[s][b] = h, c
            seq = torch.cat(results, -1)
        outputs.append(torch.cat([seq, seq.new_zeros(T - lengths[b], seq.shape[-1])]))
    stack = lambda rows: torch.stack([torch.stack(r) for r in rows])  # noqa: E731
    return torch.stack(outputs, 1), stack(h_n), (stack(c_n) if step is lstm_ln_step else None)


def randomised(layer):
    """Every parameter away from its initial value, the gains around 1."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "ln_" in name and "weight" in name else 0))
    return layer


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_the_layer_equals_an_independent_implementation(cell, bias):
    torch.manual_seed(0)
    layer = randomised(Recurrent(3, 4, num_layers=2, bidirectional=True, bias=bias, cell=cell,
                                 dtype=D64))
    x = torch.randn(6, 3, 3, dtype=D64, requires_grad=True)
    h0, c0 = torch.randn(4, 3, 4, dtype=D64), torch.randn(4, 3, 4, dtype=D64)
    lengths = [6, 4, 1]
    hx = (h0, c0) if cell == "lstm-ln" else h0
    out, states = layer(x, hx, lengths=lengths)
    want_out, want_h, want_c = independent(layer, x, h0, c0, lengths)
    torch.testing.assert_close(out, want_out)
    if cell == "lstm-ln":
        torch.testing.assert_close(states[0], want_h)
        torch.testing.assert_close(states[1], want_c)
    else:
        torch.testing.assert_close(states, want_h)
    # and the gradients of every parameter and of x, against autograd's through the loops
    weight = torch.randn_like(out)
    params = [x, *layer.parameters()]
    got = torch.autograd.grad((out * weight).sum(), params)
    want = torch.autograd.grad((want_out * weight).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_of_inputs_states_and_every_parameter(cell):
    torch.manual_seed(1)
    layer = randomised(Recurrent(2, 3, num_layers=2, bidirectional=True, cell=cell, dtype=D64))
    x = torch.randn(4, 3, 2, dtype=D64, requires_grad=True)
    states = [torch.randn(4, 3, 3, dtype=D64, requires_grad=True)
              for _ in layer.cell.state_sizes]
    names = [n for n, _ in layer.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    k = len(states)

    def functional(x, *args):
        hx = tuple(args[:k]) if k == 2 else args[0]
        out, hn = torch.func.functional_call(layer, dict(zip(names, args[k:])), (x, hx),
                                             {"lengths": [4, 3, 1]})
        return (out, *hn) if k == 2 else (out, hn)

    assert torch.autograd.gradcheck(functional, (x, *states, *leaves))


def test_the_parameters_start_as_layer_norm_does():
    layer = Recurrent(3, 5, cell="lstm-ln", bidirectional=True)
    bound = 1 / math.sqrt(5)
    for name, p in layer.named_parameters():
        if name.startswith("ln_c_bias"):
            assert (p == 0).all() and p.shape == (5,)
        elif name.startswith("ln_"):
            assert (p == 1).all() and p.shape == ((5,) if "_c_" in name else (20,))
        else:
            assert p.abs().max() <= bound
    names = dict(Recurrent(3, 5, cell="gru-ln").named_parameters())
    assert names["ln_ih_weight_l0"].shape == names["ln_hh_weight_l0"].shape == (15,)


def test_the_trace_shows_the_gates_and_the_unnormalised_cell_state():
    torch.manual_seed(3)
    layer = randomised(make_layer("lstm-ln", 3, 4, dtype=D64))
    x = torch.randn(5, 2, 3, dtype=D64, requires_grad=True)
    trace = layer.trace(x)
    step = trace.steps[0][0]
    assert set(step.gates) == {"i", "f", "g", "o"}
    for gate in "ifo":
        assert ((step.gates[gate] > 0) & (step.gates[gate] < 1)).all()
    # h_t = o_t * tanh(LN(c_t)): c_t itself is not normalised
    n = F.layer_norm(step.c, (4,), layer.ln_c_weight_l0, layer.ln_c_bias_l0)
    torch.testing.assert_close(step.h, step.gates["o"] * torch.tanh(n))
    assert step.c.std(-1).sub(1).abs().max() > 0.1
    torch.testing.assert_close(step.h, trace.output)
    trace.output.sum().backward()
    assert step.grad_h.shape == (5, 2, 4) and step.grad_c.shape == (5, 2, 4)
    gru = make_layer("gru-ln", 3, 4, dtype=D64).trace(x).steps[0][0]
    assert set(gru.gates) == {"r", "z", "n"} and gru.c is None


@pytest.mark.parametrize("cell", CELLS)
def test_eval_equals_train(cell):
    torch.manual_seed(4)
    layer = randomised(make_layer(cell, 3, 4, num_layers=2, dtype=D64))
    x = torch.randn(5, 2, 3, dtype=D64)
    out_train = layer.train()(x)[0]
    torch.testing.assert_close(layer.eval()(x)[0], out_train, rtol=0, atol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_trains_from_the_cli(cell, tmp_path, capsys):
    from lstmkit.cli import main

    run = tmp_path / "run"
    main(["train", "adding", "--cell", cell, "--out", str(run), "--length", "8", "--epochs", "2",
          "--steps-per-epoch", "5", "--hidden", "8", "--batch-size", "16"])
    assert json.loads((run / "config.json").read_text())["cell"] == cell
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["valid"]["loss"] for r in rows if "valid" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert losses[1] < losses[0]                 # the CLI's fixed seed: the same run every time
    assert (run / "model.safetensors").exists()
    main(["evaluate", str(run)])
    assert "MSE" in capsys.readouterr().out


def test_the_layer_norm_keyword_runs_the_layernorm_cells():
    """LSTM(layer_norm=True) and GRU(layer_norm=True) are the registered LayerNorm cells in
    torch's layer classes; what they cannot combine with, and what has no torch.nn form, is named.
    (Their ONNX form is checked in tests/test_onnx_xlstm.py.)"""
    import copy

    from lstmkit import GRU, LSTM, RNN
    from lstmkit.layers import make_layer

    torch.manual_seed(0)
    for cls, cell in ((LSTM, "lstm-ln"), (GRU, "gru-ln")):
        layer = cls(3, 4, 2, layer_norm=True, bidirectional=True, dtype=torch.float64)
        twin = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
        twin.load_state_dict(copy.deepcopy(layer.state_dict()))
        x = torch.randn(5, 2, 3, dtype=torch.float64)
        torch.testing.assert_close(layer(x)[0], twin(x)[0])
        assert "layer_norm=True" in repr(layer)
        with pytest.raises(ValueError, match="has no torch.nn form"):
            layer.to_torch()
    with pytest.raises(ValueError, match="layer_norm=True has no peephole"):
        LSTM(3, 4, layer_norm=True, peephole=True)
    with pytest.raises(ValueError, match="reset_after=True"):
        GRU(3, 4, layer_norm=True, reset_after=False)
    with pytest.raises(ValueError, match="layer_norm is for the cells lstm and gru, got 'rnn'"):
        make_layer("rnn", 3, 4, layer_norm=True)
    with pytest.raises(ValueError, match="engine='torch'"):
        LSTM(3, 4, layer_norm=True, engine="torch")
    assert isinstance(make_layer("rnn", 3, 4, layer_norm=False), RNN)


def test_the_cli_takes_layer_norm(tmp_path):
    import json

    from lstmkit.cli import load_run, main

    run = tmp_path / "run"
    main(["train", "adding", "--out", str(run), "--length", "8", "--epochs", "1",
          "--steps-per-epoch", "3", "--hidden", "8", "--cell", "gru", "--layer-norm"])
    assert json.loads((run / "config.json").read_text())["layer_norm"] is True
    _, _, model = load_run(str(run))
    assert model.rnn.layer_norm and type(model.rnn.cell).__name__ == "LayerNormGRUCellMath"


# ------------------------------------------------------------------ the compiled engine
LAYERS = {"lstm-ln": "LSTM", "gru-ln": "GRU"}
LENGTHS = [3, 6, 1, 4]
LONG_LENGTHS = [20, 13, 2, 17, 20, 9, 1, 20, 5, 11, 20, 16, 3, 8, 20, 14, 19, 7]


def _engines(cell, dtype, **kw):
    """LSTM / GRU(layer_norm=True) twice, engine="python" and engine="compiled", with the same
    randomised weights (the gains around 1); float32 layers take the float64 ones' weights."""
    import lstmkit

    cls = getattr(lstmkit, LAYERS[cell])
    torch.manual_seed(5)
    python = cls(3, 5, 2, bidirectional=True, layer_norm=True, dtype=D64, engine="python", **kw)
    with torch.no_grad():
        for name, p in python.named_parameters():
            p.uniform_(-0.6, 0.6).add_(1.0 if "ln_" in name and "weight" in name else 0)
    comp = cls(3, 5, 2, bidirectional=True, layer_norm=True, dtype=dtype, engine="compiled", **kw)
    python.to(dtype)
    comp.load_state_dict(python.state_dict())
    return python, comp


def _outputs_and_grads(layer, x, states, mode, lengths):
    """Output, final states and the gradients of x, the initial states and every parameter, of
    a loss on the output and the final states."""
    from torch.nn.utils.rnn import pack_padded_sequence

    x = x.clone().requires_grad_()
    states = [s.clone().requires_grad_() for s in states]
    hx = tuple(states) if len(states) == 2 else states[0]
    if mode == "packed":
        out, hn = layer(pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False), hx)
        out = out.data
    else:
        out, hn = layer(x, hx, lengths=sorted(lengths, reverse=True))
    hn = list(hn) if isinstance(hn, tuple) else [hn]
    gen = torch.Generator().manual_seed(3)            # the same weights in either dtype
    weight = lambda t: torch.randn(t.shape, generator=gen).to(t.dtype)  # noqa: E731
    loss = (out * weight(out)).sum()
    for s in hn:
        loss = loss + (s.sin() * weight(s)).sum()
    names = [n for n, _ in layer.named_parameters()]
    grads = torch.autograd.grad(loss, [x, *states, *layer.parameters()])
    return {"output": out, **{f"final state {i}": s for i, s in enumerate(hn)},
            **dict(zip(["x", *(f"initial state {i}" for i in range(len(states))), *names],
                       grads))}


def _compare(cell, mode, lengths, B, slack=2, **kw):
    """The compiled engine against the python engine: every result (``_outputs_and_grads``).

    float64: equal to 1e-10 (and 1e-12 relative: over 20 steps the gradients reach ~1000).
    float32: the gradients through the normalisations reach 10-500 and either engine's own
    rounding puts it 1e-5 to 3e-3 from the float64 result, cancellations making single entries
    differ by more than 1e-5 between the engines; so each float32 result is held to the float64
    one, the compiled engine no further from it than slack times the python engine's distance
    plus 1e-5 of the result's largest entry (a wrong row or step is off by its whole size)."""
    python, comp = _engines(cell, D64, **kw)
    x = torch.randn(max(lengths), B, 3, dtype=D64)
    states = [torch.randn(4, B, 5, dtype=D64) for _ in python.cell.state_sizes]
    want = _outputs_and_grads(python, x, states, mode, lengths)
    got = _outputs_and_grads(comp, x, states, mode, lengths)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-10, rtol=1e-12,
                                   msg=lambda m, name=name: f"{name}: {m}")
    python32, comp32 = _engines(cell, torch.float32, **kw)
    x32, states32 = x.float(), [s.float() for s in states]
    python_err = _outputs_and_grads(python32, x32, states32, mode, lengths)
    comp_err = _outputs_and_grads(comp32, x32, states32, mode, lengths)
    for name, truth in want.items():
        python_dist = (python_err[name].double() - truth).abs().max()
        comp_dist = (comp_err[name].double() - truth).abs().max()
        assert comp_dist <= slack * python_dist + 1e-5 * truth.abs().max(), \
            f"{name}: compiled {comp_dist:.3g} from float64, python {python_dist:.3g}"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("mode", ["lengths", "packed"])
def test_compiled_engine_equals_python_engine(ext, cell, bias, mode):
    """Outputs, final states and every gradient (x, initial states, each parameter), two
    bidirectional layers over sequences of several lengths, float64 and float32."""
    _compare(cell, mode, LENGTHS, 4, bias=bias)


@pytest.mark.parametrize("cell", CELLS)
def test_compiled_engine_equals_python_engine_long_and_wide(ext, cell):
    """20 steps (the engine copies W_hh^T from 16 on) and 18 rows: in float32 the compiled
    engine's brgemm steps split the rows over threads (2 or more). The LSTM's float32 rounding
    grows over the 20 steps to 1e-4-1e-3 of the largest gradient in either engine, the two
    apart by up to 10x on six seeds (either one ahead): slack 12."""
    _compare(cell, "packed", LONG_LENGTHS, 18, slack=12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_gradcheck_through_the_compiled_engine(ext, cell, packed):
    """Finite differences in float64 w.r.t. x, the initial states and every parameter, through
    two bidirectional layers on the compiled engine (packed: rows joining late in reverse)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    _, layer = _engines(cell, D64)
    x = torch.randn(4, 3, 3, dtype=D64, requires_grad=True)
    states = [torch.randn(4, 3, 5, dtype=D64, requires_grad=True)
              for _ in layer.cell.state_sizes]
    names = [n for n, _ in layer.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    k = len(states)

    def functional(x, *args):
        hx = tuple(args[:k]) if k == 2 else args[0]
        inp = pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=False) \
            if packed else x
        out, hn = torch.func.functional_call(layer, dict(zip(names, args[k:])), (inp, hx))
        out = out.data if packed else out
        return (out, *hn) if k == 2 else (out, hn)

    assert torch.autograd.gradcheck(functional, (x, *states, *leaves), eps=1e-6, atol=1e-7,
                                    rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_the_trace_on_the_compiled_engine_equals_the_python_engine(ext, cell):
    python, comp = _engines(cell, D64)
    x = torch.randn(6, 4, 3, dtype=D64)
    traces = []
    for layer in (python, comp):
        trace = layer.trace(x, lengths=[6, 4, 3, 1])
        (trace.output.pow(2).sum() + trace.h_n.sin().sum()).backward()
        traces.append(trace)
    a, b = traces
    torch.testing.assert_close(b.output, a.output, atol=1e-10, rtol=0)
    for layer in range(2):
        for d in range(2):
            sa, sb = a.steps[layer][d], b.steps[layer][d]
            for what in ("h", "c", "grad_h", "grad_c"):
                u, v = getattr(sa, what), getattr(sb, what)
                assert (u is None) == (v is None) == (cell == "gru-ln" and what.endswith("c"))
                if u is not None:
                    torch.testing.assert_close(v, u, atol=1e-10, rtol=0, msg=what)
            assert sa.gates.keys() == sb.gates.keys()
            for name in sa.gates:
                torch.testing.assert_close(sb.gates[name], sa.gates[name], atol=1e-10, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_auto_runs_the_layernorm_cells_compiled(ext, cell):
    """engine="auto" takes the compiled engine for layer_norm=True, as for the GRU; a trace
    too."""
    _, layer = _engines(cell, torch.float32)
    layer.engine = "auto"
    x = torch.randn(20, 4, 3, requires_grad=True)
    assert layer._engine_for(False, x, 20, False) == "compiled"
    assert layer._engine_for(True, x, 20, True) == "compiled"
    assert make_layer(cell, 3, 4)._engine_for(False, x, 20, False) == "compiled"
