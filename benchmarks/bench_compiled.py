"""engine="compiled" (the C++ BPTT engine) against torch.nn and against engine="python":
training step (forward + backward) and inference.

Usage:
    .venv/bin/python benchmarks/bench_compiled.py [--repeats 5] [--sizes 35,20,200,200 ...]
        [--models lstm gru peephole coupled] [--out BENCH_COMPILED.md]

For each size (T, B, input, hidden) and model it first checks that the compared models agree
(same weights, same input: outputs and all gradients within float32 tolerance), then times.
Rows:

    lstm      lstmkit.LSTM(engine="compiled")  vs torch.nn.LSTM and lstmkit.LSTM(engine="python")
    gru       lstmkit.GRU(engine="compiled")   vs torch.nn.GRU and lstmkit.GRU(engine="python")
    peephole  LSTM(peephole=True), compiled    vs torch.nn.LSTM (same size; no fused peephole
              kernel exists) and the python engine
    coupled   LSTM(coupled=True), compiled     vs torch.nn.LSTM and the python engine
    rnn       lstmkit.RNN(engine="compiled")   vs torch.nn.RNN and lstmkit.RNN(engine="python")

A second table times the standard LSTM over a packed batch of variable lengths, compiled
against torch.nn.LSTM (torch's packed path is not its fused padded kernel).

"trace" is the compiled training step with the trace on (``layer.trace(x)``: every gate, state
and per-step gradient kept), against the same step without it. "peak" is the fraction of this
machine's float32 matrix-multiply rate (a 2048 x 2048 torch.mm, timed in the same run) that the
compiled training step reaches, counting its matrix products only: forward 2 T B G H (I + H)
multiply-adds x 2 flops, backward twice that (G = 4 gate blocks for the LSTM, 3 for the GRU and
the coupled LSTM, 1 for the RNN).

Times are medians (bench_layers.median_ms: 3 rounds, the models taking turns) in milliseconds,
flush-to-zero on (torch.set_flush_denormal(True)); ratio = compiled / reference (below 1 the
compiled engine is faster). The first run builds the extension (a minute or two).
"""

from __future__ import annotations

import argparse

import torch
from bench_layers import (
    add_size_arguments,
    check_agree,
    median_ms,
    output_of,
    sizes_from,
    train_step,
)
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.engine import compiled

MODELS = ("lstm", "gru", "peephole", "coupled", "rnn")
GATE_BLOCKS = {"lstm": 4, "peephole": 4, "gru": 3, "coupled": 3, "rnn": 1}


def models_for(kind: str, I: int, H: int):
    """(compiled, torch.nn reference, python engine), the reference's weights where they share
    a layout."""
    torch.manual_seed(0)
    if kind == "gru":
        ref = nn.GRU(I, H)
        ours = [lstmkit.GRU(I, H, engine=e) for e in ("compiled", "python")]
    elif kind == "rnn":
        ref = nn.RNN(I, H)
        ours = [lstmkit.RNN(I, H, engine=e) for e in ("compiled", "python")]
    else:
        ref = nn.LSTM(I, H)
        kw = {"peephole": kind == "peephole", "coupled": kind == "coupled"}
        ours = [lstmkit.LSTM(I, H, engine=e, **kw) for e in ("compiled", "python")]
    if kind in ("lstm", "gru", "rnn"):
        for m in ours:
            m.load_state_dict(ref.state_dict())
    else:
        ours[1].load_state_dict(ours[0].state_dict())
    return ours[0], ref, ours[1]


def traced_step(model, x, grad):
    model.zero_grad(set_to_none=True)
    x.grad = None
    model.trace(x).output.backward(grad)


def matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    """float32 flop/s of an n x n by n x n torch.mm here (median)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    (ms,) = median_ms(lambda: torch.mm(a, b), repeats=repeats)
    return 2 * n ** 3 / (ms * 1e-3)


def bench_size(size, models, repeats: int, peak_flops: float) -> list[dict]:
    T, B, I, H = size
    x = torch.randn(T, B, I, requires_grad=True)
    grad = torch.randn(T, B, H)
    rows = []
    for kind in models:
        comp, ref, python = models_for(kind, I, H)
        if kind in ("lstm", "gru", "rnn"):
            check_agree(comp, ref, x, grad, f"{kind} {size} compiled vs torch.nn")
        check_agree(comp, python, x, grad, f"{kind} {size} compiled vs python engine")
        row = {"kind": kind, "size": size}
        row["train"], row["ref_train"], row["py_train"], row["trace_train"] = median_ms(
            *[lambda m=m: train_step(m, x, grad) for m in (comp, ref, python)],
            lambda m=comp: traced_step(m, x, grad), repeats=repeats)
        flops = 3 * 2 * T * B * GATE_BLOCKS[kind] * H * (I + H)
        row["peak"] = flops / (row["train"] * 1e-3) / peak_flops
        with torch.no_grad():
            row["infer"], row["ref_infer"], row["py_infer"] = median_ms(
                *[lambda m=m: output_of(m, x) for m in (comp, ref, python)], repeats=repeats)
        rows.append(row)
    return rows


def bench_packed(size, repeats: int) -> dict:
    """Standard LSTM over a PackedSequence (lengths uniform in [T/3, T], one of length T):
    compiled against torch.nn.LSTM, training step and inference."""
    T, B, I, H = size
    comp, ref, _ = models_for("lstm", I, H)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(T // 3, T + 1, (B,), generator=gen)
    lengths[0] = T
    packed = pack_padded_sequence(torch.randn(T, B, I), lengths, enforce_sorted=False)
    grad = torch.randn_like(packed.data[:, :1].expand(-1, H))
    with torch.no_grad():
        torch.testing.assert_close(comp(packed)[0].data, ref(packed)[0].data, atol=1e-4,
                                   rtol=1e-4)

    def step(m):
        def run():
            m.zero_grad(set_to_none=True)
            m(packed)[0].data.backward(grad)
        return run

    def infer(m):
        def run():
            with torch.no_grad():
                m(packed)
        return run
    times = median_ms(step(comp), step(ref), infer(comp), infer(ref), repeats=repeats)
    return {"size": size, "train": times[0], "ref_train": times[1], "infer": times[2],
            "ref_infer": times[3]}


def packed_table(rows) -> str:
    head = ("standard LSTM over a packed batch (lengths uniform in [T/3, T]); ms, medians\n\n"
            "| T, B, in, hidden | compiled train | torch.nn train | ratio | compiled infer "
            "| torch.nn infer | ratio |\n|---|---:|---:|---:|---:|---:|---:|\n")
    return head + "\n".join(
        f"| {', '.join(map(str, r['size']))} | {r['train']:.2f} | {r['ref_train']:.2f} | "
        f"{r['train'] / r['ref_train']:.2f} | {r['infer']:.2f} | {r['ref_infer']:.2f} | "
        f"{r['infer'] / r['ref_infer']:.2f} |" for r in rows) + "\n"


def table(rows) -> str:
    head = ("flush-to-zero on; ms, medians; ratio = compiled / reference\n\n"
            "| model | T, B, in, hidden | compiled train | torch.nn train | ratio | python train "
            "| ratio | compiled infer | torch.nn infer | ratio | python infer | ratio "
            "| trace train | ratio | peak |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        cells = []
        for mode in ("train", "infer"):
            ours, ref, py = r[mode], r[f"ref_{mode}"], r[f"py_{mode}"]
            cells += [f"{ours:.2f}", f"{ref:.2f}", f"{ours / ref:.2f}", f"{py:.2f}",
                      f"{ours / py:.2f}"]
        cells += [f"{r['trace_train']:.2f}", f"{r['trace_train'] / r['train']:.2f}",
                  f"{100 * r['peak']:.0f}%"]
        lines.append(f"| {r['kind']} | {', '.join(map(str, r['size']))} | " + " | ".join(cells)
                     + " |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_size_arguments(parser)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS,
                        help="which rows to run")
    parser.add_argument("--no-packed", dest="packed", action="store_false",
                        help="skip the table of packed batches")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    sizes = sizes_from(args)
    if not compiled.available():
        raise SystemExit(f"the compiled engine is unavailable: {compiled.build_error()}")
    ext = compiled._state["ext"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, extension "
          f"built for {ext.capability()} (vectorised: {ext.vectorized()})\n")
    torch.set_flush_denormal(True)
    try:
        peak = matmul_flops()
        print(f"float32 matrix multiply (2048 x 2048 torch.mm): {peak / 1e9:.0f} GFLOP/s\n")
        rows = [row for size in sizes for row in bench_size(size, args.models, args.repeats,
                                                            peak)]
        packed = [bench_packed(size, args.repeats) for size in sizes] if args.packed else []
    finally:
        torch.set_flush_denormal(False)
    text = table(rows) + ("\n" + packed_table(packed) if packed else "")
    print(text, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
