"""Leaving Python: lstmkit models as ONNX files onnxruntime runs (``export_onnx``), a run
folder's model with its vocabulary and normalisation beside it (``export_run``)."""

from ..layers.onnx import ExportError, OnnxLayer, onnx_form, onnx_weights
from .model import export_onnx

__all__ = ["ExportError", "OnnxLayer", "export_onnx", "onnx_form", "onnx_weights"]
