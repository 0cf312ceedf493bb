"""The networks the tasks train: a recurrent layer of any cell between an input and an output.

Cells by name, from the registry (``lstmkit.cells.registry``; ``lstmkit train --help`` lists
them): lstm, peephole, coupled, gru (torch's form), gru-cho (Cho et al. 2014's form, which
Chung et al. 2014 compared), rnn (tanh), and any cell registered since. Shapes: N batch,
L sequence length, V vocabulary, H hidden size, C classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..cells import registry
from ..dropout import Dropout
from ..layers import make_layer
from ..losses import linear_cross_entropy


def __getattr__(name: str):
    if name == "CELLS":                 # the registered cells, now (a cell may register later)
        return registry.names()
    raise AttributeError(name)


def make_rnn(cell: str, input_size: int, hidden: int, layers: int = 1, dropout: float = 0.0,
             bidirectional: bool = False, engine: str = "auto",
             rnn_options: dict | None = None) -> nn.Module:
    """A time-major recurrent layer of the registered cell named cell; rnn_options: more of
    the layer's keywords (weight_drop, input_dropout)."""
    return make_layer(cell, input_size, hidden, num_layers=layers,
                      dropout=dropout if layers > 1 else 0.0, bidirectional=bidirectional,
                      engine=engine, **(rnn_options or {}))


def final_hidden(h_n, layers: int, directions: int) -> Tensor:
    """The last layer's final h of each direction, concatenated: (N, D*H)."""
    h = h_n[0] if isinstance(h_n, tuple) else h_n                  # (layers*D, N, H)
    return torch.cat([h[(layers - 1) * directions + d] for d in range(directions)], -1)


def final_outputs(out: Tensor, lengths: Tensor, directions: int) -> Tensor:
    """The final h of each direction read from the outputs (L, N, D*H) of a right-padded batch:
    step lengths-1 of the forward direction, step 0 of the reverse one; (N, D*H). For layers
    whose state does not hold h (the mLSTM's is (C, n, m))."""
    H = out.shape[-1] // directions
    rows = torch.arange(out.shape[1], device=out.device)
    last = out[lengths.to(out.device) - 1, rows, :H]
    return last if directions == 1 else torch.cat([last, out[0, :, H:]], -1)


class SequenceClassifier(nn.Module):
    """Tokens (L, N) with lengths -> class scores (N, C): embedding, RNN, the final hidden
    state(s), a linear layer."""

    def __init__(self, vocab: int, classes: int, cell: str = "lstm", embed: int = 64,
                 hidden: int = 128, layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False, engine: str = "auto",
                 rnn_options: dict | None = None):
        super().__init__()
        self.layers, self.directions = layers, 2 if bidirectional else 1
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = make_rnn(cell, embed, hidden, layers, dropout, bidirectional, engine,
                            rnn_options)
        self.h_in_state = registry.get(cell).state_names[0] == "h"
        self.drop = Dropout(dropout)
        self.out = nn.Linear(hidden * self.directions, classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        # longest first for the layer's lengths=, then back: what packing with
        # enforce_sorted=False does, in tensor ops that torch.export and ONNX follow
        order = lengths.argsort(descending=True)
        out, h_n = self.rnn(self.embed(tokens).index_select(1, order), lengths=lengths[order])
        final = self.final(out, h_n, lengths[order]).index_select(0, order.argsort())
        return self.out(self.drop(final))

    def final(self, out: Tensor, h_n, lengths: Tensor) -> Tensor:
        """The last layer's final h of each direction (N, D*H): from h_n where the layer's
        state holds h, else read from the outputs (L, N, D*H) at each sequence's end."""
        if self.h_in_state:
            return final_hidden(h_n, self.layers, self.directions)
        return final_outputs(out, lengths, self.directions)


class LanguageModel(nn.Module):
    """Tokens (L, N) -> next-token scores (L, N, V), carrying the state between calls (for
    truncated backpropagation through time)."""

    def __init__(self, vocab: int, cell: str = "lstm", embed: int = 200, hidden: int = 200,
                 layers: int = 2, dropout: float = 0.0, tie: bool = False, engine: str = "auto",
                 rnn_options: dict | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = make_rnn(cell, embed, hidden, layers, dropout, False, engine, rnn_options)
        self.drop = Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab)
        if tie:
            if embed != hidden:
                raise ValueError(f"tied weights need embed == hidden, got {embed} and {hidden}")
            self.decoder.weight = self.embed.weight

    def forward(self, tokens: Tensor, state=None, targets: Tensor | None = None):
        """Scores (L, N, V) and the final state; given targets (L, N), instead the mean
        cross-entropy (nats per token) of predicting them, with the decoder and the loss run as
        one step (lstmkit.losses)."""
        out, state = self.rnn(self.drop(self.embed(tokens)), state)
        h = self.drop(out)
        if targets is None:
            return self.decoder(h), state
        return linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.decoder.weight,
                                    self.decoder.bias, targets.reshape(-1)), state

    def loss(self, tokens: Tensor, targets: Tensor, state=None):
        """(mean cross-entropy of targets (L, N), final state)."""
        return self(tokens, state, targets)


class SequenceRegressor(nn.Module):
    """Inputs (L, N, F) -> one output vector per sequence (N, out) read from the last step
    (per_step=False), or one per step (L, N, out)."""

    def __init__(self, features: int, out: int, cell: str = "lstm", hidden: int = 64,
                 layers: int = 1, dropout: float = 0.0, per_step: bool = False,
                 engine: str = "auto", rnn_options: dict | None = None):
        super().__init__()
        self.per_step = per_step
        self.rnn = make_rnn(cell, features, hidden, layers, dropout, False, engine, rnn_options)
        self.out = nn.Linear(hidden, out)

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.rnn(x)                                            # (L, N, H)
        return self.out(h if self.per_step else h[-1])


class TokenSequenceModel(nn.Module):
    """Tokens (L, N) -> scores for a token at every step (L, N, V): the copy task's model."""

    def __init__(self, vocab: int, cell: str = "lstm", embed: int = 16, hidden: int = 128,
                 layers: int = 1, engine: str = "auto", rnn_options: dict | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = make_rnn(cell, embed, hidden, layers, 0.0, False, engine, rnn_options)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        h, _ = self.rnn(self.embed(tokens))
        return self.out(h)
