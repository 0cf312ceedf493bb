"""Training step (forward + backward) of the regularised LSTMs against the plain one, torch.nn.LSTM
and the way people write them today (an autograd loop over LSTMCell's step with the regulariser).

Usage:
    .venv/bin/python benchmarks/bench_regularisers.py [--repeats 5] [--sizes T,B,I,H ...]
        [--threads 1]

Rows, every one in training mode (masks drawn at every call), float32, flush-to-zero:

    plain              lstmkit.LSTM, engine="auto" (the compiled engine for a training step)
    weight_drop        weight_drop=0.3 (DropConnect on W_hh, one mask per call)
    input_dropout      input_dropout=0.3 (one mask per sequence on the input)
    recurrent_dropout  recurrent_dropout=0.3 (one mask per sequence on the h_{t-1} W_hh sees)
    zoneout            zoneout=(0.1, 0.1)
    layer_norm         layer_norm=True

Columns: ms of lstmkit's layer; its ratio to the plain lstmkit LSTM in the same run (the issue's
goal: <= 1.15, LayerNorm <= 1.3), to torch.nn.LSTM (no regulariser: it has none) and to the
loop over torch's LSTM cell step with the same regulariser. Correctness is the tests' job
(tests/test_regularisers.py, tests/test_zoneout.py, tests/test_layernorm.py); this script only
times. Medians, the contenders taking turns (bench_layers.median_ms).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from bench_layers import add_size_arguments, median_ms, sizes_from, train_step
from torch import _VF, nn

import lstmkit

P = 0.3
Z = 0.1
REGULARISERS = {
    "plain": {},
    "weight_drop": {"weight_drop": P},
    "input_dropout": {"input_dropout": P},
    "recurrent_dropout": {"recurrent_dropout": P},
    "zoneout": {"zoneout": (Z, Z)},
    "layer_norm": {"layer_norm": True},
}


class LoopLSTM(nn.Module):
    """What people write today: torch's LSTM cell step in a Python loop, the regulariser around
    it in autograd ops (LayerNorm: nn.LayerNorm on W_ih x_t, W_hh h_{t-1} and c_t)."""

    def __init__(self, I: int, H: int, kind: str):
        super().__init__()
        self.cell, self.kind = nn.LSTMCell(I, H), kind
        if kind == "layer_norm":
            self.ln_ih, self.ln_hh, self.ln_c = nn.LayerNorm(4 * H), nn.LayerNorm(4 * H), \
                nn.LayerNorm(H)

    def forward(self, x):
        B, H = x.shape[1], self.cell.hidden_size
        cell, kind = self.cell, self.kind
        w_ih, w_hh, b_ih, b_hh = cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
        h = c = x.new_zeros(B, H)
        if kind == "weight_drop":
            w_hh = F.dropout(w_hh, P)
        if kind == "input_dropout":
            x = x * F.dropout(x.new_ones(1, B, x.shape[2]), P)
        mask = F.dropout(x.new_ones(B, H), P) if kind == "recurrent_dropout" else None
        outputs = []
        for x_t in x:
            if kind == "layer_norm":
                a = self.ln_ih(x_t @ w_ih.t()) + self.ln_hh(h @ w_hh.t()) + b_ih + b_hh
                i, f, g, o = a.chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
            else:
                h_in = h if mask is None else h * mask
                h_new, c_new = _VF.lstm_cell(x_t, (h_in, c), w_ih, w_hh, b_ih, b_hh)
                if kind == "zoneout":
                    d_h = torch.empty_like(h).bernoulli_(Z)
                    d_c = torch.empty_like(c).bernoulli_(Z)
                    h_new = h_new + d_h * (h - h_new)
                    c_new = c_new + d_c * (c - c_new)
                h, c = h_new, c_new
            outputs.append(h)
        return torch.stack(outputs)


def bench_size(size, repeats: int) -> list[dict]:
    T, B, I, H = size
    torch.manual_seed(0)
    x = torch.randn(T, B, I, requires_grad=True)
    grad = torch.randn(T, B, H)
    reference = nn.LSTM(I, H)
    ours = {k: lstmkit.LSTM(I, H, **kw) for k, kw in REGULARISERS.items()}
    loops = {k: LoopLSTM(I, H, k) for k in REGULARISERS}
    contenders = [reference, *ours.values(), *loops.values()]
    times = median_ms(*[lambda m=m: train_step(m, x, grad) for m in contenders],
                      repeats=repeats)
    t_ref, t_ours, t_loops = times[0], times[1 : 1 + len(ours)], times[1 + len(ours) :]
    plain = t_ours[0]
    return [{"size": size, "what": k, "ms": t, "vs_plain": t / plain, "vs_torch": t / t_ref,
             "vs_loop": t / t_loop, "loop_ms": t_loop}
            for k, t, t_loop in zip(ours, t_ours, t_loops)]


def table(rows) -> str:
    lines = ["| (T, B, I, H) | regulariser | lstmkit ms | / plain lstmkit | / torch.nn.LSTM "
             "| LSTMCell loop ms | / loop |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['what']} | {r['ms']:.2f} | {r['vs_plain']:.2f} | "
                     f"{r['vs_torch']:.2f} | {r['loop_ms']:.2f} | {r['vs_loop']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_size_arguments(parser)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          "flush-to-zero, training mode\n")
    torch.set_flush_denormal(True)
    try:
        rows = []
        for size in sizes_from(args):
            rows += bench_size(size, args.repeats)
            print(table(rows[-len(REGULARISERS):]), flush=True)
        print("\n" + table(rows))
    finally:
        torch.set_flush_denormal(False)


if __name__ == "__main__":
    main()
