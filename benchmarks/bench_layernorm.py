"""LayerNorm LSTM and GRU on the compiled engine against the plain cells: training step
(forward + backward).

Usage:
    .venv/bin/python benchmarks/bench_layernorm.py [--repeats 5] [--sizes 35,20,200,200 ...]
        [--cells lstm gru] [--threads 1] [--denormals ftz|keep]

For each size (T, B, input, hidden) and cell it first checks that the LayerNorm layer gives the
python engine's outputs and gradients compiled (in float64), and the plain one torch.nn's, then
times the three contenders taking turns (bench_layers.median_ms):

    LN        lstmkit.LSTM / GRU(layer_norm=True, engine="compiled")
    plain     lstmkit.LSTM / GRU(engine="compiled")
    torch.nn  torch.nn.LSTM / GRU

Times are medians in milliseconds, float32, flush-to-zero on unless --denormals keep; LN / plain
is what the normalisations cost on the compiled engine (the goal: at most 1.3).
"""

from __future__ import annotations

import argparse

import torch
from bench_layers import add_size_arguments, check_agree, median_ms, sizes_from, train_step
from torch import nn

import lstmkit
from lstmkit.engine import compiled

CELLS = {"lstm": (lstmkit.LSTM, nn.LSTM), "gru": (lstmkit.GRU, nn.GRU)}


def bench_size(size, cell: str, repeats: int) -> dict:
    T, B, I, H = size
    ours, theirs = CELLS[cell]
    torch.manual_seed(0)
    ref = theirs(I, H)
    plain = ours(I, H, engine="compiled")
    plain.load_state_dict(ref.state_dict())
    ln = ours(I, H, layer_norm=True, engine="compiled")
    x = torch.randn(T, B, I, requires_grad=True)
    grad = torch.randn(T, B, H)
    # in float64: in float32 the LN gradients (up to a few hundred) differ by float32 rounding
    # (1e-5 relative) between the engines, more than check_agree's tolerance on small entries
    ln64 = ours(I, H, layer_norm=True, engine="compiled", dtype=torch.float64)
    ln64.load_state_dict(ln.state_dict())
    ln64_python = ours(I, H, layer_norm=True, engine="python", dtype=torch.float64)
    ln64_python.load_state_dict(ln.state_dict())
    check_agree(ln64, ln64_python, x.detach().double().requires_grad_(), grad.double(),
                f"{cell} {size}: LN compiled vs python engine (float64)")
    check_agree(plain, ref, x, grad, f"{cell} {size}: compiled vs torch.nn")
    times = median_ms(*[lambda m=m: train_step(m, x, grad) for m in (ln, plain, ref)],
                      repeats=repeats)
    return {"cell": cell, "size": size, **dict(zip(("ln", "plain", "torch"), times))}


def table(rows) -> str:
    head = ("| cell | T, B, in, hidden | LN compiled | plain compiled | torch.nn | LN / plain | "
            "LN / torch.nn |\n|---|---|---:|---:|---:|---:|---:|\n")
    return head + "\n".join(
        f"| {r['cell']} | {', '.join(map(str, r['size']))} | {r['ln']:.2f} | {r['plain']:.2f} | "
        f"{r['torch']:.2f} | {r['ln'] / r['plain']:.2f} | {r['ln'] / r['torch']:.2f} |"
        for r in rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_size_arguments(parser)
    parser.add_argument("--cells", nargs="*", default=list(CELLS), choices=CELLS)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--denormals", choices=("ftz", "keep"), default="ftz",
                        help="flush denormals to zero (default) or keep them")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not compiled.available():
        raise SystemExit(f"the compiled engine is unavailable: {compiled.build_error()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, extension "
          f"built for {compiled._state['capability']}, flush-to-zero "
          f"{'on' if args.denormals == 'ftz' else 'off'}; training step, ms, medians\n")
    torch.set_flush_denormal(args.denormals == "ftz")
    try:
        rows = [bench_size(size, cell, args.repeats) for cell in args.cells
                for size in sizes_from(args)]
    finally:
        torch.set_flush_denormal(False)
    print(table(rows), flush=True)


if __name__ == "__main__":
    main()
