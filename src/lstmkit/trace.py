"""What a traced run records: every gate, hidden and cell state, and after a backward pass the
gradient BPTT carried to each of them.

``layer.trace(input)`` returns a ``Trace``: ``output``, ``h_n`` and ``c_n`` as ``forward`` gives
them, and ``steps[layer][direction]``, a ``StepTrace`` of time-major tensors (T, N, ...) in the
caller's batch order, zero past each sequence's length:

    h        (T, N, H_out)   h_t, short-term memory
    c        (T, N, H)       c_t, long-term memory (LSTM; None otherwise)
    states   {name: (T, N, size)}   every state by name (sLSTM: h, c, n, m)
    gates    {name: (T, N, H)}   LSTM i f g o, GRU r z n, RNN none
    grad_h   (T, N, H_out)   dL/dh_t, the total derivative BPTT carries (None before backward)
    grad_c   (T, N, H)       dL/dc_t (LSTM)

``masks`` holds the masks of a call with ``weight_drop``, ``input_dropout``,
``recurrent_dropout`` (training) or ``zoneout`` (training: 0/1 per step; evaluation: z).

For a reverse direction index t is still time: h[t] is the reverse pass's state at step t.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .engine.sequence import StepRecord


class StepTrace:
    """One layer and direction of a traced run (see the module docstring)."""

    def __init__(self, record: StepRecord, cell, reverse: bool, batch_sizes, batch: int):
        self._record, self._reverse, self._cell = record, reverse, cell
        self._mask = None                                        # (T, N, 1) in processing order
        if batch_sizes is not None:
            active = torch.tensor(batch_sizes if not reverse else batch_sizes[::-1])
            self._mask = (torch.arange(batch)[None, :] < active[:, None]).unsqueeze(-1)
        self._unsort = None
        self._total_length = None                             # pad time to this many steps

    def _time_major(self, x: Tensor) -> Tensor:
        """Processing order -> time order, zero past each length, the caller's batch order."""
        x = x.detach()
        if self._mask is not None:
            x = x * self._mask.to(x.device)
        if self._reverse:
            x = x.flip(0)
        if self._unsort is not None:
            x = x.index_select(1, self._unsort)
        if self._total_length is not None and x.shape[0] < self._total_length:
            x = torch.cat([x, x.new_zeros(self._total_length - x.shape[0], *x.shape[1:])])
        return x

    @property
    def h(self) -> Tensor:
        return self._time_major(self._record.hist[0][1:])

    @property
    def c(self) -> Tensor | None:
        hist = self._record.hist
        return self._time_major(hist[1][1:]) if len(hist) > 1 else None

    @property
    def states(self) -> dict[str, Tensor]:
        """Every state by the cell's name for it, (T, N, size) each: h, c for an LSTM; h, c, n,
        m for the sLSTM."""
        return {name: self._time_major(h[1:])
                for name, h in zip(self._cell.state_names, self._record.hist)}

    @property
    def gates(self) -> dict[str, Tensor]:
        blocks = self._record.gates.split(self._cell.hidden_size, -1)
        stored = dict(zip(self._cell.gates, blocks))
        return {name: self._time_major(g) for name, g in self._cell.gate_values(stored).items()}

    @property
    def grad_h(self) -> Tensor | None:
        d = self._record.dhist
        return None if d is None else self._time_major(d[0])

    @property
    def grad_c(self) -> Tensor | None:
        d = self._record.dhist
        return None if d is None or len(d) < 2 else self._time_major(d[1])


class Trace:
    """The result of ``layer.trace(...)``: ``output``, ``h_n``, ``c_n`` and ``steps``."""

    def __init__(self, layer, records, batch_sizes, batch: int):
        self.steps = [[StepTrace(rec, layer.cell, bool(d), batch_sizes, batch)
                       for d, rec in enumerate(layer_records)] for layer_records in records]
        self.output = self.h_n = self.c_n = None
        # the call's regulariser masks: "weight_hh" (one per layer and direction), "input"
        # (one (N, H_in) per layer), "h" (one (N, H_out) per layer and direction), each scaled
        # by 1 / (1 - p); "zone" (per layer and direction, per state (h, c): (T, N, size) in
        # processing order, or None); {} when none ran
        self.masks: dict = {}

    def pad_time(self, total_length: int) -> None:
        """Report steps up to total_length (a padded input longer than its longest sequence)."""
        for layer in self.steps:
            for step in layer:
                step._total_length = total_length

    def finish(self, output, states, unsorted_indices) -> None:
        self.output = output
        self.h_n = states[0]
        self.c_n = states[1] if len(states) > 1 else None
        for layer in self.steps:
            for step in layer:
                step._unsort = unsorted_indices
