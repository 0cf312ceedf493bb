"""Surname -> language of origin: a character-level sequence classifier.

Accuracy is the fraction of test names classified right; macro-averaged accuracy is the mean of
the per-language accuracies, which the 18 very unequal classes (Russian 9,408 names, Vietnamese
73) make the harder number.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from .. import plots
from ..data import ALPHABET, encode_name, load_names, romanize
from ..data.names import split_disjoint
from .base import Task, split_sizes
from .models import SequenceClassifier

SPLIT_SEED = 0               # the train/test/valid split is fixed, whatever the training seed
EVAL_BATCH = 512
MAX_NAME_CHARS = 100         # the longest surname in the data has 20


@dataclass
class NameReading:
    """A name to classify as the model will read it: ``read_as`` in ALPHABET's characters,
    ``left_out`` the characters with no transliteration; or ``error``, why it cannot be read."""

    name: str
    read_as: str = ""
    left_out: list[str] = field(default_factory=list)
    error: str = ""


def read_name(name: str) -> NameReading:
    """A name in any script, romanised (lstmkit.data.romanize), or the reason it cannot be
    classified: longer than MAX_NAME_CHARS, or no Latin letter left."""
    if len(name) > MAX_NAME_CHARS:
        return NameReading(name, error=f"{len(name):,} characters; a name may have at most "
                           f"{MAX_NAME_CHARS}")
    read_as, left_out = romanize(name)
    if not set(read_as) & set(string.ascii_letters):
        why = f" ({''.join(left_out)} has no transliteration here)" if left_out else ""
        return NameReading(name, left_out=left_out, error=f"no letter the model can read{why}")
    return NameReading(name, read_as, left_out)


def collate(names: list[torch.Tensor]):
    """Tokens (L, N) padded with 0, and lengths (N,)."""
    return pad_sequence(names), torch.tensor([len(n) for n in names])


def accuracies(logp: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy, macro-averaged accuracy) of argmax over logp (N, C) against labels (N,): the
    fraction right, and the mean over the classes present in labels of the fraction of each
    class right."""
    pred = logp.argmax(-1)
    recall = [(pred[labels == c] == c).float().mean().item()
              for c in range(logp.shape[1]) if (labels == c).any()]
    return (pred == labels).float().mean().item(), sum(recall) / len(recall)


def class_weights(labels: torch.Tensor, classes: int, power: float) -> torch.Tensor:
    """Loss weights (C,): w_c proportional to n_c ** -power, n_c the training names of class c,
    scaled so that the mean weight of a training name, sum_c n_c w_c / N, is 1 (power 0: all 1;
    1: inverse frequency, every class the same total weight). A class with no training name
    gets weight 0."""
    counts = torch.bincount(labels, minlength=classes).double()           # (C,)
    weights = torch.where(counts > 0, counts.clamp(min=1) ** -power, 0.0)
    return (weights * len(labels) / (weights * counts).sum()).float()


class NamesTask(Task):
    name = "names"
    # accuracy is the target; the validation loss turns up (over-confidence) while accuracy
    # still climbs
    select_by = "accuracy"
    higher_is_better = True
    batch_dims = (1, 0, 0)                  # tokens (L, N), lengths (N,), labels (N,)
    dataset = "names"
    loss_label = "cross-entropy (nats/name)"

    def __init__(self, cfg, for_training=True):
        super().__init__(cfg)
        if not for_training:
            self.languages = cfg.meta["languages"]
            return
        data = load_names(cfg.data_dir, seed=SPLIT_SEED, test_fraction=0.1, split=cfg.split)
        self.languages = data.languages
        if cfg.split == "disjoint":         # validation too measures names never trained on
            train, valid = split_disjoint(data.train, 0.1, random.Random(SPLIT_SEED))
        else:
            train, valid = self.hold_out(data.train, 0.1)
        if cfg.train_size:                  # a small slice, for quick runs and tests
            rng = random.Random(SPLIT_SEED)
            keep = min(cfg.train_size, len(train)) / len(train)
            train = rng.sample(train, min(cfg.train_size, len(train)))
            valid = rng.sample(valid, min(len(valid), max(20, round(keep * len(valid)))))
        self.splits = {name: ([encode_name(n) for n, _ in items],
                              torch.tensor([y for _, y in items]))
                       for name, items in (("train", train), ("valid", valid),
                                           ("test", data.test))}
        self.loss_weights = class_weights(self.splits["train"][1], len(self.languages),
                                          cfg.class_weight)
        cfg.meta = {"languages": self.languages, "alphabet": ALPHABET,
                    "sizes": {k: len(v[1]) for k, v in self.splits.items()}}

    @staticmethod
    def hold_out(items, fraction):
        """A stratified validation set from the training names (the test set stays unseen)."""
        by_label: dict[int, list] = {}
        for item in items:
            by_label.setdefault(item[1], []).append(item)
        rng = random.Random(SPLIT_SEED)
        train, valid = [], []
        for label in sorted(by_label):
            group = by_label[label][:]
            rng.shuffle(group)
            k = max(1, round(fraction * len(group)))
            valid += group[:k]
            train += group[k:]
        return train, valid

    def data_sizes(self):
        return split_sizes(self.cfg.meta["sizes"], "names")

    def build_model(self):
        c = self.cfg
        return SequenceClassifier(len(ALPHABET), len(self.languages), c.cell, c.embed, c.hidden,
                                  c.layers, c.dropout, c.bidirectional, c.engine,
                                  c.rnn_options())

    def train_batches(self, generator):
        names, labels = self.splits["train"]
        order = torch.randperm(len(names), generator=generator).tolist()
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            yield (*collate([names[i] for i in idx]), labels[idx])

    def batches_per_epoch(self):
        return -(-len(self.splits["train"][1]) // self.cfg.batch_size)

    def train_step(self, model, batch, carry):
        tokens, lengths, labels = batch
        losses = F.cross_entropy(model(tokens, lengths), labels, reduction="none")   # (N,)
        return (self.loss_weights.to(losses.device)[labels] * losses).mean(), None

    @torch.no_grad()
    def scores(self, model, names: list[torch.Tensor]) -> torch.Tensor:
        """Log-probabilities (N, C) for encoded names, in batches."""
        model.eval()
        out = [F.log_softmax(model(*collate(names[i : i + EVAL_BATCH])), -1)
               for i in range(0, len(names), EVAL_BATCH)]
        return torch.cat(out)

    def evaluate(self, model, split):
        names, labels = self.splits[split]
        logp = self.scores(model, names)
        accuracy, macro = accuracies(logp, labels)
        return {"loss": F.nll_loss(logp, labels).item(), "accuracy": accuracy,
                "macro_accuracy": macro}

    def describe(self, m):
        return (f"loss {m['loss']:.4f}  accuracy {m['accuracy']:.3f}  "
                f"macro {m['macro_accuracy']:.3f}")

    def confusion(self, model) -> torch.Tensor:
        """Counts (C, C) on the test names: row the true language, column the predicted."""
        names, labels = self.splits["test"]
        pred = self.scores(model, names).argmax(-1)
        C = len(self.languages)
        counts = torch.zeros(C, C, dtype=torch.long)
        counts.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
        return counts

    def figures(self, model, run_dir):
        confusion = self.confusion(model)
        plots.confusion_matrix(confusion, self.languages, run_dir / "confusion.png",
                               title=f"Test names ({int(confusion.sum()):,}): true language "
                               "(rows) vs predicted (columns)")

    def predict(self, model, names: list[str], top: int = 3):
        """For each name (Latin script; see read_name for others), the `top` most likely
        languages with probabilities."""
        logp = self.scores(model, [encode_name(n) for n in names])
        probs, idx = logp.exp().topk(min(top, len(self.languages)), -1)
        return [[(self.languages[i], p) for i, p in zip(row_i.tolist(), row_p.tolist())]
                for row_i, row_p in zip(idx, probs)]
