"""One language-model training step: lstmkit's LanguageModel against a plain PyTorch model.

The plain model is what a PyTorch user writes: nn.Embedding, nn.LSTM, nn.Linear and
F.cross_entropy on the logits. lstmkit's runs the same layers (engine="auto": the compiled engine
for this training step on AVX-512 machines, torch's fused LSTM kernel elsewhere) with the decoder
and the loss fused (lstmkit.losses). A third row runs lstmkit's model with engine="torch" (torch's
fused LSTM kernel whatever the machine), so that the two LSTM engines are compared in the same
run. A step is
forward, backward of the loss summed over the unrolled steps, gradient clipping at 5 and an SGD
update, as in Zaremba et al.'s small Penn Treebank configuration (the default size here).

    python benchmarks/bench_lm_step.py [--vocab 10000 --hidden 200 --bptt 20 --batch 20]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from plain_lm import PlainLanguageModel
from torch import nn

from lstmkit.runtime import keep_freed_memory
from lstmkit.tasks.models import LanguageModel


def make_step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    carry = [None]

    def step():
        loss, state = model.loss(x, y, carry[0])
        carry[0] = tuple(s.detach() for s in state)
        opt.zero_grad(set_to_none=True)
        (loss * x.shape[0]).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        return loss
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--bptt", type=int, default=20)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="let glibc keep freed memory (what `lstmkit train` does) for both models")
    a = p.parse_args(argv)
    if a.keep_freed_memory and not keep_freed_memory():
        raise SystemExit("--keep-freed-memory: not available here (needs glibc)")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    V, H = a.vocab, a.hidden
    torch.manual_seed(0)
    ours = LanguageModel(V, "lstm", H, H, a.layers)
    ours_torch = LanguageModel(V, "lstm", H, H, a.layers, engine="torch")
    plain = PlainLanguageModel(V, H, H, a.layers)
    with torch.no_grad():                                     # same weights, by name
        for (_, q), (_, r), (_, u) in zip(ours.named_parameters(), plain.named_parameters(),
                                          ours_torch.named_parameters()):
            q.uniform_(-0.1, 0.1)
            r.copy_(q)
            u.copy_(q)
    x = torch.randint(V, (a.bptt, a.batch))
    y = torch.randint(V, (a.bptt, a.batch))
    steps = {"lstmkit": make_step(ours, x, y), "plain PyTorch": make_step(plain, x, y),
             "lstmkit, engine=torch": make_step(ours_torch, x, y)}
    first = {k: f().item() for k, f in steps.items()}      # same weights: same first loss
    ref = first["plain PyTorch"]
    if any(abs(v - ref) > 1e-5 * abs(ref) for v in first.values()):
        raise SystemExit(f"the models disagree before timing: {first}")
    times: dict[str, list[float]] = {k: [] for k in steps}
    faults = dict.fromkeys(steps, 0)
    for _ in range(a.rounds):                               # models take turns between rounds
        for name, step in steps.items():
            step()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(a.repeat):
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    print(f"LM training step, V={V} H={H} layers={a.layers} bptt={a.bptt} batch={a.batch}, "
          f"{torch.get_num_threads()} threads, flush-to-zero on; ms, medians of "
          f"{a.rounds * a.repeat}; glibc keeps freed memory: "
          f"{'yes' if a.keep_freed_memory else 'no (its default)'}")
    print("| model | step (ms) | ratio to plain | page faults per step |")
    print("|---|---:|---:|---:|")
    for k in steps:
        print(f"| {k} | {med[k]:.1f} | {med[k] / med['plain PyTorch']:.2f} | "
              f"{faults[k] / (a.rounds * a.repeat):.0f} |")


if __name__ == "__main__":
    main()
