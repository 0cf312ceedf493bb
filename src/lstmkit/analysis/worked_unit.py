"""The classic lesson of one LSTM unit, worked by hand: every gate's arithmetic in words and
numbers, the same unit as an ``lstmkit.LSTMCell(1, 1)``, and a unit trained to the same job.

One unit, scalar x_t, long-term memory c_t and short-term memory h_t. Each gate mixes the
short-term memory and the input with its own two weights and a bias:

    f_t = sigma(w_f,short h_{t-1} + w_f,input x_t + b_f)    % of the long-term memory to keep
    i_t = sigma(w_i,short h_{t-1} + w_i,input x_t + b_i)    % of the potential memory to remember
    g_t = tanh (w_g,short h_{t-1} + w_g,input x_t + b_g)    potential long-term memory
    c_t = f_t * c_{t-1} + i_t * g_t                          new long-term memory
    o_t = sigma(w_o,short h_{t-1} + w_o,input x_t + b_o)    % of the potential short-term memory
    h_t = o_t * tanh(c_t)                                    new short-term memory (the output)

The lesson's weights (``WEIGHTS``) make the unit read four days of a company's stock and predict
the fifth from its last short-term memory: company A (0, 0.5, 0.25, 1) -> about 0, company B
(1, 0.5, 0.25, 1) -> about 1. The two differ only on day 1, so the unit has to remember it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..cells.lstm import GATES  # the row order of LSTMCell's weights
from ..layers import LSTM, LSTMCell

# {gate: {"short": weight on h_{t-1}, "input": weight on x_t, "bias": b}}
WEIGHTS: dict[str, dict[str, float]] = {
    "f": {"short": 2.70, "input": 1.63, "bias": 1.62},
    "i": {"short": 2.00, "input": 1.65, "bias": 0.62},
    "g": {"short": 1.41, "input": 0.94, "bias": -0.32},
    "o": {"short": 4.38, "input": -0.19, "bias": 0.59},
}
COMPANIES: dict[str, tuple[float, ...]] = {"A": (0.0, 0.5, 0.25, 1.0), "B": (1.0, 0.5, 0.25, 1.0)}
TARGETS = {"A": 0.0, "B": 1.0}


# ----------------------------------------------------------------------------- the cell
def unit_cell(weights: dict = WEIGHTS, dtype: torch.dtype | None = None) -> LSTMCell:
    """An ``LSTMCell(1, 1)`` holding ``weights``: weight_ih (4, 1) = the input weights and
    weight_hh (4, 1) = the short-term weights in rows i, f, g, o; bias_ih = the biases,
    bias_hh = 0."""
    cell = LSTMCell(1, 1, dtype=dtype)
    with torch.no_grad():
        for name, key in (("weight_ih", "input"), ("weight_hh", "short"), ("bias_ih", "bias")):
            values = torch.tensor([weights[g][key] for g in GATES], dtype=cell.weight_ih.dtype)
            getattr(cell, name).copy_(values.view_as(getattr(cell, name)))
        cell.bias_hh.zero_()
    return cell


def cell_weights(cell: LSTMCell) -> dict[str, dict[str, float]]:
    """The named form of an ``LSTMCell(1, 1)``'s weights (b = bias_ih + bias_hh), as ``WEIGHTS``."""
    w_ih, w_hh = cell.weight_ih.detach().flatten(), cell.weight_hh.detach().flatten()
    b = (cell.bias_ih + cell.bias_hh).detach()
    rows = {g: k for k, g in enumerate(GATES)}
    return {g: {"short": float(w_hh[rows[g]]), "input": float(w_ih[rows[g]]),
                "bias": float(b[rows[g]])} for g in WEIGHTS}


# ----------------------------------------------------------------------------- one step, in words
def _num(v: float) -> str:
    """A memory or input value: up to 3 decimals, no trailing zeros."""
    s = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _mix(gate: dict, short: float, x: float) -> tuple[float, str]:
    """(w_short h + w_input x + b, the sum written out)."""
    a = gate["short"] * short + gate["input"] * x + gate["bias"]
    sign = "-" if gate["bias"] < 0 else "+"
    text = (f"({_num(short)} x {gate['short']:.2f}) + ({_num(x)} x {gate['input']:.2f}) "
            f"{sign} {abs(gate['bias']):.2f} = {a:.2f}")
    return a, text


def _unit_layer(weights: dict) -> LSTM:
    """The unit as a one-layer ``LSTM(1, 1)`` holding ``weights`` (float64, python engine), so
    that a trace shows every gate."""
    cell = unit_cell(weights, torch.float64)
    layer = LSTM(1, 1, dtype=torch.float64, engine="python")
    layer.load_state_dict({f"{name}_l0": value for name, value in cell.state_dict().items()})
    return layer


def _steps(inputs: Sequence[float], weights: dict, long: float, short: float) -> list[dict]:
    """Every number of each step of the unit over ``inputs`` from c_0 = long, h_0 = short, as
    ``step_values`` describes it: the gates and the memories from a trace of the unit (the
    library's LSTM equations), the pre-activations as the lesson writes them out."""
    if not len(inputs):
        return []
    x = torch.tensor([float(v) for v in inputs], dtype=torch.float64).view(-1, 1, 1)
    hx = (torch.full((1, 1, 1), float(short), dtype=torch.float64),
          torch.full((1, 1, 1), float(long), dtype=torch.float64))
    with torch.no_grad():
        step = _unit_layer(weights).trace(x, hx).steps[0][0]
    gates = {name: g.flatten().tolist() for name, g in step.gates.items()}
    cs, hs = step.c.flatten().tolist(), step.h.flatten().tolist()
    days = []
    for t, x_t in enumerate(x.flatten().tolist()):
        f, i, g, o = (gates[name][t] for name in ("f", "i", "g", "o"))
        pre = {name: _mix(weights[name], short, x_t)[0] for name in ("f", "i", "g", "o")}
        days.append({"x": x_t, "c_prev": long, "h_prev": short, "a_f": pre["f"], "f": f,
                     "a_i": pre["i"], "i": i, "a_g": pre["g"], "g": g, "kept": f * long,
                     "added": i * g, "c": cs[t], "a_o": pre["o"], "o": o,
                     "tanh_c": math.tanh(cs[t]), "h": hs[t]})
        long, short = cs[t], hs[t]
    return days


def step_values(long: float, short: float, x: float, weights: dict = WEIGHTS) -> dict:
    """Every number of one step, in plain floats: x, c_prev, h_prev; a_f, f; a_i, i; a_g, g;
    kept = f * c_prev, added = i * g, c; a_o, o, tanh_c, h (a_* are pre-activations)."""
    return _steps([x], weights, long, short)[0]


def explain_step(long: float, short: float, x: float,
                 weights: dict = WEIGHTS) -> tuple[str, dict]:
    """One step of the unit in words and numbers, from long-term memory c_{t-1} = long,
    short-term memory h_{t-1} = short and input x_t = x.

    Returns (text, values), values as ``step_values``: the numbers the text shows, unrounded.
    """
    v = step_values(long, short, x, weights)
    _, f_sum = _mix(weights["f"], short, x)
    _, i_sum = _mix(weights["i"], short, x)
    _, g_sum = _mix(weights["g"], short, x)
    _, o_sum = _mix(weights["o"], short, x)
    lines = [
        f"Long-term memory {_num(long)}, short-term memory {_num(short)}, input {_num(x)}.",
        "1. Forget gate: how much of the long-term memory to keep.",
        f"   {f_sum}, sigma({v['a_f']:.2f}) = {v['f']:.3f}, so {100 * v['f']:.1f}% of the "
        f"long-term memory is kept: {_num(long)} x {v['f']:.3f} = {v['kept']:.3f}.",
        "2. Input gate: the % potential memory to remember.",
        f"   {i_sum}, sigma({v['a_i']:.2f}) = {v['i']:.3f}, so {100 * v['i']:.1f}% of the "
        "potential long-term memory is remembered.",
        "3. Potential long-term memory (the candidate g).",
        f"   {g_sum}, tanh({v['a_g']:.2f}) = {v['g']:.3f}; remembered: {v['i']:.3f} x "
        f"{v['g']:.3f} = {v['added']:.3f}.",
        f"4. New long-term memory: {v['kept']:.3f} + {v['added']:.3f} = {v['c']:.3f}.",
        "5. Output gate: the % potential short-term memory to remember.",
        f"   {o_sum}, sigma({v['a_o']:.2f}) = {v['o']:.3f}, so {100 * v['o']:.1f}% of the "
        "potential short-term memory is output.",
        f"6. New short-term memory: the potential short-term memory is tanh({v['c']:.3f}) = "
        f"{v['tanh_c']:.3f}, and {v['o']:.3f} x {v['tanh_c']:.3f} = {v['h']:.3f}.",
    ]
    return "\n".join(lines), v


# ----------------------------------------------------------------------------- a sequence
def run_sequence(inputs: Sequence[float], weights: dict = WEIGHTS,
                 long: float = 0.0, short: float = 0.0) -> tuple[list[dict], float]:
    """Run the unit over ``inputs`` from c_0 = long, h_0 = short.

    Returns (days, prediction): days[t - 1] = {"day": t, "input": x_t, "long": c_t,
    "short": h_t, and every number of ``step_values``}; prediction = h_T, the last short-term
    memory.
    """
    days = [{"day": day, "input": v["x"], "long": v["c"], "short": v["h"], **v}
            for day, v in enumerate(_steps(inputs, weights, long, short), 1)]
    return days, days[-1]["short"] if days else short


def explain(companies: bool = True, weights: dict = WEIGHTS) -> str:
    """The full lesson as text: one worked step (long-term memory 2, short-term memory 1,
    input 1), then each company day by day and the unit's prediction for the next day."""
    step_text, _ = explain_step(2.0, 1.0, 1.0, weights)
    parts = ["One LSTM unit, one step.", step_text]
    if companies:
        for name, inputs in COMPANIES.items():
            days, prediction = run_sequence(inputs, weights)
            parts.append(f"\nCompany {name}, days 1-{len(inputs)}: "
                         + ", ".join(_num(x) for x in inputs)
                         + " (both memories start at 0).")
            for d in days:
                parts.append(f"  Day {d['day']}: input {_num(d['input'])}: keep "
                             f"{100 * d['f']:.1f}%, remember {100 * d['i']:.1f}% of "
                             f"{d['g']:.3f}, output {100 * d['o']:.1f}% -> long-term memory "
                             f"{d['long']:.3f}, short-term memory {d['short']:.3f}")
            parts.append(f"  Prediction for day {len(inputs) + 1}: {prediction:.3f} "
                         f"(target {TARGETS[name]:g}).")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- training
def _predict(cell: LSTMCell, inputs: torch.Tensor) -> torch.Tensor:
    """inputs (T, B) -> the final short-term memory h_T (B,) of ``cell`` run from zero states."""
    h = c = inputs.new_zeros(inputs.shape[1], 1)
    for x_t in inputs:
        h, c = cell(x_t[:, None], (h, c))
    return h[:, 0]


def train_unit(seed: int = 0, steps: int = 2000, lr: float = 0.03, tol: float = 0.05) -> dict:
    """Train a fresh ``LSTMCell(1, 1)`` (torch's initialisation, seeded) so that company A's
    final short-term memory is 0 and company B's is 1: MSE, Adam, full batch of the two, float64.
    Stops once both predictions are within ``tol`` of their targets, or after ``steps``.

    Some starts sit for a while on the plateau that predicts 0.5 for both (the mean), so the
    step budget is generous; lr 0.03 reached both targets within 0.1 for each of 100 seeds
    (median about 140 steps, well under a second).

    Returns {"weights" (as ``WEIGHTS``), "predictions" {"A", "B"}, "loss", "initial_loss",
    "steps" (taken), "seed"}.
    """
    with torch.random.fork_rng(devices=[]):                   # leave torch's global RNG as it was
        torch.manual_seed(seed)
        cell = LSTMCell(1, 1, dtype=torch.float64)
    inputs = torch.tensor([COMPANIES[k] for k in TARGETS], dtype=torch.float64).t()   # (T, 2)
    targets = torch.tensor(list(TARGETS.values()), dtype=torch.float64)
    optimizer = torch.optim.Adam(cell.parameters(), lr=lr)
    initial, taken = None, 0
    for taken in range(steps + 1):
        optimizer.zero_grad()
        predictions = _predict(cell, inputs)
        loss = torch.nn.functional.mse_loss(predictions, targets)
        if initial is None:
            initial = loss.item()
        if taken == steps or (predictions - targets).abs().max() < tol:
            break
        loss.backward()
        optimizer.step()
    return {"weights": cell_weights(cell),
            "predictions": {k: p.item() for k, p in zip(TARGETS, predictions.detach())},
            "loss": loss.item(), "initial_loss": initial, "steps": taken, "seed": seed}


__all__ = ["WEIGHTS", "COMPANIES", "TARGETS", "unit_cell", "cell_weights", "step_values",
           "explain_step", "run_sequence", "explain", "train_unit"]
