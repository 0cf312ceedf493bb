""""Inside the network": the numbers the page shows for a probe, read from its trace.

For each layer and direction (a ``view``): every unit's cell state c_t, hidden state h_t, gate
values and other states (``shown``) at every step, as float32 arrays (T, H) in base64 (exactly
the trace's values); |dL/dh_t| and |dL/dc_t| at every step (2-norms over the units, after the
backward pass of the task's loss on the probe; the mLSTM's |dL/dC_t| and |dL/dn_t| over its
heads' memories); gate saturation (per unit, the fraction of steps with a sigmoid
gate below 0.1 and above 0.9, Karpathy et al. 2015); and the most input-selective units (by
Pearson correlation of c_t or h_t with a class of steps, such as vowels or spaces).

The page holds at most ``FLOAT_BUDGET`` such values, so that a report stays a few MB: a model
too large for ``MIN_STEPS`` steps of every layer shows its last layer only.
"""

from __future__ import annotations

import base64

import numpy as np
import torch

from .probes import Probe, per_step

FLOAT_BUDGET = 750_000        # floats of states and gates in a page (~4 MB as base64)
MIN_STEPS = 80
LOW, HIGH = 0.1, 0.9          # saturation thresholds
TOP_UNITS = 6
NAMES = {"c": "cell state c_t", "h": "hidden state h_t", "i": "input gate i_t",
         "f": "forget gate f_t", "g": "candidate g_t", "o": "output gate o_t",
         "r": "reset gate r_t", "z": "update gate z_t", "n": "new state n_t"}


def shown(step_trace, units: int) -> dict[str, torch.Tensor]:
    """The per-unit quantities of one layer and direction's trace, in page order, each
    (T, N, units): c (if any), h, the gates, then the other states (the sLSTM's n_t and m_t,
    the mLSTM's n~_t and m_t). A value kept per head (the mLSTM's gates, its stabiliser) is
    shown on each unit of its head; a state larger than the units (the mLSTM's matrix memory
    C_t) is left out."""
    raw = {} if step_trace.c is None else {"c": step_trace.c}
    raw["h"] = step_trace.h
    raw.update(step_trace.gates)
    raw.update(step_trace.states)
    out = {}
    for key, x in raw.items():
        x = x.reshape(*x.shape[:2], -1)
        if x.shape[-1] < units and units % x.shape[-1] == 0:
            x = x.repeat_interleave(units // x.shape[-1], -1)
        if x.shape[-1] == units:
            out[key] = x
    return out


def untraced(layer, text: str | None) -> dict:
    """The section of a layer that records no per-step trace: empty, with a note saying why."""
    if text is not None:
        raise ValueError(f"--input shows the states of a traced layer; {type(layer).__name__} "
                         "records no trace")
    note = (f"{type(layer).__name__} has no trace method, so there is nothing to show here.")
    return {"source": "", "kind": "symbol", "loss_text": "", "loss": None, "symbols": [],
            "hover": [], "segments": [], "notes": [note], "views": []}


def plan(layer) -> tuple[list[int], int]:
    """(layers to show, at most how many steps) within FLOAT_BUDGET; the quantities of each
    layer are counted on a one-step trace."""
    param = next(layer.parameters())
    with torch.no_grad():
        trace = layer.trace(torch.zeros(1, 1, layer.input_size, dtype=param.dtype,
                                        device=param.device))
    count = max(len(shown(row[0], layer.hidden_size)) for row in trace.steps)
    per_layer = layer.hidden_size * count * (2 if layer.bidirectional else 1)
    layers = list(range(layer.num_layers))
    if FLOAT_BUDGET // (per_layer * len(layers)) < MIN_STEPS:
        layers = layers[-1:]
    return layers, max(1, FLOAT_BUDGET // (per_layer * len(layers)))


def encode(x: torch.Tensor) -> str:
    """A float32 array as base64 of its little-endian bytes (the page decodes it)."""
    return base64.b64encode(np.ascontiguousarray(x.numpy(), dtype="<f4").tobytes()).decode()


def decode(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape)


def correlations(x: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of x (T, H) with feature (T,); 0 where either is
    constant."""
    xc = x - x.mean(0)
    fc = feature - feature.mean()
    denom = np.sqrt((xc ** 2).sum(0) * (fc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * fc[:, None]).sum(0) / denom
    return np.where(denom > 0, r, 0.0)


def selective_units(values: dict[str, np.ndarray], features: dict[str, list[float]],
                    steps: int) -> list[dict]:
    """Per step class, the units whose c_t or h_t follow it most closely."""
    found, seen = [], []
    for name, feature in features.items():
        f = np.asarray(feature[:steps], dtype=np.float64)
        if len(f) < 3 or f.min() == f.max() or any(np.array_equal(f, s) for s in seen):
            continue                    # absent (or everywhere) in this input, or a duplicate
        seen.append(f)
        ranked = []
        for q in ("c", "h"):
            if q in values:
                r = correlations(values[q].astype(np.float64), f)
                ranked += [(abs(float(v)), q, u, float(v)) for u, v in enumerate(r)]
        ranked.sort(key=lambda e: -e[0])
        binary = set(np.unique(f).tolist()) <= {0.0, 1.0}
        found.append({"feature": name, "steps": int(f.sum()) if binary else None,
                      "units": [{"quantity": q, "unit": u, "r": round(v, 3)}
                                for _, q, u, v in ranked[:TOP_UNITS]]})
    return found


def view(probe: Probe, step_trace, title: str, steps: int) -> dict:
    """One layer and direction of the probe's trace (see the module docstring)."""
    raw = shown(step_trace, step_trace.h.shape[-1])
    sigmoid = [q for q in raw if q in step_trace.bounded]
    names = {**NAMES, **step_trace.names}
    values = {q: per_step(probe, x)[:steps].float().contiguous() for q, x in raw.items()}
    arrays = {q: v.numpy() for q, v in values.items()}
    out = {"title": title, "steps": steps, "units": int(values["h"].shape[1]),
           "quantities": [{"key": q, "name": names.get(q, f"gate {q}"),
                           "scale": "sequential" if q in sigmoid else "diverging",
                           "max": float(v.abs().max()) if v.numel() else 0.0,
                           "data": encode(v)} for q, v in values.items()]}
    carried = {"h": step_trace.grad_h, "c": step_trace.grad_c,
               **getattr(step_trace, "grad_states", {})}
    out["grad"] = {q: per_step(probe, g.reshape(*g.shape[:2], -1))[:steps].float()
                   .norm(dim=-1).tolist() for q, g in carried.items() if g is not None}
    out["saturation"] = {q: {"left": (v < LOW).float().mean(0).tolist(),
                             "right": (v > HIGH).float().mean(0).tolist()}
                         for q, v in values.items() if q in sigmoid}
    out["selective"] = selective_units(arrays, probe.features, steps)
    return out


def inside(probe: Probe, layer, layers: list[int], max_steps: int) -> dict:
    """The page's "Inside the network" data for a probe traced through layer."""
    total = len(probe.symbols)
    steps = min(total, max_steps)
    notes = list(probe.notes)
    if steps < total:
        notes.append(f"The page shows the first {steps} of the {total} steps (its size "
                     "budget); the loss and the gradients are those of the whole input.")
    if len(layers) < layer.num_layers:
        notes.append(f"Only the last of the {layer.num_layers} layers is shown (the page's size "
                     f"budget: {layer.hidden_size} units).")
    directions = ["forward", "backward"] if layer.bidirectional else ["forward"]
    views = []
    for l in layers:
        for d, direction in enumerate(directions):
            title = f"layer {l + 1}" + (f", {direction}" if layer.bidirectional else "")
            views.append(view(probe, probe.trace.steps[l][d], title, steps))
    segments = [[s, min(e, steps), caption] for s, e, caption in probe.segments if s < steps]
    return {"source": probe.source, "kind": probe.kind, "loss_text": probe.loss_text,
            "loss": probe.loss, "symbols": probe.symbols[:steps], "hover": probe.hover[:steps],
            "segments": segments, "notes": notes, "views": views}
