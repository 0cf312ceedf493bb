"""Language models: words (Penn Treebank) and characters (any text; Tiny Shakespeare).

The corpus is cut into N parallel streams (Zaremba et al. 2014): a (L_total, N) matrix read in
segments of ``bptt`` steps, the recurrent state carried from one segment to the next and cut
from the graph there (truncated backpropagation through time). Loss is cross-entropy in nats
per token; perplexity = exp(loss); bits per character = loss / ln 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data import DataError, load_ptb, load_text, load_word_corpus
from .base import Task, detach_state, split_sizes
from .models import LanguageModel

EVAL_BATCH = 10


def batchify(data: torch.Tensor, streams: int) -> torch.Tensor:
    """A 1-D token sequence as `streams` contiguous columns: (L, N)."""
    n = data.numel() // streams
    if n < 2:
        raise DataError(f"a corpus of {data.numel()} tokens is too short for {streams} streams")
    return data[: n * streams].view(streams, n).t().contiguous()


def segments(data: torch.Tensor, bptt: int):
    """(input, target) pairs of up to bptt steps: targets are the inputs shifted by one."""
    for i in range(0, data.shape[0] - 1, bptt):
        n = min(bptt, data.shape[0] - 1 - i)
        yield data[i : i + n], data[i + 1 : i + 1 + n]


class LanguageModelTask(Task):
    select_by = "loss"
    tokens_name = "token"
    batch_dims = (1, 1)                     # inputs and targets (L, N)

    def __init__(self, cfg, for_training=True):
        super().__init__(cfg)
        if not for_training:
            self.vocab = cfg.meta["vocab"]
            self.stoi = {w: i for i, w in enumerate(self.vocab)}
            return
        self.vocab, splits = self.load()
        self.stoi = {w: i for i, w in enumerate(self.vocab)}
        self.train_data = batchify(splits["train"], cfg.batch_size)
        self.eval_data = {k: batchify(v, EVAL_BATCH) for k, v in splits.items() if k != "train"}
        cfg.meta = {"vocab": self.vocab, "tokens": {k: int(v.numel()) for k, v in splits.items()}}

    def load(self):
        raise NotImplementedError

    def data_sizes(self):
        return split_sizes(self.cfg.meta["tokens"], f"{self.tokens_name}s")

    def build_model(self):
        c = self.cfg
        return LanguageModel(len(self.vocab), c.cell, c.embed, c.hidden, c.layers, c.dropout,
                             c.tie, c.engine, c.rnn_options())

    def train_batches(self, generator):
        return segments(self.train_data, self.cfg.bptt)      # in order: the state carries over

    def batches_per_epoch(self):
        return -(-(self.train_data.shape[0] - 1) // self.cfg.bptt)

    def train_step(self, model, batch, carry):
        x, y = batch
        loss, state = model(x, carry, targets=y)       # through forward: DDP sees it
        return loss, detach_state(state)

    def batch_units(self, batch):
        return batch[1].numel()

    def loss_weight(self, batch):
        # Zaremba et al. sum the loss over the unrolled steps (mean over the batch): with SGD
        # at lr 1 that scale is part of the recipe
        return float(batch[0].shape[0]) if self.cfg.sum_over_steps else 1.0

    def carry_tensors(self, carry):
        if carry is None:
            return {}
        states = carry if isinstance(carry, tuple) else (carry,)
        return {f"carry.{i}": s for i, s in enumerate(states)}

    def carry_from_tensors(self, tensors):
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("carry."))]
        if not states:
            return None
        return tuple(states) if len(states) > 1 else states[0]

    @torch.no_grad()
    def evaluate(self, model, split):
        model.eval()
        total, count, state = 0.0, 0, None
        for x, y in segments(self.eval_data[split], self.cfg.bptt):
            loss, state = model.loss(x, y, state)
            total += loss.item() * y.numel()
            count += y.numel()
        loss = total / count
        return {"loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2)}

    def describe(self, m):
        return f"loss {m['loss']:.4f}  perplexity {m['perplexity']:.2f}"

    # ------------------------------------------------------------------ sampling
    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError

    def detokenize(self, ids: list[int]) -> str:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, model, prime: str, length: int, temperature: float = 1.0,
               seed: int = 0) -> str:
        """Continue `prime` by `length` tokens drawn from softmax(logits / temperature)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        model.eval()
        gen = torch.Generator().manual_seed(seed)
        ids = self.tokenize(prime)
        start = ids or [int(torch.randint(len(self.vocab), (1,), generator=gen))]
        logits, state = model(torch.tensor(start)[:, None])
        out = []
        for _ in range(length):
            probs = F.softmax(logits[-1, 0] / temperature, -1)
            token = int(torch.multinomial(probs, 1, generator=gen))
            out.append(token)
            logits, state = model(torch.tensor([[token]]), state)
        return self.detokenize(start) + self.joiner + self.detokenize(out)


class PTBTask(LanguageModelTask):
    """Penn Treebank, word level: 10,000 words, <eos> at each line end."""

    name = "ptb"
    joiner = " "
    dataset = "ptb"
    tokens_name = "word"
    loss_label = "cross-entropy (nats/word)"

    def load(self):
        if self.cfg.path:                     # a folder laid out like PTB: ptb.{train,...}.txt
            corpus = load_word_corpus(self.cfg.path, "ptb")
        else:
            corpus = load_ptb(self.cfg.data_dir)
        return corpus.vocab, {"train": corpus.train, "valid": corpus.valid, "test": corpus.test}

    def tokenize(self, text):
        unk = self.stoi.get("<unk>")
        ids = [self.stoi.get(w, unk) for w in text.split()]
        if None in ids:
            raise DataError("the prime has words outside the vocabulary and it has no <unk>")
        return ids

    def detokenize(self, ids):
        return " ".join(self.vocab[i] for i in ids).replace(" <eos> ", "\n").replace("<eos>", "\n")


class CharsTask(LanguageModelTask):
    """Characters of a UTF-8 text (Tiny Shakespeare by default): 90% train, then 5% valid, then
    5% test."""

    name = "chars"
    joiner = ""
    dataset = "tinyshakespeare"
    tokens_name = "character"
    loss_label = "cross-entropy (nats/char)"

    def load(self):
        corpus = load_text(self.cfg.path, self.cfg.data_dir)
        return corpus.chars, {"train": corpus.train, "valid": corpus.valid, "test": corpus.test}

    def describe(self, m):
        return f"loss {m['loss']:.4f} nats/char  ({m['bits_per_token']:.3f} bits/char)"

    def tokenize(self, text):
        missing = sorted(set(text) - set(self.stoi))
        if missing:
            raise DataError(f"the prime has characters the model never saw: {missing}")
        return [self.stoi[ch] for ch in text]

    def detokenize(self, ids):
        return "".join(self.vocab[i] for i in ids)
