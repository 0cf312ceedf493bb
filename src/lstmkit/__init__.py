"""lstmkit: LSTM, its classic variants, GRU and RNN with hand-written backpropagation through
time, drop-in for torch.nn, with a trace of every gate, state and per-step gradient."""

from ._version import __version__
from .export import export_onnx
from .layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, minGRU, minLSTM, mLSTM, sLSTM, xLSTM
from .trace import StepTrace, Trace

__all__ = ["LSTM", "GRU", "RNN", "sLSTM", "mLSTM", "xLSTM", "minGRU", "minLSTM", "LSTMCell",
           "GRUCell", "RNNCell", "Trace", "StepTrace", "export_onnx", "__version__"]
