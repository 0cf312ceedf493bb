"""Training step (forward + backward) and inference of lstmkit's engines against torch.nn.

Usage:
    .venv/bin/python benchmarks/bench_layers.py [--repeats 7] [--sizes 35,20,200,200 ...]
        [--denormals ftz|keep|both] [--out BENCHMARKS.table.md]

For each size (T, B, input, hidden) and each model it checks first that the compared models agree
(same weights, same inputs, outputs and gradients within float32 tolerance), then times. Rows:

    lstm      lstmkit.LSTM(engine="python")            vs torch.nn.LSTM and a naive nn.LSTMCell loop
    peephole  lstmkit.LSTM(peephole=True)              vs torch.nn.LSTM (no fused peephole exists)
    coupled   lstmkit.LSTM(coupled=True)               vs torch.nn.LSTM
    gru       lstmkit.GRU(engine="python")             vs torch.nn.GRU and a naive nn.GRUCell loop
    lstm, loss at last step: the lstm row with the loss on the last output only, where the
              gradient shrinks on its way back through time and denormal numbers appear

Times are medians of --repeats runs in this process, in milliseconds; ratio = ours / reference
(below 1 means lstmkit is faster). Flush-to-zero is set per table with
torch.set_flush_denormal and restored at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import lstmkit

SIZES = [(35, 20, 200, 200), (100, 32, 256, 256), (50, 64, 512, 512), (200, 16, 64, 128),
         (30, 1, 57, 128)]


class NaiveLoop(nn.Module):
    """What people write first: an autograd loop over torch.nn.LSTMCell / GRUCell."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def forward(self, x):
        B = x.shape[1]
        H = self.cell.hidden_size
        state = (x.new_zeros(B, H), x.new_zeros(B, H)) if isinstance(self.cell, nn.LSTMCell) \
            else x.new_zeros(B, H)
        outputs = []
        for x_t in x:
            state = self.cell(x_t, state)
            outputs.append(state[0] if isinstance(state, tuple) else state)
        return torch.stack(outputs)


def naive_from(layer: nn.Module) -> NaiveLoop:
    cls = nn.LSTMCell if isinstance(layer, nn.LSTM) else nn.GRUCell
    cell = cls(layer.input_size, layer.hidden_size)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(layer, name + "_l0"))
    return NaiveLoop(cell)


def output_of(model, x):
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


def train_step(model, x, grad):
    """Forward and backward; grad (T, B, H) for a loss on every step's output, or (B, H) for a
    loss on the last step only (as a sequence classifier has)."""
    model.zero_grad(set_to_none=True)
    x.grad = None
    out = output_of(model, x)
    (out if grad.dim() == 3 else out[-1]).backward(grad)


def median_ms(*fns, repeats: int, rounds: int = 3) -> list[float]:
    """Median wall time of each fn in ms. The fns take turns in rounds, so drift of the machine
    hits all of them alike; within a round each runs `repeats` times in a row after a warm-up
    call, as a training loop runs one model over and over."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            fn()
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
    return [1e3 * statistics.median(ts) for ts in times]


def check_agree(a, b, x, grad, what: str) -> None:
    """Outputs and all gradients of a and b (same weights) agree; raise before timing if not."""
    outs, grads = [], []
    for m in (a, b):
        train_step(m, x, grad)
        outs.append(output_of(m, x).detach())
        grads.append([x.grad.clone()] + [p.grad for p in m.parameters()])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4, msg=f"{what}: outputs")
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, atol=1e-3, rtol=1e-3, msg=f"{what}: gradients")


def models_for(T, B, I, H):
    torch.manual_seed(0)
    ref_lstm, ref_gru = nn.LSTM(I, H), nn.GRU(I, H)
    ours = {
        "lstm": lstmkit.LSTM(I, H, engine="python"),
        "peephole": lstmkit.LSTM(I, H, peephole=True),
        "coupled": lstmkit.LSTM(I, H, coupled=True),
        "gru": lstmkit.GRU(I, H, engine="python"),
    }
    ours["lstm"].load_state_dict(ref_lstm.state_dict())
    ours["gru"].load_state_dict(ref_gru.state_dict())
    refs = {"lstm": ref_lstm, "peephole": ref_lstm, "coupled": ref_lstm, "gru": ref_gru}
    naive = {"lstm": naive_from(ref_lstm), "gru": naive_from(ref_gru)}
    return ours, refs, naive


def bench_size(size, repeats: int) -> list[dict]:
    T, B, I, H = size
    ours, refs, naive = models_for(T, B, I, H)
    x = torch.randn(T, B, I, requires_grad=True)
    grad_all, grad_last = torch.randn(T, B, H), torch.randn(B, H)
    rows = []
    for kind, model in [*ours.items(), ("lstm, loss at last step", ours["lstm"])]:
        grad = grad_last if "last" in kind else grad_all
        kind_ref = kind.split(",")[0]
        ref = refs[kind_ref]
        if kind in naive:
            check_agree(model, ref, x, grad, f"{kind} {size} vs torch.nn")
            check_agree(model, naive[kind], x, grad, f"{kind} {size} vs naive loop")
        row = {"kind": kind, "size": size}
        trainers = [lambda m=m, g=grad: train_step(m, x, g) for m in (model, ref, naive.get(kind))
                    if m is not None]
        times = median_ms(*trainers, repeats=repeats)
        row["train"], row["ref_train"] = times[:2]
        if kind in naive:
            row["naive_train"] = times[2]
        with torch.no_grad():
            row["infer"], row["ref_infer"] = median_ms(
                *[lambda m=m: output_of(m, x) for m in (model, ref)], repeats=repeats)
        rows.append(row)
    return rows


def table(rows, ftz: bool) -> str:
    head = (f"flush-to-zero {'on' if ftz else 'off'}; ms, medians; ratio = lstmkit / reference\n\n"
            "| model | T, B, in, hidden | train | torch.nn train | ratio | naive loop train | "
            "ratio | infer | torch.nn infer | ratio |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        naive = r.get("naive_train")
        naive_cells = f"{naive:.1f} | {r['train'] / naive:.2f}" if naive else "- | -"
        lines.append(
            f"| {r['kind']} | {', '.join(map(str, r['size']))} | {r['train']:.1f} | "
            f"{r['ref_train']:.1f} | {r['train'] / r['ref_train']:.2f} | {naive_cells} | "
            f"{r['infer']:.1f} | {r['ref_infer']:.1f} | {r['infer'] / r['ref_infer']:.2f} |")
    return head + "\n".join(lines) + "\n"


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """--repeats and --sizes, as the timing benchmarks take them (``sizes_from`` reads them)."""
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs in a row per round (3 rounds; median of all)")
    parser.add_argument("--sizes", nargs="*", default=None,
                        help="sizes as T,B,input,hidden (default: the five standard sizes)")


def sizes_from(args) -> list[tuple[int, ...]]:
    """The sizes --sizes names, else SIZES."""
    return [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else SIZES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_size_arguments(parser)
    parser.add_argument("--denormals", choices=("ftz", "keep", "both"), default="both",
                        help="flush denormals to zero, keep them, or report both")
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    args = parser.parse_args()
    sizes = sizes_from(args)
    settings = {"ftz": [True], "keep": [False], "both": [True, False]}[args.denormals]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32\n")
    tables = []
    try:
        for ftz in settings:
            torch.set_flush_denormal(ftz)
            rows = [row for size in sizes for row in bench_size(size, args.repeats)]
            tables.append(table(rows, ftz))
            print(tables[-1], flush=True)
    finally:
        torch.set_flush_denormal(False)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(tables))


if __name__ == "__main__":
    main()
