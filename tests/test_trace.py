"""layer.trace(): every recorded state, gate and per-step gradient against an autograd loop over
single steps (tests/reference_cells.py, with retain_grad() on each h_t and c_t)."""

import pathlib
import sys
import zlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from reference_cells import length_mask, run_layer, weighted_loss  # noqa: E402

DT = torch.float64
T, B, I, H, P = 5, 3, 3, 4, 2
ATOL = 1e-10
SORTED_LENGTHS = (5, 3, 2)
GATE_NAMES = {"lstm": {"i", "f", "g", "o"}, "gru": {"r", "z", "n"}, "rnn": set()}


def _seed(*parts) -> None:
    torch.manual_seed(zlib.crc32(repr(parts).encode()))


def _perturb(module, scale: float = 0.6) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-scale, scale)


def _close(got, want, what):
    assert got is not None, f"{what}: trace gave None"
    assert want is not None, f"{what}: reference gave None"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=lambda m: f"{what}: {m}")


def _initial(kind, layers, D, out_size, batch=B):
    h0 = torch.randn(layers * D, batch, out_size, dtype=DT, requires_grad=True)
    if kind != "lstm":
        return h0, [h0]
    c0 = torch.randn(layers * D, batch, H, dtype=DT, requires_grad=True)
    return (h0, c0), [h0, c0]


def _kind(module) -> str:
    return type(module).__name__.lower()


def _compare_steps(trace, records, kind, lengths, T_, B_, check_grads=True):
    """Each layer and direction of trace.steps against the reference records (masked past
    each sequence's length, where the trace gives zero)."""
    mask = length_mask(lengths, T_, B_)
    assert len(trace.steps) == len(records)
    for layer, (steps, recs) in enumerate(zip(trace.steps, records)):
        assert len(steps) == len(recs)
        for d, (st, rec) in enumerate(zip(steps, recs)):
            where = f"layer {layer} direction {d}"
            masked = lambda t: None if t is None else torch.where(mask, t, 0.0)  # noqa: E731
            _close(st.h, masked(rec.stacked("h")), f"h, {where}")
            if kind == "lstm":
                _close(st.c, masked(rec.stacked("c")), f"c, {where}")
            else:
                assert st.c is None
            assert set(st.gates) == GATE_NAMES[kind], where
            for name in GATE_NAMES[kind]:
                _close(st.gates[name], masked(rec.stacked_gate(name)), f"gate {name}, {where}")
            if check_grads:
                _close(st.grad_h, masked(rec.stacked("grad_h")), f"grad_h, {where}")
                if kind == "lstm":
                    _close(st.grad_c, masked(rec.stacked("grad_c")), f"grad_c, {where}")
                else:
                    assert st.grad_c is None


def _trace_vs_reference(module, x, hx=None, lengths=None):
    """Trace + backward of a loss on output, h_n, c_n; the reference loop with the same loss."""
    kind = _kind(module)
    tr = module.trace(x, hx, lengths=lengths)
    weighted_loss(tr.output, tr.h_n, tr.c_n).backward()
    r_out, r_h, r_c, recs = run_layer(module, x.detach(), hx, lengths, retain=True)
    weighted_loss(r_out, r_h, r_c).backward()
    _close(tr.output, r_out.detach(), "output")
    _close(tr.h_n, r_h.detach(), "h_n")
    if kind == "lstm":
        _close(tr.c_n, r_c.detach(), "c_n")
    else:
        assert tr.c_n is None
    _compare_steps(tr, recs, kind, lengths, x.shape[0], x.shape[1])
    return tr


def _lstm(peephole=False, coupled=False, proj=0, layers=2, bidir=True, **kw):
    return lstmkit.LSTM(I, H, num_layers=layers, bidirectional=bidir, proj_size=proj,
                        peephole=peephole, coupled=coupled, dtype=DT, **kw)


LSTM_VARIANTS = [
    pytest.param(False, False, id="plain"),
    pytest.param(True, False, id="peephole"),
    pytest.param(False, True, id="coupled"),
    pytest.param(True, True, id="peephole+coupled"),
]
LENGTHS = [pytest.param(None, id="full"), pytest.param(SORTED_LENGTHS, id="lengths")]


# ------------------------------------------------------------------ states, gates, gradients
@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS)
@pytest.mark.parametrize("proj", [0, P], ids=["noproj", "proj"])
@pytest.mark.parametrize("lengths", LENGTHS)
def test_lstm_trace_matches_reference(peephole, coupled, proj, lengths):
    _seed("lstm", peephole, coupled, proj, lengths)
    mod = _lstm(peephole, coupled, proj)
    _perturb(mod)
    x = torch.randn(T, B, I, dtype=DT)
    hx, _ = _initial("lstm", 2, 2, proj or H)
    tr = _trace_vs_reference(mod, x, hx, lengths)
    if coupled:                                          # i = 1 - f within each length
        mask = length_mask(lengths, T, B)
        st = tr.steps[1][1]
        _close(st.gates["i"], torch.where(mask, 1 - st.gates["f"], 0.0), "coupled i")


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS[:2])
def test_lstm_trace_single_layer_no_initial_state(peephole, coupled):
    _seed("lstm1", peephole, coupled)
    mod = _lstm(peephole, coupled, layers=1, bidir=False)
    _perturb(mod)
    _trace_vs_reference(mod, torch.randn(T, B, I, dtype=DT))


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("lengths", LENGTHS)
def test_gru_trace_matches_reference(reset_after, lengths):
    _seed("gru", reset_after, lengths)
    mod = lstmkit.GRU(I, H, num_layers=2, bidirectional=True, reset_after=reset_after, dtype=DT)
    _perturb(mod)
    hx, _ = _initial("gru", 2, 2, H)
    _trace_vs_reference(mod, torch.randn(T, B, I, dtype=DT), hx, lengths)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("lengths", LENGTHS)
def test_rnn_trace_matches_reference(nonlinearity, lengths):
    _seed("rnn", nonlinearity, lengths)
    mod = lstmkit.RNN(I, H, num_layers=2, nonlinearity=nonlinearity, bidirectional=True,
                      dtype=DT)
    _perturb(mod)
    hx, _ = _initial("rnn", 2, 2, H)
    _trace_vs_reference(mod, torch.randn(T, B, I, dtype=DT), hx, lengths)


@pytest.mark.parametrize("kind", ["lstm-peephole-proj", "gru-reset_before"])
def test_trace_batch_first_lengths(kind):
    """batch_first: trace.output is batch-first like forward's, the steps stay time-major."""
    _seed("bf", kind)
    if kind.startswith("lstm"):
        mod = _lstm(peephole=True, proj=P, batch_first=True)
        hx, _ = _initial("lstm", 2, 2, P)
    else:
        mod = lstmkit.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True,
                          reset_after=False, dtype=DT)
        hx, _ = _initial("gru", 2, 2, H)
    _perturb(mod)
    x = torch.randn(B, T, I, dtype=DT)
    tr = mod.trace(x, hx, lengths=SORTED_LENGTHS)
    weighted_loss(tr.output, tr.h_n, tr.c_n).backward()
    r_out, r_h, r_c, recs = run_layer(mod, x.transpose(0, 1), hx, SORTED_LENGTHS, retain=True)
    r_out = r_out.transpose(0, 1)
    weighted_loss(r_out, r_h, r_c).backward()
    _close(tr.output, r_out.detach(), "output (batch-first)")
    _close(tr.h_n, r_h.detach(), "h_n")
    _compare_steps(tr, recs, _kind(mod), SORTED_LENGTHS, T, B)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_trace_steps_span_the_input_when_lengths_are_below_T(kind):
    """lengths whose longest is below the input's T: trace.output has T steps (as forward's),
    and so do the steps, zero past each length like every other padded position, so that
    trace.steps[..].h[t] lines up with trace.output[t] over the whole input (they once stopped
    at max(lengths))."""
    _seed("below-T", kind)
    lengths = (4, 2, 1)
    if kind == "lstm":
        mod = _lstm(peephole=True)
        hx, _ = _initial("lstm", 2, 2, H)
    else:
        mod = lstmkit.GRU(I, H, num_layers=2, bidirectional=True, dtype=DT)
        hx, _ = _initial("gru", 2, 2, H)
    _perturb(mod)
    x = torch.randn(T, B, I, dtype=DT)
    tr = _trace_vs_reference(mod, x, hx, lengths)     # the steps compared at full (T, B, ...)
    assert tr.output.shape[0] == T


def test_trace_values_below_T_up_to_max_length():
    """The values the trace does give for lengths below T are right (the companion of the
    test above, which checks the shape)."""
    _seed("below-T-values")
    lengths = (4, 2, 1)
    mod = _lstm(peephole=True, coupled=True, proj=P)
    _perturb(mod)
    x = torch.randn(T, B, I, dtype=DT)
    hx, _ = _initial("lstm", 2, 2, P)
    tr = mod.trace(x, hx, lengths=lengths)
    weighted_loss(tr.output, tr.h_n, tr.c_n).backward()
    r_out, r_h, r_c, recs = run_layer(mod, x, hx, lengths, retain=True)
    weighted_loss(r_out, r_h, r_c).backward()
    _close(tr.output, r_out.detach(), "output")
    _close(tr.h_n, r_h.detach(), "h_n")
    _close(tr.c_n, r_c.detach(), "c_n")
    n = max(lengths)
    mask = length_mask(lengths, T, B)[:n]
    for steps, rs in zip(tr.steps, recs):
        for st, rec in zip(steps, rs):
            for name in ("h", "c", "grad_h", "grad_c"):
                got = getattr(st, name)[:n]
                _close(got, torch.where(mask, rec.stacked(name)[:n], 0.0), name)


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS)
def test_trace_packed_unsorted_caller_order(peephole, coupled):
    """A PackedSequence with enforce_sorted=False: the steps are in the caller's batch order."""
    _seed("packed", peephole, coupled)
    mod = _lstm(peephole, coupled, proj=P)
    _perturb(mod)
    lengths = (2, 5, 3)
    x = torch.randn(T, B, I, dtype=DT)
    hx, _ = _initial("lstm", 2, 2, P)
    tr = mod.trace(pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False), hx)
    weighted_loss(tr.output.data, tr.h_n, tr.c_n).backward()
    r_out, r_h, r_c, recs = run_layer(mod, x, hx, lengths, retain=True)
    r_packed = pack_padded_sequence(r_out, torch.tensor(lengths), enforce_sorted=False)
    weighted_loss(r_packed.data, r_h, r_c).backward()
    out, _ = pad_packed_sequence(tr.output, total_length=T)
    _close(out, r_out.detach(), "output")
    _close(tr.h_n, r_h.detach(), "h_n")
    _close(tr.c_n, r_c.detach(), "c_n")
    _compare_steps(tr, recs, "lstm", lengths, T, B)


@pytest.mark.parametrize("kind", ["lstm", "lstm-coupled", "gru", "rnn"])
def test_trace_unbatched(kind):
    _seed("unbatched", kind)
    if kind.startswith("lstm"):
        mod = _lstm(coupled=kind.endswith("coupled"), layers=1)
        hx = (torch.randn(2, H, dtype=DT), torch.randn(2, H, dtype=DT))
        hx_b = tuple(s.unsqueeze(1) for s in hx)
    else:
        cls = lstmkit.GRU if kind == "gru" else lstmkit.RNN
        mod = cls(I, H, bidirectional=True, dtype=DT)
        hx = torch.randn(2, H, dtype=DT)
        hx_b = hx.unsqueeze(1)
    _perturb(mod)
    fam = "lstm" if kind.startswith("lstm") else kind
    x = torch.randn(T, I, dtype=DT)
    tr = mod.trace(x, hx)
    weighted_loss(tr.output, tr.h_n, tr.c_n).backward()
    out, hidden = mod(x, hx)
    _close(tr.output, out.detach(), "output as forward (unbatched)")
    r_out, r_h, r_c, recs = run_layer(mod, x.unsqueeze(1), hx_b, retain=True)
    weighted_loss(r_out.squeeze(1), r_h.squeeze(1), None if r_c is None else r_c.squeeze(1)
                  ).backward()
    _close(tr.h_n, r_h.squeeze(1).detach(), "h_n")
    for d, (st, rec) in enumerate(zip(tr.steps[0], recs[0])):
        # the steps of an unbatched input: (T, 1, ...) (a batch of one) or (T, ...)
        for name, got, want in [("h", st.h, rec.stacked("h")),
                                ("grad_h", st.grad_h, rec.stacked("grad_h"))] + (
                [("c", st.c, rec.stacked("c")), ("grad_c", st.grad_c, rec.stacked("grad_c"))]
                if fam == "lstm" else []):
            assert got is not None and got.shape in {want.shape, want.squeeze(1).shape}, name
            _close(got.reshape(want.shape), want, f"{name}, direction {d}")
        for name in GATE_NAMES[fam]:
            want = rec.stacked_gate(name)
            _close(st.gates[name].reshape(want.shape), want, f"gate {name}, direction {d}")


# ------------------------------------------------------------------ trace vs forward
CONFIGS = {
    "lstm-torch-engine": lambda: lstmkit.LSTM(I, H, num_layers=2, bidirectional=True,
                                              proj_size=P, dtype=DT, engine="torch"),
    "lstm-auto": lambda: lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, dtype=DT),
    "lstm-peephole-coupled": lambda: _lstm(True, True, P),
    "gru-auto": lambda: lstmkit.GRU(I, H, num_layers=2, bidirectional=True, dtype=DT),
    "gru-reset_before": lambda: lstmkit.GRU(I, H, num_layers=2, bidirectional=True,
                                            reset_after=False, dtype=DT),
    "rnn-relu": lambda: lstmkit.RNN(I, H, num_layers=2, nonlinearity="relu",
                                    bidirectional=True, dtype=DT),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("lengths", LENGTHS)
def test_trace_output_and_parameter_grads_equal_forward(name, lengths):
    _seed("vs-forward", name, lengths)
    mod = CONFIGS[name]()
    _perturb(mod)
    kind = _kind(mod)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    hx, leaves = _initial(kind, 2, 2, getattr(mod, "proj_size", 0) or H)
    inputs = [x, *leaves, *mod.parameters()]

    out, hidden = mod(x, hx, lengths=lengths)
    h_n, c_n = hidden if kind == "lstm" else (hidden, None)
    want = torch.autograd.grad(weighted_loss(out, h_n, c_n), inputs)

    tr = mod.trace(x, hx, lengths=lengths)
    assert isinstance(tr, lstmkit.Trace)
    _close(tr.output, out, "output")
    _close(tr.h_n, h_n, "h_n")
    if kind == "lstm":
        _close(tr.c_n, c_n, "c_n")
    else:
        assert tr.c_n is None
    got = torch.autograd.grad(weighted_loss(tr.output, tr.h_n, tr.c_n), inputs)
    for k, (g, w) in enumerate(zip(got, want)):
        _close(g, w, f"grad #{k} through trace vs forward")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_grads_are_none_before_backward(kind):
    torch.manual_seed(0)
    mod = {"lstm": lambda: _lstm(peephole=True), "gru": lambda: lstmkit.GRU(I, H, dtype=DT),
           "rnn": lambda: lstmkit.RNN(I, H, dtype=DT)}[kind]()
    tr = mod.trace(torch.randn(T, B, I, dtype=DT))
    for steps in tr.steps:
        for st in steps:
            assert st.grad_h is None
            assert st.grad_c is None
            assert st.h.shape[:2] == (T, B)
    tr.output.sum().backward()
    for steps in tr.steps:
        for st in steps:
            assert st.grad_h is not None and st.grad_h.shape == st.h.shape
            if kind == "lstm":
                assert st.grad_c is not None and st.grad_c.shape == st.c.shape
            else:
                assert st.grad_c is None


def test_grad_from_final_state_only():
    """A loss on h_n alone: grad_h still matches the reference, and the forward direction's
    grad_h is zero past each sequence's length (nothing there reaches the loss)."""
    _seed("hn-only")
    mod = _lstm(peephole=True, layers=1)
    _perturb(mod)
    x = torch.randn(T, B, I, dtype=DT)
    tr = mod.trace(x, lengths=SORTED_LENGTHS)
    weighted_loss(tr.h_n).backward()
    r_out, r_h, _, recs = run_layer(mod, x, None, SORTED_LENGTHS, retain=True)
    weighted_loss(r_h).backward()
    _compare_steps(tr, recs, "lstm", SORTED_LENGTHS, T, B)
    fwd = tr.steps[0][0]
    for b, n in enumerate(SORTED_LENGTHS):
        assert torch.count_nonzero(fwd.grad_h[n:, b]) == 0


def test_trace_values_are_detached():
    torch.manual_seed(1)
    mod = _lstm(coupled=True, layers=1, bidir=False)
    tr = mod.trace(torch.randn(T, B, I, dtype=DT))
    st = tr.steps[0][0]
    assert not st.h.requires_grad and not st.c.requires_grad
    assert all(not g.requires_grad for g in st.gates.values())
    assert tr.output.requires_grad
