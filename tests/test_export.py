"""export_onnx: every cell and variant as ONNX's own operators, run by onnxruntime, equal to the
lstmkit layer at other lengths and batch sizes than the export example's."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit import GRU, LSTM, RNN, LSTMCell
from lstmkit.export import ExportError, export_onnx, onnx_weights

I, H = 3, 5
CONFIGS = {
    "lstm": lambda: LSTM(I, H),
    "peephole": lambda: LSTM(I, H, peephole=True),
    "coupled": lambda: LSTM(I, H, coupled=True),
    "peephole-coupled": lambda: LSTM(I, H, peephole=True, coupled=True),
    "coupled-no-bias": lambda: LSTM(I, H, coupled=True, bias=False),
    "gru": lambda: GRU(I, H),
    "gru-cho": lambda: GRU(I, H, reset_after=False),
    "rnn-tanh": lambda: RNN(I, H),
    "rnn-relu": lambda: RNN(I, H, nonlinearity="relu"),
    "lstm-2-layers-bidirectional": lambda: LSTM(I, H, num_layers=2, bidirectional=True),
    "peephole-coupled-2-bi": lambda: LSTM(I, H, 2, bidirectional=True, peephole=True,
                                          coupled=True),
    "gru-2-bi-batch-first": lambda: GRU(I, H, 2, batch_first=True, bidirectional=True),
    "gru-cho-bi": lambda: GRU(I, H, bidirectional=True, reset_after=False),
    "rnn-relu-2-bi": lambda: RNN(I, H, 2, nonlinearity="relu", bidirectional=True),
    "proj": lambda: LSTM(I, H, proj_size=2),
    "proj-peephole-2-bi": lambda: LSTM(I, H, 2, proj_size=2, bidirectional=True,
                                       peephole=True),
}
NATIVE_OP = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _flat(result):
    out, hidden = result
    return [out, *(hidden if isinstance(hidden, tuple) else (hidden,))]


def _time_major(layer, T, B):
    shape = (B, T, I) if layer.batch_first else (T, B, I)
    return torch.randn(*shape)


@pytest.fixture(params=sorted(CONFIGS))
def config(request):
    torch.manual_seed(0)
    return request.param, CONFIGS[request.param]().eval()


def test_layer_matches_at_other_sizes(config, tmp_path):
    name, layer = config
    path = export_onnx(layer, tmp_path / "m.onnx", _time_major(layer, 4, 2))
    _check_operators(layer, onnx.load(path))
    session = _session(path)
    assert [o.name for o in session.get_outputs()] == \
        ["output", "h_n", "c_n"][: 3 if layer.family == "lstm" else 2]
    for T, B in ((9, 3), (1, 5), (17, 1)):
        x = _time_major(layer, T, B)
        got = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            expected = _flat(layer(x))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e.numpy(), atol=1e-5, rtol=0)


def _check_operators(layer, model):
    """ONNX's own operator per layer, with the variant's attributes and inputs."""
    nodes = list(model.graph.node)
    ops = [n.op_type for n in nodes]
    if layer.proj_size:               # no operator: a Scan over the step, for any length
        assert "Scan" in ops and not {"LSTM", "GRU", "RNN"} & set(ops)
        return
    op = NATIVE_OP[layer.family]
    recurrent = [n for n in nodes if n.op_type == op]
    assert len(recurrent) == layer.num_layers and "Scan" not in ops and "Loop" not in ops
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in recurrent[0].attribute}
    assert attrs["hidden_size"] == H
    assert attrs["direction"] == (b"bidirectional" if layer.bidirectional else b"forward")
    if layer.family == "lstm":
        assert attrs.get("input_forget", 0) == int(layer.coupled)
        has_p = len(recurrent[0].input) > 7 and recurrent[0].input[7] != ""
        assert has_p == layer.peephole
    if layer.family == "gru":
        assert attrs["linear_before_reset"] == int(layer.reset_after)
    if layer.family == "rnn":
        assert attrs["activations"][0] == layer.cell.nonlinearity.capitalize().encode()


class _WithLengths(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.rnn = layer

    def forward(self, x, lengths):
        return self.rnn(x, lengths=lengths)


@pytest.mark.parametrize("name", ["peephole-coupled-2-bi", "gru-cho-bi", "rnn-relu-2-bi",
                                  "proj-peephole-2-bi"])
def test_padded_batch_with_lengths(name, tmp_path):
    """ONNX's sequence_lens: outputs zero past each length, final states at each sequence's
    last step, the reverse direction starting there."""
    torch.manual_seed(1)
    model = _WithLengths(CONFIGS[name]()).eval()
    path = export_onnx(model, tmp_path / "m.onnx", (torch.randn(6, 3, I), torch.tensor([6, 4, 2])))
    session = _session(path)
    x, lengths = torch.randn(11, 4, I), torch.tensor([11, 8, 3, 1])
    got = session.run(None, {"input_0": x.numpy(), "input_1": lengths.numpy()})
    with torch.no_grad():
        expected = _flat(model(x, lengths))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-5, rtol=0)
    assert np.abs(got[0][3:, 2]).max() == 0                  # past the third sequence's end


@pytest.mark.parametrize("name", ["peephole-coupled", "gru-cho", "rnn-tanh", "proj"])
def test_streaming_in_chunks_equals_one_call(name, tmp_path):
    torch.manual_seed(2)
    layer = CONFIGS[name]()
    layer = type(layer)(I, H, num_layers=2, **_variant_kwargs(layer)).eval()
    path = export_onnx(layer, tmp_path / "m.onnx", torch.randn(4, 2, I), streaming=True)
    session = _session(path)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    n_states = 2 if layer.family == "lstm" else 1
    assert inputs == ["input", "initial_h", "initial_c"][: 1 + n_states]
    assert outputs == ["output", "Y_h", "Y_c"][: 1 + n_states]
    x = torch.randn(23, 3, I)
    with torch.no_grad():
        expected = _flat(layer(x))
    sizes = layer.cell.state_sizes
    states = [np.zeros((2, 3, s), np.float32) for s in sizes]
    ys = []
    for chunk in x.split(5):                                 # 5, 5, 5, 5, 3 steps
        y, *states = session.run(None, {"input": chunk.numpy(),
                                        **dict(zip(inputs[1:], states))})
        ys.append(y)
    np.testing.assert_allclose(np.concatenate(ys), expected[0].numpy(), atol=1e-5, rtol=0)
    for s, e in zip(states, expected[1:]):
        np.testing.assert_allclose(s, e.numpy(), atol=1e-5, rtol=0)


def _variant_kwargs(layer):
    if layer.family == "lstm":
        return {"peephole": layer.peephole, "coupled": layer.coupled,
                "proj_size": layer.proj_size}
    if layer.family == "gru":
        return {"reset_after": layer.reset_after}
    return {"nonlinearity": layer.cell.nonlinearity}


def test_coupled_gate_mapping_follows_onnxruntime():
    """onnxruntime with input_forget=1 computes f_t = 1 - i_t from the i rows: lstmkit's
    forget rows go there negated, ONNX's f rows stay zero, p_f moves to P's i slot negated."""
    torch.manual_seed(3)
    layer = LSTM(I, H, peephole=True, coupled=True)
    w = onnx_weights(layer, 0)
    f_rows = layer.weight_ih_l0[:H]
    assert torch.equal(w["W"][0, :H], -f_rows)                     # ONNX i <- -f
    assert torch.equal(w["W"][0, H : 2 * H], layer.weight_ih_l0[2 * H :])    # ONNX o <- o
    assert torch.equal(w["W"][0, 2 * H : 3 * H], torch.zeros(H, I))          # ONNX f unused
    assert torch.equal(w["W"][0, 3 * H :], layer.weight_ih_l0[H : 2 * H])    # ONNX c <- g
    p_f, p_o = layer.weight_ch_l0.split(H)
    assert torch.equal(w["P"][0], torch.cat([-p_f, p_o, torch.zeros(H)]))


def test_unbatched_input(tmp_path):
    layer = GRU(I, H).eval()
    path = export_onnx(layer, tmp_path / "m.onnx", torch.randn(4, I))
    x = torch.randn(6, I)
    got = _session(path).run(None, {"input": x.numpy()})
    with torch.no_grad():
        for g, e in zip(got, _flat(layer(x))):
            np.testing.assert_allclose(g, e.numpy(), atol=1e-5, rtol=0)


def test_a_model_holding_layers(tmp_path):
    """torch modules around the layers go through torch.onnx: embedding, linear, a loop."""
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, I)
            self.rnn = LSTM(I, H, peephole=True)
            self.rnn2 = GRU(H, H)
            self.out = nn.Linear(H, 4)

        def forward(self, tokens):
            h, _ = self.rnn(self.embed(tokens))
            h, _ = self.rnn2(h)
            return self.out(h).log_softmax(-1)

    torch.manual_seed(4)
    model = Tagger().eval()
    path = export_onnx(model, tmp_path / "m.onnx", torch.randint(0, 20, (5, 3)))
    tokens = torch.randint(0, 20, (12, 2))
    got = _session(path).run(None, {"input": tokens.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(tokens).numpy(), atol=1e-5, rtol=0)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"LSTM", "GRU"} <= ops
    assert lstmkit.export_onnx is export_onnx


# ------------------------------------------------------------------ what has no ONNX form
def test_streaming_a_bidirectional_layer_is_refused(tmp_path):
    with pytest.raises(ExportError, match="streaming needs unidirectional"):
        export_onnx(LSTM(I, H, bidirectional=True), tmp_path / "m.onnx", torch.randn(4, 2, I),
                    streaming=True)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_inputs_and_modules_are_named(tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="LSTMCell .* has no ONNX form"):
        export_onnx(LSTMCell(I, H), path, torch.randn(2, I))
    with pytest.raises(ExportError, match="holds no lstmkit layer"):
        export_onnx(nn.Linear(3, 3), path, torch.randn(2, 3))
    for dtype in (torch.bfloat16, torch.float64):      # onnxruntime's operators: float32 only
        with pytest.raises(ExportError, match=rf"{dtype} cannot be exported.*model.float"):
            export_onnx(LSTM(I, H).to(dtype), path, torch.randn(4, 2, I, dtype=dtype))

    class Packs(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = LSTM(I, H)

        def forward(self, x, lengths):
            return self.rnn(pack_padded_sequence(x, lengths))[1][0]

    with pytest.raises(ExportError, match="PackedSequence cannot be exported.*lengths="):
        export_onnx(Packs(), path, (torch.randn(4, 2, I), torch.tensor([4, 3])))
    assert list(tmp_path.iterdir()) == []                   # nothing half-written


def test_a_packed_sequence_input_is_refused():
    from lstmkit.export import OnnxLayer

    packed = pack_padded_sequence(torch.randn(4, 2, I), torch.tensor([4, 3]))
    with pytest.raises(ExportError, match="PackedSequence cannot be exported.*lengths="):
        OnnxLayer(LSTM(I, H))(packed)


@pytest.mark.parametrize("name", ["peephole-coupled-2-bi", "gru-cho", "rnn-relu", "proj"])
def test_torch_onnx_export_of_a_layer(name, tmp_path):
    """torch.onnx.export itself (dynamo=True) writes ONNX's operators for lstmkit layers, the
    weight layouts converted inside the graph from the layer's own parameters."""
    import warnings

    torch.manual_seed(5)
    layer = CONFIGS[name]().eval()
    T, N = torch.export.Dim("T"), torch.export.Dim("N")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(layer, (torch.randn(4, 2, I),), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: T, 1: N},))
    program.save(str(tmp_path / "m.onnx"))
    model = onnx.load(tmp_path / "m.onnx")
    ops = {n.op_type for n in model.graph.node}
    assert ("Scan" if layer.proj_size else NATIVE_OP[layer.family]) in ops
    x = torch.randn(10, 3, I)
    got = _session(tmp_path / "m.onnx").run(None, {model.graph.input[0].name: x.numpy()})
    with torch.no_grad():
        for g, e in zip(got, _flat(layer(x))):
            np.testing.assert_allclose(g, e.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("opset", [17, 21])
def test_opset_is_the_one_asked_for(opset, tmp_path):
    path = export_onnx(LSTM(I, H, peephole=True), tmp_path / "m.onnx", torch.randn(4, 2, I),
                       opset=opset)
    assert [o.version for o in onnx.load(path).opset_import if o.domain == ""] == [opset]


@pytest.mark.parametrize("opset", [14, 99])
def test_an_opset_torch_onnx_cannot_write_is_refused(opset, tmp_path):
    with pytest.raises(ExportError, match=f"opset {opset} was asked for"):
        export_onnx(LSTM(I, H), tmp_path / "m.onnx", torch.randn(4, 2, I), opset=opset)
    assert list(tmp_path.iterdir()) == []
