"""A non-neural baseline for the surname task: multinomial naive Bayes over character n-grams.

Same data and split as ``lstmkit train names`` (``load_names``, seed 0). The n-gram length
(3-5) and the smoothing alpha are chosen on a random 10% of the training names; the chosen model
is refit on all training names and scored on the test names (accuracy and macro-averaged
accuracy). What it is for: a yardstick for the LSTM's accuracy on this split (RESULTS.md).

    python scripts/names_ngram_baseline.py [--data-dir DIR] [--split standard|disjoint]

With ``--split disjoint`` no surname is in both train and test, and the validation names share
none with the names fitted (``split_disjoint``), as ``lstmkit train names --split disjoint``.
"""

from __future__ import annotations

import argparse
import collections
import math
import random

from lstmkit.data.names import SPLITS, load_names, split_disjoint


def grams(name: str, n_max: int) -> list[str]:
    s = "^" + name.lower() + "$"
    return [s[i:i + n] for n in range(1, n_max + 1) for i in range(len(s) - n + 1)]


class NaiveBayes:
    def __init__(self, data, classes: int, n_max: int, alpha: float):
        self.n_max, self.alpha = n_max, alpha
        counts = [collections.Counter() for _ in range(classes)]
        prior = collections.Counter(y for _, y in data)
        for name, y in data:
            counts[y].update(grams(name, n_max))
        vocab = len(set().union(*counts))
        self.log_prior = [math.log(prior[c] / len(data)) for c in range(classes)]
        self.counts = counts
        self.denominator = [sum(c.values()) + alpha * vocab for c in counts]

    def predict(self, name: str) -> int:
        g = grams(name, self.n_max)
        scores = [lp + sum(math.log((cnt[x] + self.alpha) / den) for x in g)
                  for lp, cnt, den in zip(self.log_prior, self.counts, self.denominator)]
        return max(range(len(scores)), key=scores.__getitem__)


def accuracy(model: NaiveBayes, data) -> tuple[float, float]:
    per = collections.defaultdict(list)
    for name, y in data:
        per[y].append(model.predict(name) == y)
    overall = sum(map(sum, per.values())) / len(data)
    return overall, sum(sum(v) / len(v) for v in per.values()) / len(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with names/ (else $LSTMKIT_DATA)")
    ap.add_argument("--split", choices=SPLITS, default="standard",
                    help="the names task's split (default: standard)")
    args = ap.parse_args()
    d = load_names(args.data_dir, split=args.split)
    classes = len(d.languages)
    train = list(d.train)
    random.Random(0).shuffle(train)
    val, fit = train[: len(train) // 10], train[len(train) // 10:]
    if args.split == "disjoint":
        fit, val = split_disjoint(d.train, 0.1, random.Random(0))
    print("| n-grams up to | alpha | validation accuracy |\n|---:|---:|---:|")
    results = []
    for n_max in (3, 4, 5):
        for alpha in (0.1, 0.5, 1.0):
            acc = accuracy(NaiveBayes(fit, classes, n_max, alpha), val)[0]
            results.append((acc, n_max, alpha))
            print(f"| {n_max} | {alpha} | {acc:.4f} |", flush=True)
    _, n_max, alpha = max(results)
    acc, macro = accuracy(NaiveBayes(d.train, classes, n_max, alpha), d.test)
    print(f"\nchosen: n-grams up to {n_max}, alpha {alpha}; test accuracy {acc:.4f}, "
          f"macro-averaged {macro:.4f} ({len(d.test)} test names)")


if __name__ == "__main__":
    main()
