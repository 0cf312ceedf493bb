"""Training step (forward + backward) and inference of minGRU and minLSTM against torch.nn.GRU.

Usage:
    .venv/bin/python benchmarks/bench_minrnn.py [--threads 1] [--repeats 3]
        [--sizes 256,8,512 ...]

For each size (T, B, H) (input size H) it checks first that the two forms of each layer agree
(the same weights in mode="parallel" and mode="sequential": outputs and all gradients within
float32 tolerance), then times a training step (forward, then backward of a loss on every
step's output) and an inference call (no_grad) of each, and of torch.nn.GRU(H, H), in the same
process. Rows:

    minGRU parallel     lstmkit.minGRU(mode="parallel"): chunkwise log-space scan
    minGRU sequential   lstmkit.minGRU(mode="sequential"): step loop in linear space, one fused
                        C++ op forward and one backward per layer direction (csrc/minrnn.cpp)
                        when the compiled extension is built (the header says which), else
                        python; "auto" runs this on the CPU
    minLSTM ...         the same for lstmkit.minLSTM

Both forms share the hand-written backward (the adjoint recurrence). Times are medians of
--repeats runs in each of 3 rounds, in milliseconds; ratio = ours / torch.nn.GRU (below 1 means
faster).
"""

from __future__ import annotations

import argparse

import torch
from bench_layers import median_ms
from torch import nn

import lstmkit
from lstmkit.cells import minrnn

SIZES = [(256, 8, 512), (512, 16, 256), (1024, 8, 256), (35, 20, 256)]
LAYERS = {"minGRU": lstmkit.minGRU, "minLSTM": lstmkit.minLSTM}
MODES = ("parallel", "sequential")


def train_step(model, x, grad):
    model.zero_grad(set_to_none=True)
    x.grad = None
    model(x)[0].backward(grad)


def check_modes_agree(model, x, grad, what: str) -> None:
    """The parallel and sequential forms of model give the same outputs and gradients."""
    outs, grads = [], []
    for mode in MODES:
        model.mode = mode
        train_step(model, x, grad)
        outs.append(model(x)[0].detach())
        grads.append([x.grad.clone()] + [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4, msg=f"{what}: outputs")
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, atol=1e-3, rtol=1e-3, msg=f"{what}: gradients")


def bench_size(size, repeats: int) -> list[dict]:
    T, B, H = size
    torch.manual_seed(0)
    x = torch.randn(T, B, H, requires_grad=True)
    grad = torch.randn(T, B, H)
    ref = nn.GRU(H, H)
    models = {name: cls(H, H) for name, cls in LAYERS.items()}
    for name, model in models.items():
        check_modes_agree(model, x, grad, f"{name} {size}")
    runs = [(name, mode, model) for name, model in models.items() for mode in MODES]

    def set_mode(model, mode):
        model.mode = mode
        return model

    train = [lambda m=m, mode=mode: train_step(set_mode(m, mode), x, grad) for _, mode, m in runs]
    times = median_ms(lambda: train_step(ref, x, grad), *train, repeats=repeats)
    with torch.no_grad():
        infer = [lambda m=m, mode=mode: set_mode(m, mode)(x) for _, mode, m in runs]
        infer_times = median_ms(lambda: ref(x), *infer, repeats=repeats)
    return [{"model": f"{name} {mode}", "size": size, "train": t, "ref_train": times[0],
             "infer": ti, "ref_infer": infer_times[0]}
            for (name, mode, _), t, ti in zip(runs, times[1:], infer_times[1:])]


def table(rows) -> str:
    head = ("ms, medians; ratio = ours / torch.nn.GRU\n\n"
            "| model | T, B, H | train | torch.nn.GRU train | ratio | infer | "
            "torch.nn.GRU infer | ratio |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['model']} | {', '.join(map(str, r['size']))} | {r['train']:.1f} | "
             f"{r['ref_train']:.1f} | {r['train'] / r['ref_train']:.2f} | {r['infer']:.1f} | "
             f"{r['ref_infer']:.1f} | {r['infer'] / r['ref_infer']:.2f} |" for r in rows]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs in a row per round (3 rounds; median of all)")
    parser.add_argument("--sizes", nargs="*", default=None,
                        help="sizes as T,B,H (default: " + " ".join(
                            ",".join(map(str, s)) for s in SIZES) + ")")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else SIZES
    loop = "compiled (C++)" if minrnn._extension() is not None else "python"
    torch.set_flush_denormal(True)          # as a training run (lstmkit train) sets it
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          "flush-to-zero; "
          f"sequential step loop: {loop}\n")
    print(table([row for size in sizes for row in bench_size(size, args.repeats)]), flush=True)


if __name__ == "__main__":
    main()
