"""What registering the engines as torch operators costs: the layers as they run now (each
layer-direction one call of ``lstmkit::sequence``, its backward ``lstmkit::sequence_backward``)
against the same layers calling the engines' autograd.Functions directly, as they did before
the operators (``run_sequence`` / ``run_sequence_compiled``, the same kernels, no dispatcher).

Usage:
    .venv/bin/python benchmarks/bench_operators.py [--repeats 5] [--out BENCH_OPERATORS.md]

Rows: training step (forward + backward of a loss on every output) and inference (no_grad) of
lstmkit.LSTM / GRU / LSTM(peephole=True) on engine="python" and "compiled" at bench_layers'
sizes (T, B, input, hidden), and one generation step (T = 1, batch 1, 2 layers of 512, the
compiled engine, as bench_generate runs it). Times are medians in ms (bench_layers.median_ms:
the two paths take turns in rounds); ratio = operator / direct (the issue's bound: <= 1.05).
Before timing, both paths are checked to give the same outputs and gradients.
"""

from __future__ import annotations

import argparse

import torch
from bench_layers import SIZES, median_ms, output_of, train_step

import lstmkit
from lstmkit import layers
from lstmkit.engine.compiled import run_sequence_compiled
from lstmkit.engine.ops import sequence
from lstmkit.engine.sequence import run_sequence


def direct(cell, x, states0, w, batch_sizes=None, compiled=False):
    """The pre-operator path: the engine's autograd.Function, called directly."""
    run = run_sequence_compiled if compiled else run_sequence
    return run(cell, x, states0, w, batch_sizes)


def use(path) -> None:
    layers.sequence = path


def model(kind: str, engine: str, I: int, H: int, num_layers: int = 1):
    torch.manual_seed(0)
    if kind == "gru":
        return lstmkit.GRU(I, H, num_layers, engine=engine)
    return lstmkit.LSTM(I, H, num_layers, engine=engine, peephole=kind == "peephole")


def check_same(m, x, grad) -> None:
    results = []
    for path in (sequence, direct):
        use(path)
        train_step(m, x, grad)
        results.append([output_of(m, x).detach(), x.grad.clone(),
                        *(p.grad.clone() for p in m.parameters())])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def timed(m, x, grad, repeats: int):
    def train():
        train_step(m, x, grad)

    def infer():
        with torch.no_grad():
            m(x)

    rows = []
    for what, fn in (("train", train), ("infer", infer)):
        def op_fn(fn=fn):
            use(sequence)
            fn()

        def direct_fn(fn=fn):
            use(direct)
            fn()

        rows.append((what, *median_ms(op_fn, direct_fn, repeats=repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads", "",
             "| model | engine | T x B x in x hidden | step | operator ms | direct ms | ratio |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    cases = [(kind, engine, size) for engine in ("compiled", "python")
             for kind in ("lstm", "gru", "peephole") for size in SIZES]
    for kind, engine, (T, B, I, H) in cases:
        m = model(kind, engine, I, H)
        x = torch.randn(T, B, I, requires_grad=True)
        grad = torch.randn(T, B, H)
        check_same(m, x, grad)
        repeats = args.repeats if engine == "compiled" else max(2, args.repeats // 2)
        for what, op_ms, direct_ms in timed(m, x, grad, repeats):
            line = (f"| {kind} | {engine} | {T}x{B}x{I}x{H} | {what} | {op_ms:.3f} | "
                    f"{direct_ms:.3f} | {op_ms / direct_ms:.3f} |")
            lines.append(line)
            print(line, flush=True)
    # generation: one step at a time, state carried
    m = model("lstm", "compiled", 512, 512, num_layers=2)
    x = torch.randn(1, 1, 512)

    def generate(path):
        def run():
            use(path)
            with torch.no_grad():
                state = None
                for _ in range(20):
                    _, state = m(x, state)
        return run

    op_ms, direct_ms = median_ms(generate(sequence), generate(direct), repeats=args.repeats * 4)
    line = (f"| lstm 2x512 | compiled | 20 steps of 1x1x512x512 | generate | {op_ms:.3f} | "
            f"{direct_ms:.3f} | {op_ms / direct_ms:.3f} |")
    lines.append(line)
    print(line, flush=True)
    use(sequence)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
