"""Leaving Python: lstmkit models as ONNX files onnxruntime runs (``export_onnx``), a run
folder's model with its vocabulary and normalisation beside it (``export_run``)."""

from .layers import ExportError, onnx_weights
from .model import export_onnx

__all__ = ["ExportError", "export_onnx", "onnx_weights"]
