"""What making the engines torch operators cost: the layers now against the same layers from a
checkout of the code before the operators (``--baseline SRC``, its ``src`` folder, imported in
the same process as ``lstmkit_before``), and against the layers now with every call forced
through ``lstmkit::sequence`` (what a call under torch's tracers takes; eager calls go through
an autograd.Function around the same kernels).

Usage:
    git worktree add ../lstmkit-before COMMIT          # e.g. 3068fa8, before the operators
    .venv/bin/python benchmarks/bench_operators.py --baseline ../lstmkit-before/src \
        [--repeats 5] [--out BENCH_OPERATORS.md]

Rows: training step (forward + backward of a loss on every output) and inference (no_grad) of
LSTM / GRU / LSTM(peephole=True) on engine="compiled" and "python" at bench_layers' sizes
(T, B, input, hidden), and generation on engine="auto" (20 steps of T = 1, batch 1, 2 layers of
512, the state carried, as bench_generate runs it). Before timing, each pair is checked to give
the same outputs and gradients. Times are medians in ms (bench_layers.median_ms: the three take
turns in rounds); "now / before" is the issue's bound (<= 1.05).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch
from bench_layers import SIZES, median_ms, output_of, train_step

import lstmkit
from lstmkit.engine import ops


def load_baseline(src: Path):
    """The lstmkit package under src, imported as ``lstmkit_before``."""
    init = src / "lstmkit" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--baseline: expected a src folder holding lstmkit/, got {src}")
    spec = importlib.util.spec_from_file_location(
        "lstmkit_before", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lstmkit_before"] = module
    spec.loader.exec_module(module)
    return module


def model(package, kind: str, engine: str, I: int, H: int, num_layers: int = 1):
    torch.manual_seed(0)
    if kind == "gru":
        return package.GRU(I, H, num_layers, engine=engine)
    return package.LSTM(I, H, num_layers, engine=engine, peephole=kind == "peephole")


def forced_operator(fn):
    """fn with every lstmkit call going through lstmkit::sequence."""
    def run():
        plain, ops.plain_eager = ops.plain_eager, lambda *t: False
        try:
            fn()
        finally:
            ops.plain_eager = plain
    return run


def step(m, what: str, x, grad):
    """One training step or one inference call of m on x, as a function of nothing."""
    if what == "train":
        return lambda: train_step(m, x, grad)

    def infer():
        with torch.no_grad():
            m(x)
    return infer


def grads_of(m, x, grad):
    train_step(m, x, grad)
    return [output_of(m, x).detach(), x.grad.clone(), *(p.grad.clone() for p in m.parameters())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True,
                        help="src folder of a checkout from before the operators")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    before = load_baseline(args.baseline)
    torch.set_flush_denormal(True)
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads", "",
             "| model | engine | T x B x in x hidden | step | before ms | now ms | "
             "via operator ms | now / before | operator / before |",
             "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)

    def row(label, engine, size, what, times):
        t_before, t_now, t_op = times
        line = (f"| {label} | {engine} | {size} | {what} | {t_before:.3f} | {t_now:.3f} | "
                f"{t_op:.3f} | {t_now / t_before:.3f} | {t_op / t_before:.3f} |")
        lines.append(line)
        print(line, flush=True)

    for engine in ("compiled", "python"):
        for kind in ("lstm", "gru", "peephole"):
            for T, B, I, H in SIZES:
                old, new = model(before, kind, engine, I, H), model(lstmkit, kind, engine, I, H)
                x = torch.randn(T, B, I, requires_grad=True)
                grad = torch.randn(T, B, H)
                for a, b in zip(grads_of(old, x, grad), grads_of(new, x, grad)):
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
                repeats = args.repeats if engine == "compiled" else max(2, args.repeats // 2)
                for what in ("train", "infer"):
                    old_fn, new_fn = (step(m, what, x, grad) for m in (old, new))
                    times = median_ms(old_fn, new_fn, forced_operator(new_fn), repeats=repeats)
                    row(kind, engine, f"{T}x{B}x{I}x{H}", what, times)

    def generate(m):
        x = torch.randn(1, 1, 512)

        def run():
            with torch.no_grad():
                state = None
                for _ in range(20):
                    _, state = m(x, state)
        return run

    old, new = (model(p, "lstm", "auto", 512, 512, num_layers=2) for p in (before, lstmkit))
    times = median_ms(generate(old), generate(new), forced_operator(generate(new)),
                      repeats=args.repeats * 4)
    row("lstm 2 x 512", "auto", "20 x (1x1x512x512)", "generate", times)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
