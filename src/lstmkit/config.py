"""One configuration for every training run; each task starts from its own defaults.

The fields are grouped as the command line groups its options: data, model, optimisation,
bookkeeping. A run folder's ``config.json`` holds the whole configuration plus what the task
needs to rebuild its model (vocabulary, class names, scaling).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass, field

OPTIMIZERS = ("adam", "sgd")
INITS = ("default", "unit-forget", "chrono", "orthogonal", "unit-forget+orthogonal",
         "chrono+orthogonal")
INT_MAX = 2**31 - 1                 # sizes and counts end up as C ints in torch
MAX_THREADS = 1024
# integer fields that must be at least 1; the others at least 0 (all at most INT_MAX)
AT_LEAST_ONE = ("hidden", "layers", "heads", "embed", "epochs", "batch_size", "bptt",
                "steps_per_epoch", "length", "window", "horizon", "max_nonfinite")
# float fields that must be > 0 (the others must be >= 0); PROBABILITIES are in [0, 1)
POSITIVE_FLOATS = ("lr", "lr_decay")
PROBABILITIES = ("dropout", "weight_drop", "input_dropout", "recurrent_dropout")
# what a task needs in meta to rebuild its model without its training data
REBUILD_META = {"names": "languages", "ptb": "vocab", "chars": "vocab", "forecast": "transform"}
_MISSING = object()


def _show(value) -> str:
    """A value for an error message: its repr, cut short, and its JSON-ish type."""
    if value is _MISSING:
        return "nothing"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)
    return f"{text} ({kind})"


class ConfigError(ValueError):
    """A configuration value of the wrong type or out of range.

    ``field`` names it (``meta.transform.std`` for an entry of meta), ``expected`` says what it
    must be; the message is "<field> must be <expected>, got <value> (<type>)".
    """

    def __init__(self, field: str, expected: str, got=_MISSING):
        self.field, self.expected, self.value, self.got = field, expected, got, _show(got)
        super().__init__(f"{field} must be {expected}, got {self.got}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _matches(value, hint) -> bool:
    """value has the annotated type; an int is a float, a bool is not an int."""
    if isinstance(hint, types.UnionType):
        return any(_matches(value, h) for h in hint.__args__)
    if hint is type(None):
        return value is None
    if hint is float:
        return _is_number(value)
    if hint is int:
        return _is_int(value)
    return isinstance(value, hint)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "an object"}


def _type_name(hint) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join("null" if h is type(None) else _TYPE_NAMES[h] for h in hint.__args__)
    return _TYPE_NAMES[hint]


def _check_meta(task: str, meta: dict, rebuild: bool) -> None:
    """The entries of meta that rebuild a task's model (see REBUILD_META), when present or,
    with rebuild, always."""
    def nonempty_strings(key):
        value = meta[key]
        if not isinstance(value, list) or not value or \
                not all(isinstance(v, str) for v in value):
            raise ConfigError(f"meta.{key}", "a non-empty list of strings", value)

    needed = REBUILD_META.get(task)
    if rebuild and needed and needed not in meta:
        raise ConfigError(f"meta.{needed}", f"present (the {task} task rebuilds its model from "
                          "it; a run folder's config.json written by `lstmkit train` has it)")
    if task == "names" and "languages" in meta:
        nonempty_strings("languages")
    if task in ("ptb", "chars") and "vocab" in meta:
        nonempty_strings("vocab")
    if task == "forecast":
        if "transform" in meta:
            t = meta["transform"]
            keys = ["difference", "log", "mean", "std"]
            if not isinstance(t, dict) or set(t) != set(keys):
                raise ConfigError("meta.transform", f"an object with keys {', '.join(keys)}",
                                  t)
            if not isinstance(t["log"], bool):
                raise ConfigError("meta.transform.log", "true or false", t["log"])
            if not _is_int(t["difference"]) or not 0 <= t["difference"] <= INT_MAX:
                raise ConfigError("meta.transform.difference", f"an integer in 0..{INT_MAX}",
                                  t["difference"])
            if not _is_number(t["mean"]) or not math.isfinite(t["mean"]):
                raise ConfigError("meta.transform.mean", "a finite number", t["mean"])
            if not _is_number(t["std"]) or not (math.isfinite(t["std"]) and t["std"] > 0):
                raise ConfigError("meta.transform.std", "a finite number > 0", t["std"])
        r = meta.get("residual_std")
        if "residual_std" in meta and not (_is_number(r) and math.isfinite(r) and r >= 0):
            raise ConfigError("meta.residual_std", "a finite number >= 0", r)


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
    length: int = 100                  # adding / copy: the time lag T; parity: longest string
    train_size: int = 0                # names: use only this many training names (0 = all)
    split: str = "standard"            # names: standard | disjoint (no name in train and test)
    # model
    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1
    embed: int = 64
    dropout: float = 0.0
    class_weight: float = 0.0          # names: weight a language's loss by count^-p, p in [0, 1]
    weight_drop: float = 0.0           # DropConnect on each W_hh, one mask per call
    input_dropout: float = 0.0         # one mask per sequence on each layer's input
    recurrent_dropout: float = 0.0     # one mask per sequence on the h_{t-1} W_hh sees
    zoneout: float | list = 0.0        # z for every state, or [z_c, z_h]
    layer_norm: bool = False           # LayerNorm LSTM / GRU (Ba et al. 2016)
    heads: int = 1                     # head-wise recurrence (slstm, mlstm, xlstm)
    bidirectional: bool = False
    tie: bool = False                  # language models: decoder shares the embedding
    init_scale: float = 0.0            # > 0: every parameter ~ U(-s, s) (Zaremba et al.)
    init: str = "default"              # one of INITS ("a+b": both)
    engine: str = "auto"
    # optimisation
    optimizer: str = "adam"            # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    weight_noise: float = 0.0          # std of Gaussian noise on every weight at each step
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

    def rnn_options(self) -> dict:
        """The recurrent layer's regularisers (keywords of lstmkit.layers.make_layer)."""
        options = {"weight_drop": self.weight_drop, "input_dropout": self.input_dropout,
                   "recurrent_dropout": self.recurrent_dropout,
                   "zoneout": tuple(self.zoneout) if isinstance(self.zoneout, list)
                   else self.zoneout}
        if self.heads != 1:
            options["num_heads"] = self.heads
        return {**options, "layer_norm": True} if self.layer_norm else options

    def validate(self, rebuild: bool = False) -> None:
        """Raise ConfigError for the first field whose type does not match its annotation or
        whose value is out of range. With ``rebuild``, meta must also hold what the task needs
        to rebuild its model (a run folder's config.json)."""
        from .cells import registry
        from .layers.engines import ENGINES

        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _matches(value, hints[f.name]):
                raise ConfigError(f.name, _type_name(hints[f.name]), value)
        choices = {"task": tuple(TASK_DEFAULTS), "cell": registry.names(), "optimizer": OPTIMIZERS,
                   "init": INITS, "engine": ENGINES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"one of {', '.join(allowed)}", getattr(self, name))
        from .data.names import SPLITS
        if self.split not in SPLITS:
            raise ConfigError("split", f"one of {', '.join(SPLITS)}", self.split)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hints[f.name] is int:
                low = 1 if f.name in AT_LEAST_ONE else 0
                high = MAX_THREADS if f.name == "threads" else INT_MAX
                if not low <= value <= high:
                    raise ConfigError(f.name, f"at least {low}" if value < low
                                      else f"at most {high}", value)
            elif hints[f.name] is float:
                if f.name in PROBABILITIES:
                    ok, expected = 0 <= value < 1, "in [0, 1)"
                elif f.name in POSITIVE_FLOATS:
                    ok, expected = value > 0, "positive"
                else:
                    ok, expected = value >= 0, "at least 0"
                if not math.isfinite(value):
                    ok, expected = False, "a finite number"
                if f.name == "class_weight" and not value <= 1:
                    ok, expected = False, "in [0, 1]"
                if not ok:
                    raise ConfigError(f.name, expected, value)
        self._check_zoneout(registry)
        self._check_heads(registry)
        _check_meta(self.task, self.meta, rebuild)

    def _check_heads(self, registry) -> None:
        entry = registry.get(self.cell)
        takes = inspect.signature(entry.sequence_layer or entry.math).parameters
        if self.heads != 1 and "num_heads" not in takes:
            raise ConfigError("heads", f"1 for cell {self.cell!r} (heads are for "
                              f"{', '.join(n for n in registry.names() if _has_heads(n))})",
                              self.heads)
        if self.hidden % self.heads:
            raise ConfigError("heads", f"a divisor of --hidden {self.hidden}", self.heads)

    def _check_zoneout(self, registry) -> None:
        z = self.zoneout
        pair = isinstance(z, list)
        if pair and not (len(z) == 2 and all(_is_number(v) for v in z)):
            raise ConfigError("zoneout", "a number or a pair [z_c, z_h]", z)
        if not all(math.isfinite(v) and 0 <= v < 1 for v in (z if pair else [z])):
            raise ConfigError("zoneout", "in [0, 1)" + (" (each of z_c, z_h)" if pair else ""), z)
        if pair and tuple(registry.get(self.cell).state_names) != ("h", "c"):
            raise ConfigError("zoneout", f"one number for cell {self.cell!r} (it has no cell "
                              "state: zoneout is z_h)", z)

    @classmethod
    def from_json(cls, obj) -> Config:
        """The Config of a run folder's config.json (parsed), validated with ``rebuild``.

        Raises ValueError (ConfigError for a bad value) naming the field, what it must be and
        what it is.
        """
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object of configuration fields, got "
                             f"{_show(obj)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - names)
        if unknown:
            shown = ", ".join(_show(k).removesuffix(" (string)") for k in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise ValueError(f"unknown fields {shown}{more}; expected only the fields "
                             "lstmkit writes")
        if "task" not in obj:
            raise ConfigError("task", f"present, one of {', '.join(TASK_DEFAULTS)}")
        cfg = cls(**obj)
        cfg.validate(rebuild=True)
        return cfg


# Options a resumed run may change; everything else is fixed by its config.json.
RESUMABLE = ("epochs", "max_steps", "time_limit", "checkpoint_every", "threads",
             "max_nonfinite")

TASK_DEFAULTS: dict[str, dict] = {
    # surname -> language: a bidirectional 2-layer LSTM over character embeddings; the loss
    # weighted by count^-0.5 per language, DropConnect and input dropout, lr decay: test
    # macro-averaged accuracy 0.55 against 0.51 unweighted, accuracy 0.83 against 0.84
    # (RESULTS.md)
    "names": dict(cell="lstm", embed=64, hidden=256, layers=2, bidirectional=True,
                  dropout=0.3, lr=2e-3, epochs=25, batch_size=64, patience=6, clip=5.0,
                  class_weight=0.5, weight_drop=0.3, input_dropout=0.2, lr_decay=0.8,
                  decay_after=4),
    # Zaremba et al. 2014, small: 2x200 LSTM, no dropout, SGD lr 1 halved each epoch after 4
    "ptb": dict(cell="lstm", embed=200, hidden=200, layers=2, optimizer="sgd", lr=1.0,
                init_scale=0.1, clip=5.0, epochs=13, batch_size=20, bptt=20, lr_decay=0.5,
                decay_after=4, sum_over_steps=True),
    # character model of a text (Tiny Shakespeare by default); unrolled 50 steps (the state
    # carries over): twice the updates of 100 for the same characters, which in 10 minutes
    # reached 1.43 nats/char against 1.48; LayerNorm LSTM: in 10 minutes validation 1.337 and
    # test 1.477 against 1.357 and 1.515 without it (RESULTS.md)
    "chars": dict(cell="lstm", embed=64, hidden=512, layers=2, dropout=0.2, lr=2e-3,
                  epochs=20, batch_size=64, bptt=50, clip=1.0, lr_decay=0.75, decay_after=3,
                  layer_norm=True),
    "forecast": dict(cell="lstm", hidden=32, layers=1, lr=5e-3, epochs=300, batch_size=16,
                     window=24, horizon=12, clip=1.0, patience=60),
    "adding": dict(cell="lstm", hidden=128, lr=1e-3, epochs=30, batch_size=64,
                   steps_per_epoch=100, length=100, clip=1.0),
    # JSB Chorales, frame-level NLL; about 20k parameters as in Chung et al. 2014
    "jsb": dict(cell="lstm", hidden=36, lr=1e-3, epochs=100, batch_size=16, clip=1.0,
                patience=15),
    "copy": dict(cell="lstm", hidden=128, embed=16, lr=1e-3, epochs=30, batch_size=64,
                 steps_per_epoch=100, length=100, clip=1.0),
    # Deletang et al. 2023's parity: lengths 1..40 to train, 41..240 to test generalisation
    "parity": dict(cell="lstm", hidden=128, embed=8, lr=3e-3, epochs=10, batch_size=64,
                   steps_per_epoch=100, length=40, clip=1.0),
}


def _has_heads(cell: str) -> bool:
    from .cells import registry

    entry = registry.get(cell)
    return "num_heads" in inspect.signature(entry.sequence_layer or entry.math).parameters


# the layer keywords a task's defaults may set, at the value that turns each off
LAYER_REGULARISERS = {"weight_drop": 0.0, "input_dropout": 0.0, "recurrent_dropout": 0.0,
                      "zoneout": 0.0, "layer_norm": False}


def defaults_for(task: str, cell: str | None = None) -> Config:
    """The task's defaults; with ``cell``, for that cell: a whole-sequence cell's layer (mLSTM,
    minGRU, minLSTM) has no recurrent weights to drop or states to zone out, so the task's
    default regularisers its layer does not take are off, as is a default ``layer_norm`` for
    a cell with no LayerNorm form (asked for by name, they are refused when the layer is
    made)."""
    if task not in TASK_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_DEFAULTS)}")
    from .cells import registry

    cfg = Config(task=task, **TASK_DEFAULTS[task])
    if cell is None or cell not in registry.names():
        return dataclasses.replace(cfg, cell=cell) if cell else cfg
    entry = registry.get(cell)
    layer = entry.sequence_layer
    takes = inspect.signature(layer).parameters if layer is not None else LAYER_REGULARISERS
    off = {k: v for k, v in LAYER_REGULARISERS.items() if k not in takes}
    if layer is None and not entry.takes_layer_norm:
        off["layer_norm"] = False           # LayerNorm forms exist for lstm and gru only
    return dataclasses.replace(cfg, cell=cell, **off)
