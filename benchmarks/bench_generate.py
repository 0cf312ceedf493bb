"""Generation one token at a time (the `lstmkit sample` path) and short inference calls.

Usage:
    .venv/bin/python benchmarks/bench_generate.py [--hidden 512] [--layers 2] [--threads 2]

Part 1, per-character latency: a character model (vocabulary 65, embedding 64, 2 x 512 LSTM)
generates one character per call, carrying its state: embedding, one LSTM step, decoder,
softmax and a multinomial draw. "plain PyTorch" is nn.Embedding + nn.LSTM + nn.Linear called
the same way; the lstmkit rows are ``LanguageModel`` with each engine ("auto" is what `lstmkit
sample` runs). Every model is checked to give the same logits as the plain one first.

Part 2, where the engines cross: a forward call of the LSTM layer alone at batch 1 and lengths
T = 1 ... 64, torch.nn.LSTM against engine="compiled" (no_grad). "auto" follows this table.

Times are medians (bench_layers.median_ms: 3 rounds, the models taking turns), in
microseconds per token; ratio = lstmkit / plain PyTorch (below 1 lstmkit is faster).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from bench_layers import median_ms
from plain_lm import PlainLanguageModel
from torch import nn

import lstmkit
from lstmkit.runtime import keep_freed_memory
from lstmkit.tasks.models import LanguageModel

VOCAB, EMBED = 65, 64


def generator(model, steps: int):
    """A function that generates `steps` characters, as LanguageModelTask.sample does."""
    def run():
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            logits, state = model(torch.tensor([[0]]))
            for _ in range(steps):
                token = int(torch.multinomial(F.softmax(logits[-1, 0], -1), 1, generator=gen))
                logits, state = model(torch.tensor([[token]]), state)
    return run


def part1(hidden: int, layers: int, steps: int) -> list[str]:
    torch.manual_seed(0)
    plain = PlainLanguageModel(VOCAB, EMBED, hidden, layers).eval()
    models = {"plain PyTorch": plain}
    for engine in ("auto", "torch", "compiled", "python"):
        m = LanguageModel(VOCAB, "lstm", EMBED, hidden, layers, engine=engine).eval()
        m.load_state_dict(plain.state_dict())
        models[f"lstmkit, engine={engine}"] = m
    tokens = torch.randint(VOCAB, (5, 1))
    with torch.no_grad():
        want = plain(tokens)[0]
        for name, m in models.items():
            torch.testing.assert_close(m(tokens)[0], want, atol=1e-4, rtol=1e-4, msg=name)
    times = median_ms(*(generator(m, steps) for m in models.values()), repeats=5)
    base = times[0]
    rows = [f"per-character generation, B = 1, {layers} x {hidden} LSTM, {steps} characters "
            "per call; us per character, medians", "",
            "| model | us / char | ratio to plain PyTorch |", "|---|---:|---:|"]
    rows += [f"| {name} | {1e3 * t / steps:.0f} | {t / base:.2f} |"
             for name, t in zip(models, times)]
    return rows


def part2(hidden: int, layers: int, lengths) -> list[str]:
    torch.manual_seed(0)
    ref = nn.LSTM(EMBED, hidden, layers).eval()
    ours = lstmkit.LSTM(EMBED, hidden, layers, engine="compiled").eval()
    ours.load_state_dict(ref.state_dict())
    rows = ["", f"one forward call of the {layers} x {hidden} LSTM layer at batch 1 (no_grad); "
            "us per call, medians", "",
            "| T | torch.nn.LSTM | compiled | ratio |", "|---:|---:|---:|---:|"]
    for T in lengths:
        x = torch.randn(T, 1, EMBED)
        with torch.no_grad():
            torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-4, rtol=1e-4)

        def call(m, x=x):
            def run():
                with torch.no_grad():
                    m(x)
            return run
        t_ref, t_ours = median_ms(call(ref), call(ours), repeats=10)
        rows.append(f"| {T} | {1e3 * t_ref:.0f} | {1e3 * t_ours:.0f} | {t_ours / t_ref:.2f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=50, help="characters per timed call")
    p.add_argument("--lengths", default="1,2,4,8,16,32,64")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="let glibc keep freed memory (what `lstmkit sample` does) for all models")
    args = p.parse_args()
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit("--keep-freed-memory: not available here (needs glibc)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, glibc "
          f"{'keeps freed memory' if args.keep_freed_memory else 'default'}")
    rows = part1(args.hidden, args.layers, args.steps)
    rows += part2(args.hidden, args.layers, [int(t) for t in args.lengths.split(",")])
    print("\n".join(rows))


if __name__ == "__main__":
    main()
