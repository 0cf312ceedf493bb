"""recurrent_dropout (Gal and Ghahramani 2016: one mask per sequence on the h_{t-1} the recurrent
products see) and zoneout (Krueger et al. 2017: each unit of h_t and c_t keeps its previous value
with probability z; the expectation in eval), on both hand-written engines (python and compiled):
equal to a loop written here from the equations on the masks the trace recorded, gradients by
float64 gradcheck with the masks fixed by a seed, the compiled engine equal to the python engine
on the same masks (float32 sizes that take its threaded and brgemm paths too), the reference walk
(double backward, torch.func) equal to the kernels, and bad values named."""

from __future__ import annotations

import contextlib
import copy
import json
import warnings

import pytest
import torch

from lstmkit import GRU, LSTM, RNN
from lstmkit.engine import compiled
from lstmkit.layers import Recurrent

I, H, T, B = 3, 4, 6, 3
DT = torch.float64
LENGTHS = torch.tensor([6, 4, 2])
ENGINES = ["python", "compiled"]


@contextlib.contextmanager
def on_engine(engine):
    """engine="compiled" must run compiled: skipped where the extension is unavailable, and a
    fall-back to the python engine (it warns) fails."""
    if engine == "compiled" and not compiled.available():
        pytest.skip("the compiled engine is unavailable")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def _step(layer, w, x, h, c, r):
    """One step from the equations; r the h_{t-1} the products see. Returns (h~, c~)."""
    Hs = layer.hidden_size
    if layer.family == "rnn":
        return torch.tanh(x @ w["ih"].T + w["bih"] + r @ w["hh"].T + w["bhh"]), None
    if layer.family == "gru":
        xr, xz, xn = (x @ w["ih"].T + w["bih"]).split(Hs, -1)
        if layer.reset_after:
            hr, hz, hn = (r @ w["hh"].T + w["bhh"]).split(Hs, -1)
            rg, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + rg * hn)
        else:
            W_rz, W_n = w["hh"][: 2 * Hs], w["hh"][2 * Hs :]
            hr, hz = (r @ W_rz.T + w["bhh"][: 2 * Hs]).split(Hs, -1)
            rg, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + (rg * r) @ W_n.T + w["bhh"][2 * Hs :])
        return (1 - z) * n + z * h, None
    a = x @ w["ih"].T + w["bih"] + r @ w["hh"].T + w["bhh"]
    i, f, g, o = a.split(Hs, -1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g
    m = o * torch.tanh(c_new)
    return (m @ w["hr"].T if "hr" in w else m), c_new


def _by_hand(layer, x, lengths, masks):
    """The layer written out: layers, directions, variable lengths (a sequence's reverse pass
    starts at its last step), masks[k] in the engine's processing order."""
    D = layer.num_directions
    P = layer.proj_size or layer.hidden_size
    out = x
    finals = {"h": [], "c": []}
    for layer_index in range(layer.num_layers):
        outs = []
        for d in range(D):
            k = layer_index * D + d
            sfx = f"_l{layer_index}" + ("_reverse" if d else "")
            w = {"ih": getattr(layer, "weight_ih" + sfx), "hh": getattr(layer, "weight_hh" + sfx),
                 "bih": getattr(layer, "bias_ih" + sfx), "bhh": getattr(layer, "bias_hh" + sfx)}
            if layer.proj_size:
                w["hr"] = getattr(layer, "weight_hr" + sfx)
            h = x.new_zeros(B, P)
            c = x.new_zeros(B, layer.hidden_size)
            m_h = masks["h"][k] if "h" in masks else torch.ones_like(h)
            zone = masks.get("zone", [None] * (k + 1))[k] or (None, None)
            steps = range(T - 1, -1, -1) if d else range(T)
            y = [None] * T
            for t in steps:
                s = T - 1 - t if d else t                           # processing step
                active = (t < lengths).unsqueeze(1)
                h_new, c_new = _step(layer, w, out[t], h, c, m_h * h)
                if zone[0] is not None:
                    h_new = h_new + zone[0][s] * (h - h_new)
                if c_new is not None and zone[1] is not None:
                    c_new = c_new + zone[1][s] * (c - c_new)
                h = torch.where(active, h_new, h)
                if c_new is not None:
                    c = torch.where(active, c_new, c)
                y[t] = torch.where(active, h, torch.zeros_like(h))
            outs.append(torch.stack(y))
            finals["h"].append(h)
            finals["c"].append(c)
        out = torch.cat(outs, -1)
    return out, torch.stack(finals["h"]), torch.stack(finals["c"])


CASES = {
    "lstm": lambda **kw: LSTM(I, H, 2, bidirectional=True, zoneout=(0.3, 0.2), **kw),
    "lstm-proj": lambda **kw: LSTM(I, H, proj_size=2, zoneout=(0.0, 0.4), **kw),
    "gru": lambda **kw: GRU(I, H, 2, bidirectional=True, zoneout=0.3, **kw),
    "gru-cho": lambda **kw: GRU(I, H, reset_after=False, zoneout=0.25, **kw),
    "rnn": lambda **kw: RNN(I, H, bidirectional=True, zoneout=0.2, **kw),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("which", ["recurrent_dropout", "zoneout", "both"])
def test_a_training_call_equals_the_equations_on_its_masks(case, which, engine):
    torch.manual_seed(0)
    layer = CASES[case](recurrent_dropout=0.4, dtype=DT, engine=engine)
    if which == "recurrent_dropout":
        layer._zone = (0.0,) * len(layer._zone)
    elif which == "zoneout":
        layer.recurrent_dropout = 0.0
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    with on_engine(engine):
        trace = layer.trace(x, lengths=LENGTHS)
    masks = trace.masks
    assert ("h" in masks) == (which != "zoneout")
    assert ("zone" in masks) == (which != "recurrent_dropout")
    for m in masks.get("h", []):             # one mask per sequence, kept units scaled
        assert m.shape == (B, layer.proj_size or H)
        assert set(m.unique().tolist()) <= {0.0, 1 / 0.6}
    for zone in masks.get("zone", []):
        for d in zone:
            if d is not None:               # a fresh 0/1 mask at every step
                assert d.shape[0] == T and set(d.unique().tolist()) <= {0.0, 1.0}
    out, h_n, c_n = _by_hand(layer, x, LENGTHS, masks)
    torch.testing.assert_close(trace.output, out)
    torch.testing.assert_close(trace.h_n, h_n)
    if trace.c_n is not None:
        torch.testing.assert_close(trace.c_n, c_n)
    # gradients: the hand-written BPTT against autograd through the loop above
    weights = list(layer.parameters())
    probe = torch.randn_like(out)
    with on_engine(engine):
        got = torch.autograd.grad((trace.output * probe).sum() + trace.h_n.sum(), [x, *weights])
    want = torch.autograd.grad((out * probe).sum() + h_n.sum(), [x, *weights])
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("engine", ENGINES)
def test_eval_takes_zoneouts_expectation_and_no_recurrent_dropout(engine):
    torch.manual_seed(1)
    layer = LSTM(I, H, 2, bidirectional=True, zoneout=(0.3, 0.1), recurrent_dropout=0.5,
                 dtype=DT, engine=engine).eval()
    x = torch.randn(T, B, I, dtype=DT)
    zone = [(torch.full((T, B, H), 0.1, dtype=DT), torch.full((T, B, H), 0.3, dtype=DT))] * 4
    out, h_n, c_n = _by_hand(layer, x, LENGTHS, {"zone": zone})
    with on_engine(engine):
        got, (h, c) = layer(x, lengths=LENGTHS)
        torch.testing.assert_close(got, out)
        torch.testing.assert_close(c, c_n)
        assert set(layer.trace(x).masks) == {"zone"}
        # the same call twice: no randomness in eval
        torch.testing.assert_close(layer(x)[0], layer(x)[0])


CELLS = ["lstm", "lstm-proj", "gru", "gru-cho", "rnn", "lstm-ln", "gru-ln", "peephole",
         "coupled"]


def _layer(cell, engine, **kw):
    """Recurrent of cell ("lstm-proj": the LSTM with proj_size=2) with both regularisers."""
    two = cell in ("lstm", "lstm-proj", "lstm-ln", "peephole", "coupled")
    proj = {"proj_size": 2} if cell == "lstm-proj" else {}
    kw = {"recurrent_dropout": 0.3, "zoneout": (0.3, 0.2) if two else 0.3, "dtype": DT, **kw}
    return Recurrent(kw.pop("input_size", I), kw.pop("hidden_size", H), kw.pop("num_layers", 1),
                     bidirectional=True, cell="lstm" if cell == "lstm-proj" else cell,
                     engine=engine, **proj, **kw)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_with_the_masks_fixed_by_a_seed(cell, engine):
    torch.manual_seed(2)
    layer = _layer(cell, engine)
    names = [n for n, _ in layer.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(4, B, I, dtype=DT, requires_grad=True)
    lengths = torch.tensor([4, 3, 1])

    def run(x, *weights):
        torch.manual_seed(7)                      # the same masks at every evaluation
        out, hidden = torch.func.functional_call(layer, dict(zip(names, weights)), (x,),
                                                 {"lengths": lengths})
        return (out, *(hidden if isinstance(hidden, tuple) else (hidden,)))

    with on_engine(engine):
        assert torch.autograd.gradcheck(run, (x, *leaves))
        layer.eval()                              # the expectation form, differentiated too
        assert torch.autograd.gradcheck(run, (x, *leaves))


def _call(layer, x, lengths, seed=5):
    """Output, final states and every gradient of one call, the masks drawn from seed."""
    torch.manual_seed(seed)
    out, hidden = layer(x, lengths=lengths)
    hidden = hidden if isinstance(hidden, tuple) else (hidden,)
    probe = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * probe).sum() + sum(h.pow(2).sum() for h in hidden)
    if not layer.training:
        return [out, *hidden]
    return [out, *hidden, *torch.autograd.grad(loss, [x, *layer.parameters()])]


SIZES = {   # (T, B, I, H, dtype): float64, and float32 at a size that takes the compiled
    # engine's brgemm steps and (on two threads or more) its row groups
    "small-f64": (6, 3, 3, 5, torch.float64),
    "large-f32": (20, 32, 16, 64, torch.float32),
}


def _rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _assert_near(got, want, exact=None):
    """float64: elementwise. float32: both engines within 1e-3 of the norm of the float64 result
    on the same masks (exact). The engines sum in other orders and the LayerNorm LSTM's float32
    gradients amplify that (1e-5 to 1e-4 of their norm here, masks or none); a mask applied
    wrongly moves a result by its own size."""
    if want.dtype == torch.float64:
        torch.testing.assert_close(got, want)
        return
    for engine, result in (("compiled", got), ("python", want)):
        err = _rel(result, exact)
        assert err < 1e-3, f"{engine}: relative error {err:.2e} from float64"


def _exact_on_the_same_masks(layer, x, lengths):
    """The float64 python engine's _call on the masks the last call of layer drew."""
    masks = layer._drawn
    exact = copy.deepcopy(layer).double()
    exact.engine = "python"
    cast = lambda m: None if m is None else m.double()  # noqa: E731
    exact._draw_masks = lambda *args: masks and {   # noqa: E731
        k: [tuple(map(cast, v)) if isinstance(v, tuple) else cast(v) for v in vs]
        for k, vs in masks.items()}
    return _call(exact, x.detach().double().requires_grad_(), lengths)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("which", ["recurrent_dropout", "zoneout", "both"])
def test_compiled_equals_python_on_the_same_masks(cell, which, size):
    """Outputs, final states and all gradients, two layers, bidirectional, with and without
    lengths, training and evaluation."""
    T_, B_, I_, H_, dt = SIZES[size]
    kw = {"dtype": dt, "input_size": I_, "hidden_size": H_, "num_layers": 2}
    if which == "zoneout":
        kw["recurrent_dropout"] = 0.0
    elif which == "recurrent_dropout":
        kw["zoneout"] = 0.0
    torch.manual_seed(3)
    x = torch.randn(T_, B_, I_, dtype=dt, requires_grad=True)
    lengths = torch.sort(torch.randint(1, T_ + 1, (B_,)), descending=True).values
    lengths[0] = T_
    threads = torch.get_num_threads()
    torch.set_num_threads(2)                       # row groups need two threads or more
    try:
        for training in (True, False):
            for L in (None, lengths):
                got = []
                for engine in ENGINES:
                    torch.manual_seed(4)
                    layer = _layer(cell, engine, **kw).train(training)
                    draw = layer._draw_masks
                    layer._draw_masks = lambda *a, layer=layer, draw=draw: \
                        setattr(layer, "_drawn", draw(*a)) or layer._drawn
                    with on_engine(engine):
                        got.append(_call(layer, x, L))
                exact = [None] * len(got[0])
                if dt == torch.float32:
                    exact = _exact_on_the_same_masks(layer, x, L)
                for a, b, e in zip(*got, exact):
                    _assert_near(b, a, e)
    finally:
        torch.set_num_threads(threads)


def test_the_reference_walk_takes_the_masks():
    """Double backward and torch.func differentiate the reference walk: with the masks it must
    give the kernels' first derivatives."""
    torch.manual_seed(3)
    layer = GRU(I, H, zoneout=0.3, recurrent_dropout=0.3, dtype=DT)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)

    def loss(x):
        torch.manual_seed(5)
        return layer(x)[0].pow(2).sum()

    (kernels,) = torch.autograd.grad(loss(x), x)
    (graph,) = torch.autograd.grad(loss(x), x, create_graph=True)
    torch.testing.assert_close(graph, kernels)
    torch.testing.assert_close(torch.func.grad(loss)(x), kernels)
    (second,) = torch.autograd.grad(graph.sum(), x)
    assert torch.isfinite(second).all() and second.abs().sum() > 0


def test_zoneout_one_keeps_nothing_new_and_zero_is_the_plain_layer():
    torch.manual_seed(4)
    plain = LSTM(I, H, dtype=DT)
    zoned = LSTM(I, H, dtype=DT, zoneout=(0.0, 0.0), recurrent_dropout=0.0)
    zoned.load_state_dict(plain.state_dict())
    x = torch.randn(T, B, I, dtype=DT)
    torch.testing.assert_close(zoned(x)[0], plain(x)[0])
    near_one = LSTM(I, H, dtype=DT, zoneout=(0.999999, 0.999999)).eval()
    assert near_one(x)[0].abs().max() < 1e-4          # the states barely leave h_0 = c_0 = 0


def test_bad_values_are_named():
    with pytest.raises(ValueError, match=r"recurrent_dropout must be in \[0, 1\), got 1"):
        LSTM(I, H, recurrent_dropout=1.0)
    with pytest.raises(ValueError, match=r"zoneout must be in \[0, 1\), got -0.1"):
        RNN(I, H, zoneout=-0.1)
    with pytest.raises(ValueError, match=r"only state is h: give zoneout=z_h"):
        GRU(I, H, zoneout=(0.1, 0.2))
    with pytest.raises(ValueError, match=r"a number or a pair \(z_c, z_h\)"):
        LSTM(I, H, zoneout=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match=r"zoneout z_c must be in \[0, 1\)"):
        LSTM(I, H, zoneout=(1.5, 0.2))
    with pytest.raises(TypeError, match="zoneout should be a number"):
        LSTM(I, H, zoneout="0.1")
    with pytest.raises(ValueError, match="engine='torch'.*zoneout"):
        LSTM(I, H, zoneout=0.1, engine="torch")
    assert "zoneout=(0.1, 0.2)" in repr(LSTM(I, H, zoneout=(0.1, 0.2)))
    assert "recurrent_dropout=0.3" in repr(GRU(I, H, recurrent_dropout=0.3))


def test_compile_and_export_refuse_rather_than_dropping_the_masks():
    layer = LSTM(I, H, zoneout=0.2).eval()
    with pytest.raises(Exception, match="recurrent_dropout and zoneout run in eager mode only"):
        torch.export.export(layer, (torch.randn(T, B, I),))
    training = GRU(I, H, recurrent_dropout=0.2)
    with pytest.raises(Exception, match="recurrent_dropout and zoneout run in eager mode only"):
        torch.compile(training)(torch.randn(T, B, I))


def test_the_cli_takes_them_and_saves_them(tmp_path):
    from lstmkit.cli import load_run, main

    run = tmp_path / "run"
    main(["train", "adding", "--out", str(run), "--length", "8", "--epochs", "1",
          "--steps-per-epoch", "3", "--hidden", "8", "--recurrent-dropout", "0.25",
          "--zoneout", "0.1,0.05"])
    config = json.loads((run / "config.json").read_text())
    assert config["recurrent_dropout"] == 0.25 and config["zoneout"] == [0.1, 0.05]
    _, _, model = load_run(str(run))
    assert model.rnn.recurrent_dropout == 0.25 and model.rnn._zone == (0.05, 0.1)


def test_onnx_export_runs_zoneout_and_recurrent_dropout_in_eval(tmp_path):
    """Zoneout in evaluation (each state the expectation z s_{t-1} + (1 - z) s~_t) exports as a
    Scan over the cell's step; recurrent dropout is off in evaluation (the plain ONNX GRU).
    onnxruntime equals the layer, outputs and final states, at another length and batch than
    the export example's, and with lengths."""
    ort = pytest.importorskip("onnxruntime")
    from lstmkit import export_onnx

    torch.manual_seed(0)
    example = torch.randn(T, B, I)
    x = torch.randn(T + 3, B + 2, I)
    for n, layer in enumerate((LSTM(I, H, zoneout=(0.1, 0.0)),
                               GRU(I, H, zoneout=0.2, num_layers=2, bidirectional=True),
                               RNN(I, H, zoneout=0.3, batch_first=True),
                               LSTM(I, H, layer_norm=True, zoneout=(0.3, 0.2)),
                               LSTM(I, H, zoneout=(0.3, 0.2), proj_size=2, peephole=True),
                               GRU(I, H, recurrent_dropout=0.5))):
        layer.eval()
        xs = x.transpose(0, 1) if layer.batch_first else x
        path = export_onnx(layer, tmp_path / f"m{n}.onnx",
                           example.transpose(0, 1) if layer.batch_first else example)
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"input": xs.numpy()})
        with torch.no_grad():
            out, state = layer(xs)
        expected = [out, *(state if isinstance(state, tuple) else (state,))]
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            torch.testing.assert_close(torch.from_numpy(g), e, atol=1e-5, rtol=0)


def test_onnx_export_of_zoneout_with_lengths(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from test_onnx_xlstm import WithLengths

    from lstmkit import export_onnx

    torch.manual_seed(0)
    model = WithLengths(LSTM(I, H, zoneout=(0.2, 0.1), bidirectional=True)).eval()
    x = torch.randn(T, B, I)
    path = export_onnx(model, tmp_path / "m.onnx", (x, LENGTHS))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, dict(zip(names, (x.numpy(), LENGTHS.numpy()))))
    with torch.no_grad():
        out, (h, c) = model(x, LENGTHS)
    for g, e in zip(got, (out, h, c)):
        torch.testing.assert_close(torch.from_numpy(g), e, atol=1e-5, rtol=0)


def test_auto_runs_them_compiled():
    """engine="auto" sends a call with the masks to the compiled engine where it can run."""
    if not compiled.available():
        pytest.skip("the compiled engine is unavailable")
    x = torch.randn(T, B, I)
    for layer in (LSTM(I, H, zoneout=0.1), GRU(I, H, recurrent_dropout=0.2),
                  LSTM(I, H, recurrent_dropout=0.2).eval()):
        assert layer._engine_for(False, x, T, False) == "compiled"
        assert layer._engine_for(True, x, T, False) == "compiled"     # traces too
