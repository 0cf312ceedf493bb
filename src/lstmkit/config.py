"""One configuration for every training run; each task starts from its own defaults.

The fields are grouped as the command line groups its options: data, model, optimisation,
bookkeeping. A run folder's ``config.json`` holds the whole configuration plus what the task
needs to rebuild its model (vocabulary, class names, scaling).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class Config:
    task: str
    # data
    data_dir: str | None = None        # else LSTMKIT_DATA, else the per-user cache
    path: str | None = None            # a text file (chars) or a CSV (forecast)
    value_column: str | None = None    # forecast: the CSV column to predict
    date_column: str | None = None
    horizon: int = 12                  # forecast: months held out for test (and for valid)
    window: int = 24                   # forecast: past values the model reads
    difference: int = 12               # forecast: model y_t vs y_{t-d} (0 = the values)
    length: int = 100                  # adding / copy: the time lag T
    train_size: int = 0                # names: use only this many training names (0 = all)
    # model
    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1
    embed: int = 64
    dropout: float = 0.0
    bidirectional: bool = False
    tie: bool = False                  # language models: decoder shares the embedding
    init_scale: float = 0.0            # > 0: every parameter ~ U(-s, s) (Zaremba et al.)
    init: str = "default"              # default | unit-forget | chrono | orthogonal
    engine: str = "auto"
    # optimisation
    optimizer: str = "adam"            # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip: float = 5.0                  # max gradient norm; 0 = no clipping
    epochs: int = 10
    batch_size: int = 32
    bptt: int = 35                     # language models: steps per truncated BPTT segment
    sum_over_steps: bool = False       # language models: backpropagate the loss summed over
                                       # the segment's steps (Zaremba et al.), not its mean
    steps_per_epoch: int = 100         # synthetic tasks: fresh batches per epoch
    lr_decay: float = 1.0              # multiply the learning rate by this each epoch ...
    decay_after: int = 0               # ... after this many epochs
    plateau: bool = False              # halve the learning rate when validation stalls
    patience: int = 0                  # stop after this many epochs without improvement; 0 off
    max_steps: int = 0                 # stop after this many optimiser steps; 0 = no limit
    time_limit: float = 0.0            # stop training after this many minutes; 0 = no limit
    bf16: bool = False                 # training forward passes under bfloat16 autocast
    max_nonfinite: int = 10            # stop after this many non-finite steps in a row
    # bookkeeping
    seed: int = 0
    checkpoint_every: int = 0          # also checkpoint every N steps within an epoch
    keep_denormals: bool = False       # else flush denormal numbers to zero while training
    threads: int = 0                   # torch threads; 0 = torch's default
    meta: dict = field(default_factory=dict)   # filled by the task: vocabulary, classes, ...

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> Config:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - names)
        if unknown or "task" not in obj:
            raise ValueError(f"config.json: unknown keys {unknown}" if unknown
                             else "config.json: no task")
        return cls(**obj)


# Options a resumed run may change; everything else is fixed by its config.json.
RESUMABLE = ("epochs", "max_steps", "time_limit", "checkpoint_every", "threads",
             "max_nonfinite")

TASK_DEFAULTS: dict[str, dict] = {
    # surname -> language: a bidirectional 2-layer LSTM over character embeddings
    "names": dict(cell="lstm", embed=64, hidden=256, layers=2, bidirectional=True,
                  dropout=0.3, lr=2e-3, epochs=25, batch_size=64, patience=6, clip=5.0),
    # Zaremba et al. 2014, small: 2x200 LSTM, no dropout, SGD lr 1 halved each epoch after 4
    "ptb": dict(cell="lstm", embed=200, hidden=200, layers=2, optimizer="sgd", lr=1.0,
                init_scale=0.1, clip=5.0, epochs=13, batch_size=20, bptt=20, lr_decay=0.5,
                decay_after=4, sum_over_steps=True),
    # character model of a text (Tiny Shakespeare by default)
    "chars": dict(cell="lstm", embed=64, hidden=512, layers=2, dropout=0.25, lr=2e-3,
                  epochs=20, batch_size=64, bptt=100, clip=1.0),
    "forecast": dict(cell="lstm", hidden=32, layers=1, lr=5e-3, epochs=300, batch_size=16,
                     window=24, horizon=12, clip=1.0, patience=60),
    "adding": dict(cell="lstm", hidden=128, lr=1e-3, epochs=30, batch_size=64,
                   steps_per_epoch=100, length=100, clip=1.0),
    # JSB Chorales, frame-level NLL; about 20k parameters as in Chung et al. 2014
    "jsb": dict(cell="lstm", hidden=36, lr=1e-3, epochs=100, batch_size=16, clip=1.0,
                patience=15),
    "copy": dict(cell="lstm", hidden=128, embed=16, lr=1e-3, epochs=30, batch_size=64,
                 steps_per_epoch=100, length=100, clip=1.0),
}


def defaults_for(task: str) -> Config:
    if task not in TASK_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_DEFAULTS)}")
    return Config(task=task, **TASK_DEFAULTS[task])
