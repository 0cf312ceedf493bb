"""ONNX export of the xLSTM layers and of every cell with a reference step: sLSTM, the LayerNorm
cells and a registered cell of one's own as a Scan over the step, mLSTM in its parallel form; each
run by onnxruntime and equal to the layer, at other lengths and batch sizes than the export
example's, and streamed in chunks with the state in and out."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_registry import NAME as TOY
from test_registry import LeakyGateCell
from torch import nn

from lstmkit import LSTM, mLSTM, sLSTM
from lstmkit.cells import Cell, registry
from lstmkit.cli import main
from lstmkit.export import ExportError, export_onnx
from lstmkit.export.runs import state_inputs
from lstmkit.layers import Recurrent, minGRU, minLSTM, xLSTM
from lstmkit.layers.onnx import OnnxMLSTM

I, H = 3, 8
ATOL = RTOL = 1e-5       # float32: mLSTM's outputs and states are not bounded by 1


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _flat(result) -> list:
    out, state = result
    return [out, *state]


def _close(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == tuple(e.shape)
        np.testing.assert_allclose(g, e.numpy(), atol=ATOL, rtol=RTOL)


class WithLengths(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, lengths):
        out, state = self.layer(x, lengths=lengths)
        return out, state


# ---------------------------------------------------------------------------------------- sLSTM


def test_slstm_heads_exp_gate_two_layers_bidirectional_lengths(tmp_path):
    torch.manual_seed(0)
    layer = sLSTM(I, H, num_heads=4, forget_gate="exp", num_layers=2, bidirectional=True,
                  batch_first=True).eval()
    model = WithLengths(layer)
    path = export_onnx(model, tmp_path / "s.onnx", (torch.randn(3, 4, I), torch.tensor([4, 3, 2])))
    assert "Scan" in {n.op_type for n in onnx.load(path).graph.node}
    session = _session(path)
    for B, T, lengths in ((3, 9, [9, 5, 1]), (2, 1, [1, 1]), (1, 6, [6])):
        x, lengths = torch.randn(B, T, I) * 2, torch.tensor(lengths)
        got = session.run(None, {"input_0": x.numpy(), "input_1": lengths.numpy()})
        with torch.no_grad():
            out, state = model(x, lengths)
        assert len(state) == 4                                          # h, c, n, m
        _close(got, [out, *state])
        assert np.all(got[0][0, lengths[0]:] == 0) if B == 1 else True


def test_torch_onnx_export_of_a_headwise_slstm(tmp_path):
    """torch.onnx.export itself (the weights converted in the graph), heads > 1."""
    torch.manual_seed(2)
    layer = sLSTM(I, H, num_heads=2).eval()
    auto = torch.export.Dim.AUTO
    program = torch.onnx.export(layer, (torch.randn(4, 2, I),), dynamo=True, verbose=False,
                                dynamic_shapes=({0: auto, 1: auto},))
    program.save(tmp_path / "d.onnx")
    session = _session(tmp_path / "d.onnx")
    x = torch.randn(7, 3, I)
    with torch.no_grad():
        out, state = layer(x)
    _close(session.run(None, {session.get_inputs()[0].name: x.numpy()}), [out, *state])


# ------------------------------------------------------------------ any cell with a reference step


class NoReferenceCell(LeakyGateCell):
    reference_step = Cell.reference_step                  # as a cell that never wrote one


@pytest.fixture
def toy():
    registry.register(TOY, LeakyGateCell, summary="a test cell: one update gate")
    registry.register("no-reference", NoReferenceCell, summary="a test cell without a Scan form")
    yield
    registry.unregister(TOY)
    registry.unregister("no-reference")


class Stack(nn.Module):
    """The LayerNorm cells (LSTM(layer_norm=True) is "lstm-ln"), a registered cell of one's own
    and minGRU, one after another."""

    def __init__(self):
        super().__init__()
        self.a = LSTM(I, H, layer_norm=True, bidirectional=True)
        self.b = Recurrent(2 * H, H, cell="gru-ln")
        self.c = Recurrent(H, H, cell=TOY)
        self.d = minGRU(H, H, bidirectional=True)

    def forward(self, x, lengths):
        x, (h_a, c_a) = self.a(x, lengths=lengths)
        x, h_b = self.b(x, lengths=lengths)
        x, h_c = self.c(x, lengths=lengths)
        x, h_d = self.d(x, lengths=lengths)
        return x, h_a, c_a, h_b, h_c, h_d


def test_layernorm_cells_a_registered_cell_and_mingru_run_as_scans(toy, tmp_path):
    torch.manual_seed(3)
    model = Stack().eval()
    path = export_onnx(model, tmp_path / "m.onnx", (torch.randn(4, 3, I), torch.tensor([4, 3, 2])))
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert not {"LSTM", "GRU", "RNN"} & set(ops)
    session = _session(path)
    for T, lengths in ((7, [7, 4, 2, 1]), (1, [1])):      # longest first (packing, LSTM)
        x, lengths = torch.randn(T, len(lengths), I), torch.tensor(lengths)
        with torch.no_grad():
            expected = model(x, lengths)
        _close(session.run(None, {"input_0": x.numpy(), "input_1": lengths.numpy()}), expected)


def test_a_cell_without_reference_step_is_refused(toy, tmp_path):
    layer = Recurrent(I, H, cell="no-reference")
    with pytest.raises(ExportError, match="NoReferenceCell has no ONNX form.*reference_step"):
        export_onnx(layer, tmp_path / "m.onnx", torch.randn(4, 2, I))
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------------------------------- mLSTM


def test_mlstm_exp_gate_two_layers_bidirectional_lengths(tmp_path):
    torch.manual_seed(4)
    layer = mLSTM(I, H, num_heads=2, num_layers=2, bidirectional=True, forget_gate="exp",
                  batch_first=True).eval()
    path = export_onnx(WithLengths(layer), tmp_path / "m.onnx",
                       (torch.randn(2, 4, I), torch.tensor([4, 3])))
    session = _session(path)

    def run(x, lengths):
        return session.run(None, {"input_0": x.numpy(), "input_1": np.array(lengths)})

    # whole sequences; T = 1: the layer's recurrent step; 5, 40: its parallel form
    for B, T in ((2, 1), (3, 5), (1, 40)):
        x = torch.randn(B, T, I) * 2
        with torch.no_grad():
            out, state = layer(x)
        _close(run(x, [T] * B), [out, *state])
    # a padded batch, any order: the layer's lengths=, each sequence as if alone, zeros past
    # its length
    x, lengths = torch.randn(3, 7, I), [3, 7, 1]
    out, C, n, m = got = run(x, lengths)
    with torch.no_grad():
        expected, state = layer(x, lengths=torch.tensor(lengths))
    _close(got, [expected, *state])
    for b, L in enumerate(lengths):
        with torch.no_grad():
            alone, state = layer(x[b:b + 1, :L])
        _close([out[b:b + 1, :L], C[:, b:b + 1], n[:, b:b + 1], m[:, b:b + 1]],
               [alone, *state])
        assert not out[b, L:].any()
    # T = 200 (the layer: its chunkwise form): h and C are not bounded (here up to ~10^3; h
    # divides by n^T q, ill-conditioned near 0), and float32's forms differ by more than RTOL.
    # Against float64: no further off than the layer itself, up to 1e-4 of the scale
    x = torch.randn(1, 200, I) * 2
    with torch.no_grad():
        exact = [t.numpy() for t in _flat(copy.deepcopy(layer).double()(x.double()))]
        own = [t.numpy() for t in _flat(layer(x))]
    for g, o, e in zip(run(x, [200]), own, exact):
        assert np.abs(g - e).max() <= np.abs(o - e).max() + 1e-4 * np.abs(e).max()


@pytest.mark.parametrize("head_norm", [True, False])
@pytest.mark.parametrize("form", OnnxMLSTM.FORMS)
def test_mlstm_onnx_forms_in_torch_equal_the_layer(form, head_norm):
    """The graph's torch code itself (no export): both forms, a given state, lengths, with
    and without the head norm (its weight moved off its initial ones)."""
    torch.manual_seed(8)
    layer = mLSTM(I, H, num_heads=2, num_layers=2, bidirectional=True,
                  head_norm=head_norm).eval()
    for name, p in layer.named_parameters():
        if name.startswith("weight_norm"):
            p.data.uniform_(0.5, 1.5)
    x, lengths = torch.randn(6, 3, I), torch.tensor([2, 6, 1])
    state = tuple(torch.randn(s) * 0.1 for s in layer.state_shapes(3))
    with torch.no_grad():
        for kwargs in ({}, {"lengths": lengths}):
            _close([t.numpy() for t in _flat(OnnxMLSTM(layer, form=form)(x, state, **kwargs))],
                   _flat(layer(x, state, **kwargs)))
    with pytest.raises(ValueError, match="form should be one of"):
        OnnxMLSTM(layer, form="chunkwise")


def test_mlstm_what_has_no_onnx_form_is_refused(tmp_path):
    layer = mLSTM(I, H, bidirectional=True)
    with pytest.raises(ExportError, match="mLSTM: lengths needs a batched 3-D input"):
        OnnxMLSTM(layer)(torch.randn(4, I), lengths=torch.tensor([4]))
    with pytest.raises(ExportError, match="streaming needs unidirectional"):
        export_onnx(layer, tmp_path / "m.onnx", torch.randn(4, 2, I), streaming=True)


def test_state_inputs_of_a_model_read_from_its_layers():
    """What ``lstmkit export`` feeds a fresh stream: zeros, the mLSTM's m -inf (m_1 = i~_1)."""
    model = nn.Sequential(sLSTM(I, H, num_layers=3))
    assert [(s.name, s.output, s.shape, s.start) for s in state_inputs(model)] == [
        (f"initial_{k}", f"Y_{k}", (3, "N", H), 0.0) for k in "hcnm"]
    assert [(s.name, s.shape, s.start) for s in state_inputs(mLSTM(I, H, 4, num_layers=2))] == [
        ("initial_C", (2, "N", 4, 2, 2), 0.0), ("initial_n", (2, "N", 4, 2), 0.0),
        ("initial_m", (2, "N", 4), -math.inf)]
    assert [s.start for s in state_inputs(xLSTM(I, H))] == [0, 0, -math.inf, 0, 0, 0, 0]


# ------------------------------------------------------------------------------------ streaming


def _stream(session, x, names, state, cuts):
    """(output, *final state) of feeding x in chunks [cuts[i], cuts[i+1]), the state carried
    from one call to the next."""
    outs = []
    for a, b in zip(cuts, cuts[1:]):
        y, *state = session.run(None, {"input": x[a:b].numpy(),
                                       **{f"initial_{s}": v for s, v in zip(names, state)}})
        outs.append(y)
    return [np.concatenate(outs), *state]


class SThenMin(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = sLSTM(I, H, num_heads=1, num_layers=2)               # sigmoid forget gate
        self.m = minLSTM(H, H, num_layers=2)

    def forward(self, x):
        x, (h, c, n, m) = self.s(x)
        x, h_min = self.m(x)
        return x, h, c, n, m, h_min


def test_slstm_and_minlstm_streaming_in_chunks_equals_one_call(tmp_path):
    torch.manual_seed(1)
    model = SThenMin().eval()
    path = export_onnx(model, tmp_path / "s.onnx", torch.randn(4, 2, I), streaming=True)
    session = _session(path)
    names = ["h_0", "c_0", "n_0", "m_0", "h_1"]
    assert [i.name for i in session.get_inputs()] == ["input"] + [f"initial_{s}" for s in names]
    assert [o.name for o in session.get_outputs()] == ["output"] + [f"Y_{s}" for s in names]
    x = torch.randn(8, 3, I) * 2
    with torch.no_grad():
        expected = model(x)
        middle = model.s(x[:2])[1]
        s_from = model.s(x[2:], middle)
        h0 = torch.randn(2, 3, H)                            # minLSTM: any h_0, negative too
        min_from = model.m(s_from[0], h0)
    fresh = [np.zeros((2, 3, H), np.float32) for _ in names]
    _close(_stream(session, x, names, fresh, [0, 1, 5, 8]), expected)     # T = 1, 4, 3
    # from states that are not fresh (sLSTM's n > 0): the layers' own continuation
    got = session.run(None, {"input": x[2:].numpy(), "initial_h_1": h0.numpy(),
                             **{f"initial_{s}_0": v.numpy() for s, v in zip("hcnm", middle)}})
    _close(got, [min_from[0], *s_from[1], min_from[1]])


def test_xlstm_stack_streams_its_seven_states(tmp_path):
    """mLSTM (4 heads, two layers, sigmoid forget gate) and sLSTM streamed through the stack."""
    torch.manual_seed(5)
    layer = xLSTM(I, H, num_layers=3, num_heads=4).eval()        # mLSTM, sLSTM, mLSTM
    path = export_onnx(layer, tmp_path / "x.onnx", torch.randn(4, 2, I), streaming=True)
    session = _session(path)
    names = ["C", "n", "m", "h", "c", "n_s", "m_s"]
    assert [i.name for i in session.get_inputs()] == ["input"] + [f"initial_{s}" for s in names]
    assert [o.name for o in session.get_outputs()] == ["output"] + [f"Y_{s}" for s in names]
    x = torch.randn(9, 3, I) * 2
    with torch.no_grad():
        out, final = layer(x)
    fresh = [s.fresh(3).numpy() for s in state_inputs(layer)]
    _close(_stream(session, x, names, fresh, [0, 1, 6, 9]), [out, *final])   # T = 1, 5, 3
    # from zeros (the mLSTM's m = 0 too): the stack from the same state
    zeros = tuple(torch.zeros(f.shape) for f in fresh)
    with torch.no_grad():
        out, final = layer(x, zeros)
    _close(_stream(session, x, names, [z.numpy() for z in zeros], [0, 9]), [out, *final])


def test_lstmkit_export_of_an_slstm_run(tmp_path, capsys):
    """``lstmkit export`` of a trained sLSTM language model: its four states in and out, named
    and shaped in model.json, and onnxruntime equal to the run's model (export checks that)."""
    (tmp_path / "text.txt").write_text("ROMEO: To be, or not to be, that is the question.\n" * 20)
    run = tmp_path / "run"
    main(["train", "chars", "--out", str(run), "--epochs", "1", "--hidden", "8", "--embed", "4",
          "--bptt", "10", "--batch-size", "4", "--cell", "slstm", "--layers", "2",
          "--path", str(tmp_path / "text.txt")])
    main(["export", str(run)])
    assert "onnxruntime matches the run's model to" in capsys.readouterr().out
    meta = json.loads((run / "model.json").read_text())
    assert [i["name"] for i in meta["inputs"]] == ["tokens"] + [f"initial_{s}" for s in "hcnm"]
    assert [o["name"] for o in meta["outputs"]] == ["logits"] + [f"Y_{s}" for s in "hcnm"]
    assert all(i["meaning"].startswith("(2, N, 8) float32") for i in meta["inputs"][1:])
    assert meta["max_abs_diff_vs_torch"] <= 1e-5
