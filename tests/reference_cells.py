"""An independent reference for lstmkit, in plain autograd, written from the equations.

Nothing here imports lstmkit: the parameters are read from a module by their names
(``weight_ih_l{k}{_reverse}`` ...), so the same code also runs on ``torch.nn.LSTM / GRU / RNN``,
which is how the tests check that this reference is itself trustworthy.

Step functions (one time step, batched rows (B, ...)):

    lstm_step   i, f, g, o gates; peepholes (p_i|p_f|p_o), coupled i = 1 - f, projection W_hr
    gru_step    r, z, n; reset_after=True (torch) or False (Cho et al. 2014)
    rnn_step    tanh or relu

``run_layer(module, x, hx, lengths, retain=False)`` walks a whole multi-layer (bidirectional)
layer over a time-major batch x (T, B, I). With ``lengths`` each sequence stops at its own length:
the forward direction's final state is the one at the last valid step, and the reverse direction
starts from the initial state at each sequence's last valid step. With ``retain=True`` every
h_t and c_t gets ``retain_grad()`` so a test can read dL/dh_t and dL/dc_t after a backward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _linear(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    out = x @ w.t()
    return out if b is None else out + b


# ----------------------------------------------------------------------------- one step
def lstm_step(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_ch=None, w_hr=None, coupled=False):
    """One LSTM step; returns (h_t, c_t, {"i", "f", "g", "o"})."""
    H = c.shape[-1]
    pre = _linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)
    if coupled:
        a_f, a_g, a_o = pre.split(H, -1)
        a_i = None
    else:
        a_i, a_f, a_g, a_o = pre.split(H, -1)
    p_i = p_f = p_o = None
    if w_ch is not None:
        if coupled:
            p_f, p_o = w_ch.split(H)
        else:
            p_i, p_f, p_o = w_ch.split(H)
        a_f = a_f + p_f * c
        if not coupled:
            a_i = a_i + p_i * c
    f = torch.sigmoid(a_f)
    i = 1 - f if coupled else torch.sigmoid(a_i)
    g = torch.tanh(a_g)
    c_new = f * c + i * g
    if p_o is not None:
        a_o = a_o + p_o * c_new
    o = torch.sigmoid(a_o)
    m = o * torch.tanh(c_new)
    h_new = m if w_hr is None else m @ w_hr.t()
    return h_new, c_new, {"i": i, "f": f, "g": g, "o": o}


def gru_step(x, h, w_ih, w_hh, b_ih=None, b_hh=None, reset_after=True):
    """One GRU step; returns (h_t, {"r", "z", "n"})."""
    H = h.shape[-1]
    gi = _linear(x, w_ih, b_ih)
    i_r, i_z, i_n = gi.split(H, -1)
    w_hr, w_hz, w_hn = w_hh.split(H)
    b_hr, b_hz, b_hn = b_hh.split(H) if b_hh is not None else (None, None, None)
    r = torch.sigmoid(i_r + _linear(h, w_hr, b_hr))
    z = torch.sigmoid(i_z + _linear(h, w_hz, b_hz))
    if reset_after:
        n = torch.tanh(i_n + r * _linear(h, w_hn, b_hn))
    else:
        n = torch.tanh(i_n + _linear(r * h, w_hn, b_hn))
    h_new = (1 - z) * n + z * h
    return h_new, {"r": r, "z": z, "n": n}


def rnn_step(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One Elman step; returns h_t."""
    a = _linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)
    return torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)


# ----------------------------------------------------------------------------- modules
def kind_of(module) -> str:
    """"lstm", "gru" or "rnn" from the class name (works for lstmkit and torch.nn alike)."""
    name = type(module).__name__.lower()
    for kind in ("lstm", "gru", "rnn"):
        if name.startswith(kind):
            return kind
    raise TypeError(f"not a recurrent module: {type(module).__name__}")


def _params(module, suffix: str = "") -> dict:
    get = lambda name: getattr(module, name + suffix, None)  # noqa: E731
    return {"w_ih": get("weight_ih"), "w_hh": get("weight_hh"), "b_ih": get("bias_ih"),
            "b_hh": get("bias_hh"), "w_ch": get("weight_ch"), "w_hr": get("weight_hr")}


def make_step(module, suffix: str = ""):
    """step(x, state) -> (new_state, gates) for one layer-direction (or a *Cell with suffix "").
    state is a tuple (h,) or (h, c)."""
    kind, p = kind_of(module), _params(module, suffix)
    if kind == "lstm":
        coupled = getattr(module, "coupled", False)

        def step(x, state):
            h, c, gates = lstm_step(x, *state, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
                                    p["w_ch"], p["w_hr"], coupled)
            return (h, c), gates
    elif kind == "gru":
        reset_after = getattr(module, "reset_after", True)

        def step(x, state):
            h, gates = gru_step(x, state[0], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
                                reset_after)
            return (h,), gates
    else:
        nonlinearity = getattr(module, "nonlinearity", "tanh")

        def step(x, state):
            return (rnn_step(x, state[0], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
                             nonlinearity),), {}
    return step


def cell_forward(cell, x, hx=None):
    """A *Cell's forward by the reference: x (B, I); returns h, or (h, c) for LSTMCell."""
    kind = kind_of(cell)
    B, H = x.shape[0], cell.hidden_size
    if hx is None:
        hx = (x.new_zeros(B, H), x.new_zeros(B, H)) if kind == "lstm" else x.new_zeros(B, H)
    state = tuple(hx) if kind == "lstm" else (hx,)
    new, _ = make_step(cell)(x, state)
    return new if kind == "lstm" else new[0]


class DirectionRecord:
    """Per-step tensors of one layer-direction, indexed by time: h[t], c[t], gates[t][name].
    Entries past a sequence's length are what the step computed there (meaningless): compare
    them through ``length_mask``."""

    def __init__(self, T: int):
        self.h = [None] * T
        self.c = [None] * T
        self.gates = [None] * T

    def stacked(self, what: str) -> Tensor | None:
        """(T, B, ...) of h / c, or of their .grad with what = "grad_h" / "grad_c"."""
        items = getattr(self, what[-1])
        if items[0] is None:
            return None
        if what.startswith("grad_"):
            # a state the loss does not depend on gets no .grad: its gradient is zero
            items = [torch.zeros_like(t) if t.grad is None else t.grad for t in items]
        return torch.stack(items)

    def stacked_gate(self, name: str) -> Tensor:
        return torch.stack([g[name] for g in self.gates])


def _run_direction(step, x, state0, lengths, reverse: bool, retain: bool):
    """One direction over x (T, B, I); returns (output (T, B, P), final states, record)."""
    T, B = x.shape[:2]
    rec = DirectionRecord(T)
    state = tuple(state0)
    outs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        new, gates = step(x[t], state)
        if retain:
            # on the step's own states, so that .grad sums every use of h_t and c_t (c_t also
            # feeds h_t of the same step); the rows past a length are ignored by the tests
            for s in new:
                s.retain_grad()
        rec.h[t] = new[0]
        if len(new) > 1:
            rec.c[t] = new[1]
        rec.gates[t] = gates
        if lengths is not None:
            # rows past their length keep their state (forward: the last valid one; reverse:
            # the initial one, so each sequence's reverse pass starts at its last valid step)
            active = torch.tensor([t < n for n in lengths], device=x.device).unsqueeze(-1)
            outs[t] = torch.where(active, new[0], torch.zeros_like(new[0]))
            new = tuple(torch.where(active, s_new, s_old) for s_new, s_old in zip(new, state))
        else:
            outs[t] = new[0]
        state = new
    return torch.stack(outs), state, rec


def run_layer(module, x: Tensor, hx=None, lengths=None, retain: bool = False):
    """A whole (multi-layer, bidirectional) LSTM / GRU / RNN by the reference.

    x (T, B, I) time-major and batched; hx None, h_0 or (h_0, c_0) shaped as torch's;
    lengths None or B ints (any order). Returns (output (T, B, D * P), h_n, c_n or None,
    records[layer][direction]). Output is zero past each sequence's length.
    """
    kind = kind_of(module)
    T, B = x.shape[:2]
    L, H = module.num_layers, module.hidden_size
    P = getattr(module, "proj_size", 0) or H
    D = 2 if module.bidirectional else 1
    if lengths is not None:
        lengths = [int(n) for n in lengths]
    if hx is None:
        h0 = x.new_zeros(L * D, B, P)
        c0 = x.new_zeros(L * D, B, H) if kind == "lstm" else None
    elif kind == "lstm":
        h0, c0 = hx
    else:
        h0, c0 = hx, None

    finals_h, finals_c, records = [], [], []
    layer_input = x
    for layer in range(L):
        outs, layer_records = [], []
        for d in range(D):
            index = layer * D + d
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            state0 = (h0[index],) if c0 is None else (h0[index], c0[index])
            out, final, rec = _run_direction(make_step(module, suffix), layer_input, state0,
                                             lengths, reverse=bool(d), retain=retain)
            outs.append(out)
            finals_h.append(final[0])
            if c0 is not None:
                finals_c.append(final[1])
            layer_records.append(rec)
        records.append(layer_records)
        layer_input = torch.cat(outs, -1)
    h_n = torch.stack(finals_h)
    c_n = torch.stack(finals_c) if c0 is not None else None
    return layer_input, h_n, c_n, records


def length_mask(lengths, T: int, B: int) -> Tensor:
    """(T, B, 1) boolean, True where step t < length of sequence b (all True without lengths)."""
    if lengths is None:
        return torch.ones(T, B, 1, dtype=torch.bool)
    return (torch.arange(T)[:, None] < torch.as_tensor(lengths)[None, :]).unsqueeze(-1)


# ----------------------------------------------------------------------------- test utilities
def fixed_weights_like(t: Tensor, seed: int) -> Tensor:
    """Deterministic random weights shaped like t (the same for every run that asks)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)


def weighted_loss(*tensors) -> Tensor:
    """sum_k <w_k, t_k> with fixed random w_k, skipping None: a loss touching every element."""
    total = 0
    for k, t in enumerate(tensors):
        if t is not None:
            total = total + (t * fixed_weights_like(t, 1000 + k)).sum()
    return total
