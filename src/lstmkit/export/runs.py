"""A trained run's model as files that run without lstmkit or torch: ``model.onnx`` and beside it
``model.json`` (what the inputs and outputs mean, the vocabulary or class names, a forecast's
normalisation), optionally int8, evaluated against float32 on the run's test data.

The exported graph is the task's model itself (lstmkit.tasks.models), on these inputs:

    names     tokens (L, N) int64, lengths (N,) int64        -> logits (N, C)
    ptb/chars tokens (L, N) int64, initial_h, initial_c      -> logits (L, N, V), Y_h, Y_c
    forecast  window (L, N, 1) float32 (transformed values)  -> next (N, 1) (transformed)
    adding    inputs (T, N, 2) float32                       -> prediction (N, 1)
    copy      tokens (T, N) int64                            -> logits (T, N, V)
    jsb       frames (L, N, 88) float32, lengths (N,) int64  -> logits (L, N, 88)
    parity    tokens (L, N) int64, lengths (N,) int64        -> logits (N, 2)

initial_h / initial_c and Y_h / Y_c: (layers, N, H), zeros to start; a language model always
carries its state (text is continued one token at a time), the others with ``streaming``. A
cell with more states has one pair per state (sLSTM: h, c, n, m); the shapes come from the
layer's ONNX form (``state_shapes``), so a layer whose states are not (layers, N, H) (mLSTM's
C, n, m) is described as it is.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .._version import __version__
from ..layers.onnx import ExportError
from ..runio import atomic_write_json
from .model import _quiet, _state_names, _swap_layers, export_onnx

FORMAT, FORMAT_VERSION = "lstmkit-onnx", 1


@dataclass
class Interface:
    inputs: list[tuple[str, str]]        # (name, meaning), the model's positional arguments
    outputs: list[tuple[str, str]]       # (name, meaning), what the model returns (no state)
    stateful: bool = False               # always carries its state (language models)


def interface(cfg) -> Interface:
    V = "the vocabulary (model.json: vocab)"
    return {
        "names": Interface(
            [("tokens", "(L, N) int64: characters as indices into model.json's alphabet, "
              "padded with any index"), ("lengths", "(N,) int64: each name's length")],
            [("logits", "(N, C) float32: scores per language (model.json: classes); softmax "
              "gives probabilities")]),
        "ptb": Interface([("tokens", f"(L, N) int64: word indices into {V}")],
                         [("logits", "(L, N, V) float32: next-word scores")], stateful=True),
        "chars": Interface([("tokens", f"(L, N) int64: character indices into {V}")],
                           [("logits", "(L, N, V) float32: next-character scores")],
                           stateful=True),
        "forecast": Interface(
            [("window", f"(L, N, 1) float32: the last {cfg.window} transformed values z "
              "(model.json: transform)")],
            [("next", "(N, 1) float32: the next transformed value z")]),
        "adding": Interface([("inputs", "(T, N, 2) float32: values and markers")],
                            [("prediction", "(N, 1) float32: the sum of the marked values")]),
        "copy": Interface([("tokens", "(T, N) int64: symbols, blanks, delimiter")],
                          [("logits", "(T, N, V) float32: scores of the symbol at each step")]),
        "jsb": Interface([("frames", "(L, N, 88) float32: piano-roll frames, 0/1"),
                          ("lengths", "(N,) int64: each chorale's frames")],
                         [("logits", "(L, N, 88) float32: per key, the logit of sounding at "
                           "the next step")]),
        "parity": Interface([("tokens", "(L, N) int64: bits 0/1, padded with any index"),
                             ("lengths", "(N,) int64: each string's length")],
                            [("logits", "(N, 2) float32: scores of an even (0) and an odd (1) "
                              "count of ones")]),
    }[cfg.task]


def example_inputs(cfg, vocab: int) -> tuple[Tensor, ...]:
    """Inputs of the task's shapes, length 5 and batch 3 (sizes above 1 stay dynamic)."""
    L, N = 5, 3
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (L, N), generator=g)
    lengths = torch.tensor([5, 3, 4])
    return {"names": (tokens, lengths), "ptb": (tokens,), "chars": (tokens,),
            "forecast": (torch.randn(L, N, 1, generator=g),),
            "adding": (torch.rand(L, N, 2, generator=g),), "copy": (tokens,),
            "jsb": ((torch.rand(L, N, 88, generator=g) > 0.8).float(), lengths),
            "parity": (tokens, lengths)}[cfg.task]


def _vocab_size(cfg, task) -> int:
    from ..tasks.synthetic import COPY_SYMBOLS
    if cfg.task == "names":
        return len(cfg.meta["alphabet"])
    if cfg.task in ("ptb", "chars"):
        return len(task.vocab)
    if cfg.task == "parity":
        from ..data.synthetic import PARITY_PAD
        return PARITY_PAD + 1
    return COPY_SYMBOLS + 2


def task_meta(cfg, task) -> dict:
    """What a caller needs beyond the graph to prepare inputs and read outputs."""
    if cfg.task == "names":
        return {"alphabet": cfg.meta["alphabet"], "classes": cfg.meta["languages"],
                "encode": "NFD-decompose the name, drop combining marks, keep the characters "
                          "of alphabet, index each into alphabet"}
    if cfg.task in ("ptb", "chars"):
        how = ("split on whitespace; a line end is <eos>; words outside vocab are <unk>"
               if cfg.task == "ptb" else "one index per character")
        return {"vocab": task.vocab, "tokenize": how}
    if cfg.task == "forecast":
        return {"window": cfg.window, "transform": cfg.meta["transform"],
                "series": cfg.meta.get("name"),
                "recipe": "u = log(y) if transform.log else y; d_t = u_t - u_{t-difference} "
                          "(difference 0: d = u); z = (d - mean) / std; feed the last window "
                          "z; next u = z_next * std + mean + u_{t+1-difference}; y = exp(u) "
                          "if log"}
    if cfg.task == "copy":
        from ..tasks.synthetic import COPY_LENGTH, COPY_SYMBOLS
        return {"symbols": COPY_SYMBOLS, "copy_length": COPY_LENGTH, "length": cfg.length}
    if cfg.task == "adding":
        return {"length": cfg.length}
    if cfg.task == "parity":
        return {"classes": ["even", "odd"], "length": cfg.length,
                "long_lengths": cfg.meta.get("long_lengths")}
    return {"keys": 88}


@dataclass
class StateInput:
    """One state of a streaming export: its input and output names, its shape with "N" for the
    batch, and its value at the start of a stream."""
    name: str                            # initial_h
    output: str                          # Y_h
    shape: tuple                         # (layers, "N", H)
    start: float = 0.0                   # zeros; mLSTM's m: -inf (a fresh stabiliser)

    def fresh(self, N: int) -> Tensor:
        return torch.full([N if d == "N" else d for d in self.shape], self.start)


def state_inputs(model: nn.Module) -> list[StateInput]:
    """The states a streaming export of model carries, read from its layers' ONNX forms."""
    _, layers = _swap_layers(model)
    ins, outs = _state_names(layers)
    shapes, starts = [], []
    for layer in layers:
        shapes += layer.state_shapes("N")
        starts += [float(v) for v in layer.start_values()]
    return [StateInput(i, o, tuple(sh), st) for i, o, sh, st in zip(ins, outs, shapes, starts)]


class OnnxTaskModel(nn.Module):
    """An exported file run by onnxruntime behind the task model's own call, so that the
    task's evaluate() scores it exactly as it scores the torch model."""

    def __init__(self, path: Path, cfg, streaming: bool, states: list[StateInput]):
        super().__init__()
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.cfg, self.iface = cfg, interface(cfg)
        self.streaming = streaming or self.iface.stateful
        self.states = states

    def forward(self, *args, state=None, targets=None):
        if self.iface.stateful and len(args) > 1:     # LanguageModel(tokens, state, targets)
            args, state, *rest = args[:1], *args[1:]
            targets = rest[0] if rest else targets
        feed = {name: a.numpy() for (name, _), a in zip(self.iface.inputs, args)}
        if self.streaming:
            N = args[0].shape[1]
            states = (state if isinstance(state, tuple) else (state,)) if state is not None \
                else tuple(s.fresh(N) for s in self.states)
            feed.update({s.name: t.numpy() for s, t in zip(self.states, states)})
        outs = [torch.from_numpy(o) for o in self.session.run(None, feed)]
        n = len(self.iface.outputs)
        result, new_state = outs[0] if n == 1 else tuple(outs[:n]), outs[n:]
        if not self.iface.stateful:
            return result
        new_state = tuple(new_state) if len(new_state) > 1 else new_state[0]
        if targets is None:
            return result, new_state
        loss = torch.nn.functional.cross_entropy(result.reshape(-1, result.shape[-1]),
                                                 targets.reshape(-1))
        return loss, new_state

    def loss(self, tokens, targets, state=None):
        return self(tokens, state=state, targets=targets)


def quantize_int8(src: Path, dst: Path) -> None:
    """onnxruntime's dynamic quantization: int8 weights of LSTM and MatMul/Gemm, activations
    quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def export_task_model(cfg, task, model: nn.Module, out: str | os.PathLike, *,
                      streaming: bool = False, int8: bool = False,
                      opset: int | None = None) -> dict:
    """Write the run's model to out (.onnx) and its description to out with .json; with
    int8, the dynamically quantized model, and both scored on the run's test data (task must
    then hold its data: ``make_task(cfg, for_training=True)``). Returns the description."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"unknown format {out.suffix or '(no suffix)'!r} for {out}: lstmkit "
                          "exports ONNX, give a path ending in .onnx")
    if not out.parent.is_dir():
        raise ExportError(f"cannot write {out}: {out.parent} is not a folder")
    if not os.access(out.parent, os.W_OK):
        raise ExportError(f"cannot write {out}: {out.parent} is not writable")
    iface = interface(cfg)
    stream = streaming or iface.stateful
    if stream and cfg.bidirectional:
        raise ExportError("--streaming needs a unidirectional model; this run reads each name "
                          "both ways (--bidirectional)")
    model = model.float().eval()
    args = example_inputs(cfg, _vocab_size(cfg, task))
    names = [n for n, _ in iface.inputs]
    outputs = [n for n, _ in iface.outputs]
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "lstmkit": __version__,
            "task": cfg.task, "cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden,
            "model": out.name, "precision": "int8" if int8 else "float32",
            "inputs": [{"name": n, "meaning": m} for n, m in iface.inputs],
            "outputs": [{"name": n, "meaning": m} for n, m in iface.outputs],
            **task_meta(cfg, task)}
    states = state_inputs(model) if stream else []
    for st in states:
        shape = f"({', '.join(str(d) for d in st.shape)}) float32"
        k = st.name.removeprefix("initial_")
        start = "zeros" if st.start == 0 else f"{st.start:g} everywhere"
        meta["inputs"].append({"name": st.name, "meaning": f"{shape}: the state {k} before "
                               f"this call; {start} to start"})
        meta["outputs"].append({"name": st.output, "meaning": f"{shape}: the state {k} after "
                                "this call; feed it to the next call"})
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        f32 = Path(tmp) / "float32.onnx"
        export_onnx(model, f32, args, streaming=stream, opset=opset, input_names=names,
                    output_names=outputs)
        meta["max_abs_diff_vs_torch"] = _parity(model, f32, cfg, args, stream, states)
        final = f32
        if int8:
            final = Path(tmp) / "int8.onnx"
            quantize_int8(f32, final)
            meta["size_bytes"] = {"float32": f32.stat().st_size, "int8": final.stat().st_size}
            import onnx
            left = sorted({n.op_type for n in onnx.load(final).graph.node} &
                          {"GRU", "RNN", "Scan"})
            if left:                       # what dynamic quantization has no int8 form of
                meta["int8_note"] = (f"onnxruntime has no int8 form of {'/'.join(left)}: "
                                     "those recurrent layers stay float32; the matrix "
                                     "products outside them are int8")
            meta["evaluation"] = {
                "split": "test",
                "float32": task.evaluate(OnnxTaskModel(f32, cfg, stream, states), "test"),
                "int8": task.evaluate(OnnxTaskModel(final, cfg, stream, states), "test")}
        os.replace(final, out)
    atomic_write_json(out.with_suffix(".json"), meta)
    return meta


@torch.no_grad()
def _parity(model, path, cfg, args, stream, states) -> float:
    """Largest |onnxruntime - torch| over the outputs, at a length and batch other than the
    export example's (a wrong dynamic axis or gate order shows here)."""
    L, N = 9, 4
    g = torch.Generator().manual_seed(1)
    bigger = []
    for a in args:
        if a.dtype == torch.int64 and a.dim() == 1:          # lengths
            bigger.append(torch.tensor([9, 2, 7, 9]))
        elif a.dtype == torch.int64:
            bigger.append(torch.randint(0, int(a.max()) + 1, (L, N), generator=g))
        else:
            bigger.append(torch.rand(L, N, *a.shape[2:], generator=g).round()
                          if cfg.task == "jsb" else torch.rand(L, N, *a.shape[2:], generator=g))
    if cfg.task == "jsb":                                   # the layer wants longest first
        bigger[1] = torch.tensor([9, 9, 7, 2])
    expected = model(*bigger)
    got = OnnxTaskModel(path, cfg, stream, states)(*bigger)
    flat = lambda r: [r] if isinstance(r, Tensor) else [t for x in r for t in flat(x)]  # noqa
    diffs = [float((a - b).abs().max()) for a, b in zip(flat(got), flat(expected))]
    diff = max(diffs)
    if not math.isfinite(diff) or diff > 1e-3:
        raise ExportError(f"the exported model differs from the run's by {diff:.3g}; "
                          "nothing was written")
    return diff
