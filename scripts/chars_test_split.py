"""Where the `chars` test split is hard: loss per part of the validation and test text.

Tiny Shakespeare's last 5% (the test split) begins with the end of *The Taming of the Shrew*,
whose earlier scenes are the validation split, and goes on into *The Tempest*, a play of which
no line (nor any of its speakers' names) is in the training or validation text. This script
cuts the test text where a marker first occurs (by default the Tempest's first line) and
prints the loss of each part, for

- a trained run (``--run``): its best model reads each split as one stream, the state carried
  from character to character (nats/char; close to what ``lstmkit evaluate`` prints, which
  reads 10 streams), and
- a non-neural yardstick: an interpolated character n-gram model (Witten-Bell smoothing,
  ``--order`` characters of context) counted on the training text.

    python scripts/chars_test_split.py [--run RUN] [--data-dir DIR] [--order 5]
"""

from __future__ import annotations

import argparse
import collections
import math
import sys

import torch
import torch.nn.functional as F

from lstmkit.data import load_text

TEMPEST = "Master:\nBoatswain!"


class WittenBell:
    """P(c | the previous `order` characters), interpolated down to the uniform distribution:
    P_n(c | h) = lam_h C(h c) / C(h) + (1 - lam_h) P_{n-1}(c | h'), lam_h = C(h) / (C(h) + T(h)),
    T(h) the number of distinct characters seen after h, h' h without its first character."""

    def __init__(self, text: str, order: int, vocab: int):
        self.order, self.vocab = order, vocab
        self.counts = [collections.defaultdict(collections.Counter) for _ in range(order + 1)]
        for i, ch in enumerate(text):
            for n in range(min(order, i) + 1):
                self.counts[n][text[i - n:i]][ch] += 1

    def nats(self, text: str) -> list[float]:
        """-log P(text[i] | text[i - order:i]) for every i >= order."""
        out = []
        for i in range(self.order, len(text)):
            p = 1.0 / self.vocab
            for n in range(self.order + 1):
                seen = self.counts[n].get(text[i - n:i])
                if not seen:
                    break
                total = sum(seen.values())
                lam = total / (total + len(seen))
                p = lam * seen[text[i]] / total + (1 - lam) * p
            out.append(-math.log(p))
        return out


@torch.no_grad()
def run_nats(run: str, ids: torch.Tensor) -> list[float]:
    """Per-character loss of the run's best model reading ids (L,) as one stream."""
    from lstmkit.cli import load_run

    _, _, model = load_run(run)
    model.eval()
    state, out = None, []
    for i in range(0, ids.numel() - 1, 1000):
        x, y = ids[i:i + 1001][:-1, None], ids[i + 1:i + 1001, None]
        logits, state = model(x, state)
        out += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               reduction="none").tolist()
    return out


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="a `lstmkit train chars` run folder (else the n-gram only)")
    ap.add_argument("--data-dir", help="folder holding tinyshakespeare/ (else $LSTMKIT_DATA)")
    ap.add_argument("--order", type=int, default=5, help="n-gram context length (default 5)")
    ap.add_argument("--marker", default=TEMPEST,
                    help="the test text is cut where this first occurs (default: the first "
                         "line of The Tempest)")
    args = ap.parse_args()
    if args.order < 1:
        sys.exit(f"--order must be at least 1, got {args.order}")
    corpus = load_text(None, args.data_dir)
    text = {k: "".join(corpus.chars[i] for i in getattr(corpus, k).tolist())
            for k in ("train", "valid", "test")}
    cut = text["test"].find(args.marker.replace("\\n", "\n"))
    if cut <= 0:
        sys.exit(f"the marker {args.marker!r} is not in the test text (or opens it): "
                 "nothing to cut")
    print(f"test split: {len(text['test']):,} characters; {cut:,} before the marker, "
          f"{len(text['test']) - cut:,} from it on")
    models = [(f"{args.order}-character Witten-Bell n-gram",
               WittenBell(text["train"], args.order, len(corpus.chars)).nats)]
    if args.run:
        models.insert(0, (f"run {args.run}",
                          lambda s: run_nats(args.run, torch.tensor([corpus.stoi[c] for c in s]))))
    print("| model | valid | test | test before the marker | test from it on |")
    print("|---|---:|---:|---:|---:|")
    for name, nats in models:
        valid, test = nats(text["valid"]), nats(text["test"])
        # both models score character i from i - 1 (the run) or i - order (the n-gram) on
        k = len(text["test"]) - len(test)
        print(f"| {name} | {mean(valid):.4f} | {mean(test):.4f} | {mean(test[:cut - k]):.4f} | "
              f"{mean(test[cut - k:]):.4f} |")


if __name__ == "__main__":
    main()
