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
    def names(self) -> dict[str, str]:
        """Names for the report where a letter means another thing in this cell."""
        return self._cell.trace_names

    @property
    def bounded(self) -> tuple[str, ...]:
        """The gates whose values lie in [0, 1]."""
        cell = self._cell
        shown = cell.gate_values({g: torch.zeros(1) for g in cell.gates})    # names only
        return tuple(g for g in shown if g not in cell.tanh_gates)

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
    """The result of ``layer.trace(...)``: ``output``, ``h_n``, ``c_n`` and ``steps``; ``state``
    is the final state as ``forward`` returns it (h_n, (h_n, c_n), or all of the sLSTM's)."""

    def __init__(self, layer, records, batch_sizes, batch: int):
        self.steps = [[StepTrace(rec, layer.cell, bool(d), batch_sizes, batch)
                       for d, rec in enumerate(layer_records)] for layer_records in records]
        self.output = self.h_n = self.c_n = self.state = None
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


class KeptSteps:
    """One layer and direction of a whole-sequence layer's trace (mLSTM, minGRU, minLSTM),
    served as ``StepTrace`` serves a per-step cell's: time-major (T, N, ...) in time order, zero
    past each length. The layer fills it in processing order while it runs:

        hs        [h_t (N, H)], kept with their gradients (``retain_grad``)
        gates     {name: (T, N, ...)}
        kept      {name: (T, N, ...)} the states shown
        carried   {name: [state_t]}, the states BPTT carries, kept with their gradients

    ``names`` gives the report a name for a quantity whose key means another thing in torch's
    cells (the mLSTM's normaliser n_t is not the GRU's new state n_t); ``bounded`` names the
    gates whose values lie in [0, 1] (saturation is read for those)."""

    c = None
    grad_c = None
    names: dict[str, str] = {}
    bounded: tuple[str, ...] = ()

    def __init__(self, reverse: bool, order: Tensor | None = None, valid: Tensor | None = None):
        # order (T, N, 1): the time index of each processed step (a reverse direction with
        # lengths reads each sequence from its own end); valid (T, N, 1): inside the length
        self._reverse, self._order, self._valid = reverse, order, valid
        self.hs: list[Tensor] = []
        self.kept_gates: dict[str, Tensor] = {}
        self.kept_states: dict[str, Tensor] = {}
        self.carried: dict[str, list[Tensor]] = {}

    def keep(self, h: Tensor, **carried: Tensor) -> None:
        """Keep step t's h_t and carried states, with their gradients after a backward pass."""
        for z in (h, *carried.values()):
            if z.requires_grad:
                z.retain_grad()
        self.hs.append(h)
        for name, z in carried.items():
            self.carried.setdefault(name, []).append(z)

    def _time(self, x: Tensor) -> Tensor:
        """Processing order -> time order, zero past each length."""
        x = x.detach()
        if self._reverse:
            if self._order is None:
                x = x.flip(0)
            else:                       # the per-sequence reversal is its own inverse
                index = self._order.reshape(*self._order.shape[:2], *[1] * (x.dim() - 2))
                x = x.gather(0, index.expand_as(x))
        if self._valid is not None:
            x = x * self._valid.reshape(*self._valid.shape[:2], *[1] * (x.dim() - 2))
        return x

    def _grads(self, items: list[Tensor]) -> Tensor | None:
        if not items or any(t.grad is None for t in items):
            return None
        return self._time(torch.stack([t.grad for t in items]))

    @property
    def h(self) -> Tensor:
        return self._time(torch.stack(self.hs))

    @property
    def gates(self) -> dict[str, Tensor]:
        return {k: self._time(v) for k, v in self.kept_gates.items()}

    @property
    def states(self) -> dict[str, Tensor]:
        shown = {k: self._time(torch.stack(v)) for k, v in self.carried.items()}
        return {**shown, **{k: self._time(v) for k, v in self.kept_states.items()}}

    @property
    def grad_h(self) -> Tensor | None:
        return self._grads(self.hs)

    @property
    def grad_states(self) -> dict[str, Tensor | None]:
        return {k: self._grads(v) for k, v in self.carried.items()}


class SequenceTrace:
    """What a whole-sequence layer's ``trace`` returns: ``output`` and ``state`` as ``forward``
    gives them (``h_n`` too where the state is h), and ``steps[layer][direction]``."""

    def __init__(self, output: Tensor, state, steps: list, h_n: Tensor | None = None):
        self.output, self.state, self.steps, self.h_n = output, state, steps, h_n
        self.c_n = None
