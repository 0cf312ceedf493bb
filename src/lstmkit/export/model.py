"""``export_onnx``: any lstmkit layer, or a model holding them, as one ONNX file.

The lstmkit layers become their ONNX forms (``lstmkit.layers.onnx``): ONNX's native recurrent
operators for LSTM, GRU and RNN, a Scan over the step for the other cells (sLSTM, the LayerNorm
cells, registered cells, minGRU, minLSTM), mLSTM's parallel form in plain operators; everything
else in the model goes through torch.onnx's exporter (torch.export underneath). Every input
dimension the model does not fix (sequence length, batch size) stays dynamic.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..layers import _StepCell
from ..layers.onnx import LAYER_TYPES, ExportError, OnnxLayer, onnx_form


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs the onnx extra ({e.name} is not installed): "
                          "pip install 'lstmkit[onnx]'") from None


def _swap_layers(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """A copy of model (eval mode) with each lstmkit layer replaced by its ONNX form (an
    xLSTM stack as one, its layers inside it)."""
    if isinstance(model, _StepCell):
        raise ExportError(f"{type(model).__name__} (one step) has no ONNX form here; export "
                          "the layer form (LSTM, GRU, RNN), which runs any number of steps")
    onnx_layer = onnx_form(model)
    if onnx_layer is not None:
        return onnx_layer, [onnx_layer]
    model = copy.deepcopy(model).eval()
    swapped = []

    def swap(parent: nn.Module, prefix: str) -> None:
        for attr, child in list(parent.named_children()):
            if isinstance(child, _StepCell):
                raise ExportError(f"{prefix}{attr}: {type(child).__name__} (one step) has no "
                                  "ONNX form here; use the layer form (LSTM, GRU, RNN)")
            onnx_layer = onnx_form(child)
            if onnx_layer is None:
                swap(child, f"{prefix}{attr}.")
            else:
                setattr(parent, attr, onnx_layer)
                swapped.append(onnx_layer)

    swap(model, "")
    return model, swapped


def _flatten(out) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flatten(item)]
    if out is None:
        return []
    raise ExportError(f"the model returns a {type(out).__name__}; an ONNX export needs tensors "
                      "or (nested) tuples of tensors")


@contextlib.contextmanager
def _quiet():
    """torch.onnx's notes (torchvision absent, folding skipped) stay out of the caller's
    output; its errors still come as exceptions."""
    # the root logger: onnxruntime's quantization tools log their advice there
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir", None)]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _Exported(nn.Module):
    """What is traced: the model's inputs (then each layer's initial state when streaming) ->
    the model's outputs as a flat tuple (then each layer's final state when streaming)."""

    def __init__(self, model: nn.Module, layers: list[OnnxLayer], streaming: bool):
        super().__init__()
        self.model, self.layers, self.streaming = model, layers, streaming
        self.n_states = [len(layer.state_names) for layer in layers]

    def forward(self, *args):
        n_state = sum(self.n_states) if self.streaming else 0
        model_args, states = args[: len(args) - n_state], list(args[len(args) - n_state :])
        for layer, n in zip(self.layers, self.n_states):
            layer.stream_in = tuple(states[:n]) if self.streaming else None
            states = states[n:]
        outs = _flatten(self.model(*model_args))
        if not self.streaming:
            return tuple(outs)
        streamed = [s for layer in self.layers for s in layer.stream_out]
        # a final state the model also returns (a layer, a language model) appears once, last
        return tuple([t for t in outs if not any(t is s for s in streamed)] + streamed)


def _state_names(layers: list[OnnxLayer]) -> tuple[list[str], list[str]]:
    ins, outs = [], []
    for k, layer in enumerate(layers):
        sfx = "" if len(layers) == 1 else f"_{k}"
        ins += [f"initial_{s}{sfx}" for s in layer.state_names]
        outs += [f"Y_{s}{sfx}" for s in layer.state_names]
    return ins, outs


def export_onnx(module: nn.Module, path: str | os.PathLike, example_input, *,
                streaming: bool = False, opset: int | None = None,
                input_names: list[str] | None = None,
                output_names: list[str] | None = None) -> Path:
    """Write module (an lstmkit layer, or any model holding lstmkit layers) as an ONNX file.

    example_input: a tensor or a tuple of the module's positional arguments. Every dimension
    the model does not fix stays dynamic (give sizes of at least 2 for the dimensions to keep
    dynamic: torch.export fixes a size-1 example dimension). With ``streaming=True`` each
    layer's state is an input (``initial_h``, ``initial_c``, zeros for a fresh stream) and an
    output (``Y_h``, ``Y_c``: (num_layers * D, B, H)), so a long sequence can be fed in chunks;
    one pair per state the layer has, named as it names them (sLSTM: h, c, n, m; mLSTM: C, n, m
    of shapes (L * D, B, NH, d, d), (L * D, B, NH, d), (L * D, B, NH), a fresh stream's m is
    -inf (zeros give the same outputs); an xLSTM stack: its seven), with a suffix ``_k`` per
    layer where the model holds several (``lstmkit.export.runs.state_inputs`` lists them).

    Inputs are named ``input_names`` (default ``input`` or ``input_0, input_1, ...``), outputs
    ``output_names`` (default ``output`` then ``h_n``, ``c_n``, ... (each state, ``_n``) for a
    layer, else ``output_k``).
    The file is written whole or not at all. Raises ExportError for what has no ONNX form.
    """
    _require_onnx()
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    for p in list(module.parameters()) + list(module.buffers()):
        if p.is_floating_point() and p.dtype != torch.float32:
            raise ExportError(f"parameters of dtype {p.dtype} cannot be exported: "
                              "onnxruntime runs the LSTM, GRU and RNN operators (and the "
                              "forms here) in float32 only; export a float32 copy "
                              "(model.float())")
    model, layers = _swap_layers(module)
    if not layers:
        raise ExportError(f"{type(module).__name__} holds no lstmkit layer (LSTM, GRU, "
                          "RNN, Recurrent, sLSTM, mLSTM, minGRU, minLSTM, xLSTM)")
    if streaming:
        for layer in layers:
            if layer.D == 2:
                raise ExportError("streaming needs unidirectional layers: a bidirectional "
                                  "layer reads each sequence from its end")
    is_layer = isinstance(module, LAYER_TYPES)
    wrapper = _Exported(model, layers, streaming)
    with torch.no_grad():                    # the state shapes, from one run of the ONNX form
        for layer in layers:
            layer.stream_in = None
        _flatten(model(*args))
        state_args = tuple(torch.zeros_like(s) for layer in layers for s in layer.stream_out) \
            if streaming else ()
    all_args = args + state_args
    n_out = len(_flatten(wrapper(*all_args)))
    state_in, state_out = _state_names(layers) if streaming else ([], [])
    if input_names is None:
        input_names = ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    if output_names is None:
        if is_layer:
            output_names = ["output"] + ([] if streaming else
                                         [f"{s}_n" for s in layers[0].state_names])
        else:
            n = n_out - len(state_out)
            output_names = ["output"] if n == 1 else [f"output_{i}" for i in range(n)]
    if len(input_names) != len(args):
        raise ExportError(f"{len(input_names)} input names for {len(args)} inputs")
    output_names = list(output_names) + state_out
    if len(output_names) != n_out:
        raise ExportError(f"{len(output_names)} output names for {n_out} outputs")
    auto = torch.export.Dim.AUTO
    # a state's batch (dim 1) is its only free size: a free layers dim would reach a Scan's
    # initial state through a slice, which torch.export cannot trace
    dynamic = tuple({i: auto for i in range(a.dim())} if isinstance(a, Tensor) else None
                    for a in args) + tuple({1: auto} for _ in state_args)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with _quiet():
            try:
                program = torch.onnx.export(
                    wrapper, all_args, dynamo=True, dynamic_shapes=(dynamic,),
                    input_names=list(input_names) + state_in, output_names=output_names,
                    opset_version=opset, verbose=False, optimize=True)
            except ExportError:
                raise
            except Exception as e:         # torch.export's own errors are long; one line
                cause = e.__cause__ or e
                first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
                raise ExportError(f"torch.onnx could not export {type(module).__name__}: "
                                  f"{type(cause).__name__}: {first[:300]}") from e
        program.save(tmp, external_data=False)
        import onnx
        onnx.checker.check_model(tmp)
        written = next(o.version for o in onnx.load(tmp).opset_import if o.domain in ("",
                                                                                 "ai.onnx"))
        if opset is not None and written != opset:   # torch.onnx falls back without a word
            raise ExportError(f"opset {opset} was asked for, but torch.onnx wrote opset "
                              f"{written} (it converts to opsets 17 and up that onnx knows)")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
