"""The theory, measured: gradient flow through time (``gradflow``) and the worked example of one
LSTM unit (``worked_unit``). Functions return numbers and arrays; figures are made elsewhere."""

from .gradflow import (
    compare_cells,
    exploding_demo,
    format_table,
    gradient_norms,
    jacobian_norms,
    lstm_cell_path_product,
    rnn_jacobian_product,
)

__all__ = ["gradient_norms", "rnn_jacobian_product", "lstm_cell_path_product", "jacobian_norms",
           "exploding_demo", "compare_cells", "format_table"]
