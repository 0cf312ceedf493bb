"""Tasks generated in code: the adding problem and the copy task (long time lags), parity.

Adding (Hochreiter & Schmidhuber 1997): inputs (T, N, 2), values U[0, 1] and two markers, one
in each half; the target is the sum of the two marked values. Predicting 1 always scores MSE
1/6 = 0.167; the task counts as solved below MSE 0.01.

Copy (Arjovsky et al. 2016): ten symbols, T blanks, a delimiter, then the network must repeat
the ten symbols. A memoryless baseline scores cross-entropy 10 log 8 / (T + 20).

Parity (Deletang et al. 2023): is the count of ones in a bit string odd? Trained on lengths
drawn uniformly from 1..L (--length), scored on fixed sets of the same lengths and of longer
ones, L+1..6L (length generalisation); chance is accuracy 0.5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data import adding_problem, copy_task
from ..data.synthetic import PARITY_PAD, parity
from .base import Task
from .models import SequenceClassifier, SequenceRegressor, TokenSequenceModel

TEST_SEED = 20_140_000        # the test set is the same for every run
TEST_SIZE = 1000
SOLVED_MSE = 0.01
COPY_SYMBOLS, COPY_LENGTH = 8, 10


class SyntheticTask(Task):
    """Fresh training batches each epoch from the generator; a fixed test set."""

    def __init__(self, cfg, for_training=True):
        super().__init__(cfg)
        gen = torch.Generator().manual_seed(TEST_SEED + cfg.length)
        self.test = self.make(TEST_SIZE, gen)
        cfg.meta = {"length": cfg.length}

    def make(self, batch, generator):
        raise NotImplementedError

    def batches_per_epoch(self):
        return self.cfg.steps_per_epoch

    def data_sizes(self):
        return (f"train {self.cfg.steps_per_epoch * self.cfg.batch_size:,} fresh each epoch, "
                f"test {TEST_SIZE:,} sequences of length {self.cfg.length}, made in code")

    def train_batches(self, generator):
        for _ in range(self.cfg.steps_per_epoch):
            yield self.make(self.cfg.batch_size, generator)


class AddingTask(SyntheticTask):
    name = "adding"
    loss_label = "mean squared error"

    def make(self, batch, generator):
        return adding_problem(batch, self.cfg.length, generator)

    def build_model(self):
        c = self.cfg
        return SequenceRegressor(2, 1, c.cell, c.hidden, c.layers, c.dropout, False, c.engine,
                                 c.rnn_options())

    def train_step(self, model, batch, carry):
        x, y = batch
        return F.mse_loss(model(x)[:, 0], y), None

    @torch.no_grad()
    def evaluate(self, model, split):
        model.eval()
        x, y = self.test
        mse = F.mse_loss(model(x)[:, 0], y).item()
        return {"loss": mse, "mse": mse, "solved": float(mse < SOLVED_MSE)}

    def describe(self, m):
        return f"MSE {m['mse']:.4f} (predicting 1: 0.167; solved below {SOLVED_MSE})"


class CopyTask(SyntheticTask):
    name = "copy"
    loss_label = "cross-entropy (nats/symbol)"
    batch_dims = (1, 1)                     # symbols and targets (T, N)

    def batch_units(self, batch):
        return batch[1].numel()

    def make(self, batch, generator):
        return copy_task(batch, self.cfg.length, generator, COPY_SYMBOLS, COPY_LENGTH)

    def build_model(self):
        c = self.cfg
        return TokenSequenceModel(COPY_SYMBOLS + 2, c.cell, c.embed, c.hidden, c.layers, c.engine,
                                  c.rnn_options())

    def train_step(self, model, batch, carry):
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)), None

    @torch.no_grad()
    def evaluate(self, model, split):
        model.eval()
        x, y = self.test
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
        copied = logits[-COPY_LENGTH:].argmax(-1) == y[-COPY_LENGTH:]
        return {"loss": loss, "accuracy": copied.float().mean().item(),
                "baseline_loss": COPY_LENGTH * math.log(COPY_SYMBOLS)
                / (self.cfg.length + 2 * COPY_LENGTH)}

    def describe(self, m):
        return (f"cross-entropy {m['loss']:.4f} (memoryless {m['baseline_loss']:.4f}), "
                f"copied symbols right {m['accuracy']:.3f}")


PARITY_LONGEST = 6                      # the long-length sets: lengths L+1 .. 6L
PARITY_EVAL_BATCH = 500


class ParityTask(Task):
    """Parity of a bit string, variable lengths: a SequenceClassifier over tokens 0/1 reads
    each string to its length (the layer's ``lengths=``) and scores odd/even from its final
    hidden state. Fresh training batches of lengths 1..L; fixed validation and test sets, each
    of TEST_SIZE strings of lengths 1..L (in distribution) and TEST_SIZE of L+1..6L (long)."""

    name = "parity"
    loss_label = "cross-entropy (nats/string)"
    batch_dims = (1, 0, 0)                  # tokens (T, N), lengths (N,), labels (N,)

    def __init__(self, cfg, for_training=True):
        super().__init__(cfg)
        L = cfg.length
        self.long_lengths = (L + 1, PARITY_LONGEST * L)
        self.sets = {}
        for split, seed in (("valid", TEST_SEED + 1), ("test", TEST_SEED)):
            gen = torch.Generator().manual_seed(seed + 1000 * L)
            self.sets[split] = {"": parity(TEST_SIZE, 1, L, gen),
                                "long_": parity(TEST_SIZE, *self.long_lengths, gen)}
        cfg.meta = {"length": L, "long_lengths": list(self.long_lengths)}

    def data_sizes(self):
        L, (lo, hi) = self.cfg.length, self.long_lengths
        return (f"train {self.cfg.steps_per_epoch * self.cfg.batch_size:,} fresh strings each "
                f"epoch of lengths 1..{L}; valid and test {TEST_SIZE:,} each of lengths "
                f"1..{L} and {TEST_SIZE:,} of {lo}..{hi}, made in code")

    def build_model(self):
        c = self.cfg
        return SequenceClassifier(PARITY_PAD + 1, 2, c.cell, c.embed, c.hidden, c.layers,
                                  c.dropout, c.bidirectional, c.engine, c.rnn_options())

    def batches_per_epoch(self):
        return self.cfg.steps_per_epoch

    def train_batches(self, generator):
        for _ in range(self.cfg.steps_per_epoch):
            yield parity(self.cfg.batch_size, 1, self.cfg.length, generator)

    def train_step(self, model, batch, carry):
        tokens, lengths, labels = batch
        return F.cross_entropy(model(tokens, lengths), labels), None

    @torch.no_grad()
    def evaluate(self, model, split):
        """loss and accuracy on lengths 1..L; long_loss and long_accuracy on L+1..6L."""
        model.eval()
        metrics = {}
        for prefix, (tokens, lengths, labels) in self.sets[split].items():
            logits = torch.cat([
                model(tokens[:, i:i + PARITY_EVAL_BATCH], lengths[i:i + PARITY_EVAL_BATCH])
                for i in range(0, len(labels), PARITY_EVAL_BATCH)])
            metrics[prefix + "loss"] = F.cross_entropy(logits, labels).item()
            metrics[prefix + "accuracy"] = (logits.argmax(-1) == labels).float().mean().item()
        return metrics

    def describe(self, m):
        (lo, hi) = self.long_lengths
        return (f"accuracy {m['accuracy']:.3f} on lengths 1..{self.cfg.length}, "
                f"{m['long_accuracy']:.3f} on {lo}..{hi} (chance 0.5)")
