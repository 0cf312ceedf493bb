"""The language model a PyTorch user writes, the baseline lstmkit's ``LanguageModel`` is timed
against (bench_generate.py, bench_lm_step.py): nn.Embedding, nn.LSTM and nn.Linear, with
F.cross_entropy on the logits. Its parameter names are ``LanguageModel``'s, so one model's
state_dict loads into the other."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class PlainLanguageModel(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        """Tokens (L, N) -> logits (L, N, V) and the final state."""
        out, state = self.rnn(self.embed(tokens), state)
        return self.decoder(out), state

    def loss(self, tokens, targets, state=None):
        """(mean cross-entropy of targets (L, N), final state), as ``LanguageModel.loss``."""
        logits, state = self(tokens, state)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)), state
