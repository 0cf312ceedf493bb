"""Training under ``torch.autocast("cpu", dtype=torch.bfloat16)``: the compiled engine's
bfloat16 products against torch.nn in float32 and torch.nn under the same autocast (its own
bfloat16 kernels), and a model trained both ways.

Usage:
    .venv/bin/python benchmarks/bench_bf16.py [--repeats 5] [--sizes 50,64,512,512 ...]
        [--models lstm gru peephole coupled rnn] [--train-steps 300] [--out FILE]

Speed: one training step (forward + backward, a loss on every output) per size (T, B, input,
hidden) and model. Columns, medians in ms (bench_layers.median_ms: the models take turns):

    torch fp32    torch.nn.LSTM / GRU / RNN in float32 (the peephole and coupled rows use
                  torch.nn.LSTM of the same size: no fused kernel for them exists)
    torch bf16    the same module under autocast (torch's bfloat16 kernels)
    ours fp32     lstmkit, engine="compiled", float32
    ours bf16     lstmkit, engine="compiled", under autocast: products in bfloat16, gates,
                  cell state and gradients in float32

Before timing, each autocast model's outputs and gradients are checked against the float32
model's (same weights) at bfloat16 tolerance.

Training (``--train-steps``, 0 to skip): a character model (embedding 64, LSTM 512, linear
decoder; Tiny Shakespeare from $LSTMKIT_DATA, else a seeded random text) trained with Adam on
the same batches from the same initial weights, once in float32 and once under autocast on the
compiled engine; the validation loss of both, and their relative difference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_compiled import models_for
from bench_layers import add_size_arguments, median_ms, output_of, sizes_from, train_step
from torch import nn

from lstmkit.data import MissingDataError, load_text
from lstmkit.data.store import require
from lstmkit.tasks.models import LanguageModel

MODELS = ("lstm", "gru", "peephole", "coupled", "rnn")


def step(model, x, grad, bf16: bool):
    """One training step of model, under bfloat16 autocast if bf16."""
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            train_step(model, x, grad)
    return run


def check_bf16(model, x, grad, what: str) -> None:
    """model under autocast agrees with itself in float32 to bfloat16 precision."""
    results = []
    for ac in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ac):
            train_step(model, x, grad)
            out = output_of(model, x).detach().float()
        results.append([out, x.grad.clone()] + [p.grad.clone() for p in model.parameters()])
    for name, a, b in zip(["output", "dx"] + [n for n, _ in model.named_parameters()], *results):
        err = ((b - a).norm() / a.norm().clamp_min(1e-30)).item()
        if not err < 2e-2:
            raise AssertionError(f"{what}: {name} under autocast is off by {err:.2e} (relative "
                                 "norm) from float32")


def bench_size(size, models, repeats: int) -> list[dict]:
    T, B, I, H = size
    rows = []
    for kind in models:
        ours, ref, _ = models_for(kind, I, H)          # compiled, torch.nn, python engine
        torch.manual_seed(1)
        x = torch.randn(T, B, I, requires_grad=True)
        grad = torch.randn(T, B, H)
        check_bf16(ours, x, grad, f"{kind} {size}")
        fns = [step(m, x, grad, bf16) for m in (ref, ours) for bf16 in (False, True)]
        t = median_ms(*fns, repeats=repeats)
        rows.append({"size": size, "model": kind, "torch_fp32": t[0], "torch_bf16": t[1],
                     "ours_fp32": t[2], "ours_bf16": t[3]})
    return rows


def table(rows) -> str:
    lines = ["| (T, B, I, H) | model | torch fp32 | torch bf16 | ours fp32 | ours bf16 | "
             "ours bf16 / torch fp32 | ours bf16 / torch bf16 | ours bf16 / ours fp32 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['model']} | {r['torch_fp32']:.2f} | "
                     f"{r['torch_bf16']:.2f} | {r['ours_fp32']:.2f} | {r['ours_bf16']:.2f} | "
                     f"{r['ours_bf16'] / r['torch_fp32']:.2f} | "
                     f"{r['ours_bf16'] / r['torch_bf16']:.2f} | "
                     f"{r['ours_bf16'] / r['ours_fp32']:.2f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ training both ways
def char_data():
    """(train ids, valid ids, vocabulary size, source): Tiny Shakespeare split 90/10 by
    lstmkit.data.load_text (from $LSTMKIT_DATA, else the user's cache), else a seeded random
    text of 26 letters."""
    try:
        path = require("tinyshakespeare") / "input.txt"
    except MissingDataError:
        ids = torch.randint(0, 26, (200_000,), generator=torch.Generator().manual_seed(0))
        return ids[:180_000], ids[180_000:], 26, "random letters (no Tiny Shakespeare found)"
    corpus = load_text(path)
    return corpus.train, corpus.valid, len(corpus.chars), str(path)


def batch(ids, T: int, B: int, g: torch.Generator):
    start = torch.randint(0, len(ids) - T - 1, (B,), generator=g)
    rows = torch.stack([ids[s: s + T + 1] for s in start.tolist()])
    return rows[:, :-1].t().contiguous(), rows[:, 1:].t().contiguous()   # (T, B)


def train_both(steps: int, T: int = 100, B: int = 32) -> str:
    train, valid, vocab, source = char_data()
    results = {}
    for ac in (False, True):
        torch.manual_seed(0)
        model = LanguageModel(vocab, "lstm", 64, 512, 1, engine="compiled")
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(1)
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = batch(train, T, B, g)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ac):
                logits, _ = model(x)
            loss = nn.functional.cross_entropy(logits.float().view(-1, vocab), y.view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        seconds = time.perf_counter() - t0
        gv = torch.Generator().manual_seed(2)
        with torch.no_grad():
            losses = []
            for _ in range(20):
                x, y = batch(valid, T, 64, gv)
                losses.append(nn.functional.cross_entropy(model(x)[0].view(-1, vocab),
                                                          y.view(-1)).item())
        results[ac] = (sum(losses) / len(losses), seconds)
    (l32, s32), (l16, s16) = results[False], results[True]
    return (f"Character model (embedding 64, LSTM 512, {steps} Adam steps of {B} x {T} "
            f"characters; {source}), validation loss in float32 (nats per character):\n\n"
            f"| training | validation loss | training time |\n|---|---:|---:|\n"
            f"| float32, compiled | {l32:.4f} | {s32:.1f} s |\n"
            f"| bfloat16 autocast, compiled | {l16:.4f} | {s16:.1f} s |\n\n"
            f"Relative difference of the losses: {abs(l16 - l32) / l32:.2%}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_size_arguments(parser)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--train-steps", type=int, default=300,
                        help="steps of the train-both-ways check (0 skips it)")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()
    sizes = sizes_from(args)
    torch.set_flush_denormal(True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}", flush=True)
    rows = []
    for size in sizes:
        rows += bench_size(size, args.models, args.repeats)
        print(table([r for r in rows if r["size"] == size]).split("\n", 2)[-1], flush=True)
    report = "Training step under bfloat16 autocast, medians in ms\n\n" + table(rows) + "\n"
    if args.train_steps:
        report += "\n" + train_both(args.train_steps) + "\n"
    print("\n" + report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
