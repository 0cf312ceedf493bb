"""Initialisation of recurrent layers: forget-gate bias, chrono initialisation, orthogonal W_hh.

Each function works in place on ``lstmkit.LSTM / GRU / RNN`` and their ``*Cell``s, on
``torch.nn.LSTM / GRU / RNN`` and their ``*Cell``s, or on any module that contains them (every
recurrent submodule is changed), for every layer and direction, and returns the module.

Where the numbers go. A layer's pre-activation for gate block k is
``W_ih[k] x_t + b_ih[k] + W_hh[k] h_{t-1} + b_hh[k]``, so only the sum b_ih[k] + b_hh[k] matters
(except for a GRU's candidate n, which does not appear here): the bias is written into b_ih and
the matching rows of b_hh are set to zero. Gate blocks are H rows each, in torch's order:

    LSTM          (i|f|g|o)        coupled LSTM (i_t = 1 - f_t)   (f|g|o)
    GRU           (r|z|n)          RNN                            one block

In a GRU, h_t = (1 - z_t) * n_t + z_t * h_{t-1}: the update gate z_t plays the LSTM's forget
gate f_t (how much of the old state is kept), so the forget-gate initialisations set b_z.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .cells.base import Cell

_TORCH_GATES = {nn.LSTM: ("i", "f", "g", "o"), nn.LSTMCell: ("i", "f", "g", "o"),
                nn.GRU: ("r", "z", "n"), nn.GRUCell: ("r", "z", "n"),
                nn.RNN: ("a",), nn.RNNCell: ("a",)}
# the gate whose bias decides how much of the previous state is kept
_KEEP_GATE = {"f": "f", "z": "z"}


def _gate_names(module: nn.Module) -> tuple[str, ...] | None:
    """Gate block names of a recurrent module in row order, None if it is not one."""
    cell = getattr(module, "cell", None)
    if isinstance(cell, Cell):                                   # an lstmkit layer or *Cell
        return cell.gates or ("a",)
    for cls, names in _TORCH_GATES.items():
        if isinstance(module, cls):
            return names
    return None


def _recurrent_groups(module: nn.Module, what: str):
    """Yield (gate names, hidden size, weight_hh, bias_ih, bias_hh) for every layer and
    direction of every recurrent module inside ``module`` (the biases None when absent)."""
    found = False
    for sub in module.modules():
        names = _gate_names(sub)
        if names is None:
            continue
        found = True
        params = dict(sub.named_parameters(recurse=False))
        for key, w_hh in params.items():
            if key.startswith("weight_hh"):
                suffix = key[len("weight_hh"):]                  # "", "_l0", "_l1_reverse", ...
                yield (names, sub.hidden_size, w_hh, params.get("bias_ih" + suffix),
                       params.get("bias_hh" + suffix))
    if not found:
        raise TypeError(f"{what}: expected an LSTM, GRU or RNN layer or cell (lstmkit or "
                        f"torch.nn), or a module containing one; got {type(module).__name__}")


def _rows(names: tuple[str, ...], gate: str, H: int) -> slice:
    k = names.index(gate)
    return slice(k * H, (k + 1) * H)


def _keep_gate(names: tuple[str, ...], what: str) -> str:
    for gate in names:
        if gate in _KEEP_GATE:
            return gate
    raise TypeError(f"{what}: an RNN has no forget or update gate; use it on an LSTM or GRU")


def _need_bias(b_ih: Tensor | None, b_hh: Tensor | None, what: str) -> None:
    if b_ih is None or b_hh is None:
        raise ValueError(f"{what}: the module was built with bias=False; there is no gate bias "
                         "to initialise")


@torch.no_grad()
def unit_forget_bias_(module: nn.Module) -> nn.Module:
    """Forget-gate bias 1, as Keras initialises its LSTM (``unit_forget_bias=True``).

    b_ih[f] = 1 and b_hh[f] = 0 (for a GRU b_z), so at the start f_t = sigma(1 + ...) ~ 0.73:
    the cell state keeps most of itself and dc_T/dc_t = prod f_s decays slowly. Other rows
    are left as they are.
    """
    what = "unit_forget_bias_"
    for names, H, _, b_ih, b_hh in _recurrent_groups(module, what):
        rows = _rows(names, _keep_gate(names, what), H)
        _need_bias(b_ih, b_hh, what)
        b_ih[rows] = 1.0
        b_hh[rows] = 0.0
    return module


@torch.no_grad()
def chrono_init_(module: nn.Module, t_max: float,
                 generator: torch.Generator | None = None) -> nn.Module:
    """Chrono initialisation (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?").

    For each unit, b_f = log(u) with u ~ U[1, t_max - 1], and b_i = -b_f; then with zero input
    f ~ 1 - 1/u, so the cell state forgets over about u steps: the units' memory spans spread
    over 1..t_max - 1, the range of dependencies the task is expected to have. A coupled LSTM
    has no i rows (i_t = 1 - f_t already). For a GRU the paper's analogue is b_z = log(u)
    (z_t keeps h_{t-1}; see the module docstring), with b_r left as it is. The matching rows of
    b_hh are set to zero. Draws come from ``generator`` (torch's default when None), one per
    unit, layer and direction.
    """
    what = "chrono_init_"
    if not t_max >= 2:
        raise ValueError(f"{what}: t_max must be at least 2 (u ~ U[1, t_max - 1]), got {t_max}")
    for names, H, _, b_ih, b_hh in _recurrent_groups(module, what):
        keep = _keep_gate(names, what)
        _need_bias(b_ih, b_hh, what)
        u = 1 + (t_max - 2) * torch.rand(H, generator=generator, dtype=torch.float64)
        b_keep = torch.log(u).to(b_ih)                         # (H,)
        b_ih[_rows(names, keep, H)] = b_keep
        b_hh[_rows(names, keep, H)] = 0.0
        if "i" in names:
            b_ih[_rows(names, "i", H)] = -b_keep
            b_hh[_rows(names, "i", H)] = 0.0
    return module


@torch.no_grad()
def orthogonal_recurrent_(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Each gate block W_hh[k] (H, H_out) of every recurrent weight made (semi-)orthogonal,
    times ``gain``, with ``torch.nn.init.orthogonal_`` (W_k^T W_k = gain^2 I when H = H_out).

    An orthogonal W_hh has every singular value 1, so the linear part of dh_T/dh_t neither
    shrinks nor grows with the number of steps back.
    """
    for names, H, w_hh, _, _ in _recurrent_groups(module, "orthogonal_recurrent_"):
        for k in range(len(names)):
            nn.init.orthogonal_(w_hh[k * H:(k + 1) * H], gain=gain)
    return module


def forget_bias(module: nn.Module) -> list[Tensor]:
    """The effective bias b_ih[f] + b_hh[f] (b_z for a GRU) of every layer and direction, (H,)
    each, in parameter order: what the initialisations above set."""
    what = "forget_bias"
    out = []
    for names, H, _, b_ih, b_hh in _recurrent_groups(module, what):
        rows = _rows(names, _keep_gate(names, what), H)
        _need_bias(b_ih, b_hh, what)
        out.append((b_ih[rows] + b_hh[rows]).detach().clone())
    return out


__all__ = ["unit_forget_bias_", "chrono_init_", "orthogonal_recurrent_", "forget_bias"]
