"""The ``lstmkit`` command: parses arguments and calls the library; no logic of its own.

Every failure the user can fix (a missing file, a bad option, a malformed run folder) ends in
one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from .cells import registry
from .config import RESUMABLE, Config, defaults_for

TASKS = ("names", "ptb", "chars", "forecast", "adding", "copy", "jsb", "parity")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (unless the text already gives it); choices
    show in the option's metavar, {a,b,...}. A description or epilog with line breaks is kept
    as written (train's table of task defaults); others are wrapped."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action):
        text = action.help or ""
        if states_default(text) or not action.option_strings or action.required or \
                action.default is argparse.SUPPRESS:
            return text
        text = text and text + " "
        if action.default is None:
            return f"{text}(default: none)"
        if action.default is False and action.nargs == 0:
            return f"{text}(default: off)"
        return f"{text}(default: %(default)s)"


def states_default(text: str) -> bool:
    return "(default" in text or "default:" in text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (and exit code 2), and defaults in every option's help."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def fail(message: str) -> None:
    # one line even when a path or a value from a hostile file holds line breaks
    message = " ".join(part.strip() for part in message.splitlines())
    sys.stderr.write(f"lstmkit: error: {message}\n")
    raise SystemExit(2)


# Training options: (flag, Config field, type, help, group). Defaults come from the task.
TRAIN_OPTIONS = [
    ("--data-dir", "data_dir", str, "folder holding the data sets (else $LSTMKIT_DATA, else "
     "the per-user cache)", "data"),
    ("--path", "path", str, "chars: a UTF-8 text file; forecast: a CSV file; ptb: a folder "
     "with ptb.train.txt, ptb.valid.txt, ptb.test.txt", "data"),
    ("--value-column", "value_column", str, "forecast: the CSV column to model (name or index; "
     "default: the last)", "data"),
    ("--date-column", "date_column", str, "forecast: the CSV column of dates (optional)", "data"),
    ("--horizon", "horizon", int, "forecast: points held out for test, and as many for "
     "validation", "data"),
    ("--window", "window", int, "forecast: past values the model reads", "data"),
    ("--difference", "difference", int, "forecast: model the change over this many steps "
     "(12: over a year of months; 0: the values themselves)", "data"),
    ("--length", "length", int, "adding/copy: the time lag T; parity: the longest training "
     "string L (tested also on L+1..6L)", "data"),
    ("--train-size", "train_size", int, "names: train on only this many names (0 = all)",
     "data"),
    ("--split", "split", str, "names: standard (each language's names shuffled, 10%% to test) "
     "or disjoint (no surname in both train and test, nor in both train and validation)",
     "data"),
    ("--cell", "cell", str, "recurrent cell: {cells}", "model"),
    ("--hidden", "hidden", int, "hidden units per layer", "model"),
    ("--layers", "layers", int, "stacked recurrent layers", "model"),
    ("--embed", "embed", int, "embedding size (names, ptb, chars, copy, parity)", "model"),
    ("--dropout", "dropout", float, "dropout between layers and before the output", "model"),
    ("--class-weight", "class_weight", float, "names: weight each language's loss by "
     "n^-P (n its training names), scaled so that a training name weighs 1 on average: 0 "
     "unweighted, 1 inverse frequency, 0.5 its square root", "optimisation"),
    ("--weight-drop", "weight_drop", float, "DropConnect on the recurrent weights W_hh, one "
     "mask per batch (Merity et al. 2017)", "model"),
    ("--input-dropout", "input_dropout", float, "dropout on each recurrent layer's input, one "
     "mask per sequence for every step (Gal and Ghahramani 2016)", "model"),
    ("--recurrent-dropout", "recurrent_dropout", float, "dropout on the h_{t-1} the recurrent "
     "products see, one mask per sequence for every step (Gal and Ghahramani 2016)", "model"),
    ("--zoneout", "zoneout", "zoneout", "each unit of h_t and c_t keeps its previous value with "
     "this probability (Krueger et al. 2017): Z, or ZC,ZH for a cell with a cell state",
     "model"),
    ("--layer-norm", "layer_norm", "flag", "LayerNorm LSTM or GRU (Ba et al. 2016; cells lstm "
     "and gru)", "model"),
    ("--heads", "heads", int, "heads of the head-wise recurrence (cells slstm, mlstm, xlstm); "
     "must divide --hidden", "model"),
    ("--bidirectional", "bidirectional", "flag", "names: read each name both ways", "model"),
    ("--tie", "tie", "flag", "language models: the decoder shares the embedding", "model"),
    ("--init-scale", "init_scale", float, "> 0: every parameter ~ U(-s, s)", "model"),
    ("--init", "init", str, "default, unit-forget, chrono, orthogonal, unit-forget+orthogonal "
     "or chrono+orthogonal", "model"),
    ("--engine", "engine", str, "auto, compiled, python or torch (see the README)", "model"),
    ("--optimizer", "optimizer", str, "adam or sgd", "optimisation"),
    ("--lr", "lr", float, "learning rate", "optimisation"),
    ("--momentum", "momentum", float, "sgd momentum", "optimisation"),
    ("--weight-decay", "weight_decay", float, "L2 penalty", "optimisation"),
    ("--weight-noise", "weight_noise", float, "standard deviation of Gaussian noise added to "
     "every weight for each training step (the gradient is taken at the noisy weights and "
     "applied to the clean ones; Graves 2011, as Chung et al. 2014 trained on music)",
     "optimisation"),
    ("--clip", "clip", float, "clip the gradient norm to this (0 = off)", "optimisation"),
    ("--epochs", "epochs", int, "passes over the training data", "optimisation"),
    ("--batch-size", "batch_size", int, "sequences per batch", "optimisation"),
    ("--bptt", "bptt", int, "language models: steps per truncated-BPTT segment",
     "optimisation"),
    ("--sum-over-steps", "sum_over_steps", "flag", "language models: backpropagate the loss "
     "summed over the segment's steps (Zaremba et al.; ptb's default)", "optimisation"),
    ("--steps-per-epoch", "steps_per_epoch", int, "adding/copy/parity: fresh batches per epoch",
     "optimisation"),
    ("--lr-decay", "lr_decay", float, "multiply the learning rate by this each epoch ...",
     "optimisation"),
    ("--decay-after", "decay_after", int, "... after this many epochs", "optimisation"),
    ("--plateau", "plateau", "flag", "halve the learning rate when validation stalls",
     "optimisation"),
    ("--patience", "patience", int, "stop after this many epochs without improvement (0 = off)",
     "optimisation"),
    ("--max-steps", "max_steps", int, "stop after this many steps (0 = no limit)",
     "optimisation"),
    ("--time-limit", "time_limit", float, "stop training after this many minutes (0 = none)",
     "optimisation"),
    ("--bf16", "bf16", "flag", "run the training forward passes under torch.autocast('cpu', "
     "bfloat16): matrix products in bfloat16, weights, optimiser and loss in float32, "
     "evaluation in float32", "optimisation"),
    ("--max-nonfinite", "max_nonfinite", int, "a step with a non-finite loss or gradient is "
     "skipped and counted; stop after this many in a row", "optimisation"),
    ("--seed", "seed", int, "seed for weights, data order and dropout", "bookkeeping"),
    ("--checkpoint-every", "checkpoint_every", int, "also checkpoint every N steps",
     "bookkeeping"),
    ("--keep-denormals", "keep_denormals", "flag", "do not flush denormal numbers to zero "
     "while training (slower; see BENCHMARKS.md)", "bookkeeping"),
    ("--threads", "threads", int, "torch threads (0 = torch's default)", "bookkeeping"),
]


def task_default_text(dest: str) -> str:
    """The default of a training option: "(default: 5.0)", or the most common value and the
    tasks that differ, "(default: 128; names 256, ptb 200)"."""
    from collections import Counter

    def show(value):
        return {True: "on", False: "off", None: "none"}.get(value, value) \
            if isinstance(value, bool) or value is None else str(value)

    values = {task: show(getattr(defaults_for(task), dest)) for task in TASKS}
    common = Counter(values.values()).most_common(1)[0][0]
    others = ", ".join(f"{task} {v}" for task, v in values.items() if v != common)
    return f"(default: {common}" + (f"; {others})" if others else ")")


def add_train_parser(sub) -> None:
    from .config import TASK_DEFAULTS

    epilog = "task defaults (options left out take these, else the listed default):\n" + \
        "\n".join(f"  {task}: " + ", ".join(f"{k}={v}" for k, v in d.items())
                  for task, d in TASK_DEFAULTS.items())
    p = sub.add_parser("train", help="train a model on a task", epilog=epilog, description=(
                           "Train a model on a task into a run folder (config.json, "
                           "metrics.jsonl, model.safetensors, checkpoint/, plots)."))
    p.add_argument("task", choices=TASKS, help="what to train")
    p.add_argument("--out", required=True, help="the run folder to create (or --resume)")
    p.add_argument("--resume", action="store_true",
                   help=f"continue the run in --out from its last checkpoint (may change only "
                   f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE)})")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel training in N processes on this machine (runs torchrun "
                   "--standalone --nproc_per_node=N -m lstmkit train ...); each takes "
                   "1/N of every batch")
    groups = {}
    for flag, dest, kind, text, group in TRAIN_OPTIONS:
        g = groups.setdefault(group, p.add_argument_group(group))
        if not states_default(text):                 # None below: "not given on the line"
            text = f"{text} {task_default_text(dest)}"
        if kind == "flag":
            g.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                           help=text)
        elif kind == "zoneout":
            g.add_argument(flag, dest=dest, type=zoneout_arg, default=None, metavar="Z[,ZH]",
                           help=text)
        else:
            g.add_argument(flag, dest=dest, type=kind, default=None,
                           help=text.replace("{cells}", ", ".join(registry.names())))


def zoneout_arg(text: str) -> float | list[float]:
    """--zoneout: "Z" (every state) or "ZC,ZH" (cell and hidden state)."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or len(values) != len(parts):
        raise argparse.ArgumentTypeError(f"expected Z or ZC,ZH (numbers in [0, 1)), got {text!r}")
    return values[0] if len(values) == 1 else values


def launch_distributed(nproc: int, argv: list[str]) -> None:
    """Run this same train command under torchrun in nproc processes; exit with its code."""
    import signal
    import subprocess

    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "lstmkit", *rest]
    child = subprocess.Popen(cmd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # Ctrl-C reaches the workers directly
    raise SystemExit(child.wait())


def train_command(args) -> None:
    from .runio import read_json
    from .train import train

    if args.nproc < 1:
        fail(f"--nproc must be at least 1, got {args.nproc}")
    given = {dest: getattr(args, dest) for _, dest, *_ in TRAIN_OPTIONS
             if getattr(args, dest) is not None}
    if args.resume and not (Path(args.out) / "config.json").exists():
        fail(f"--resume: {args.out} " + ("holds no run (no config.json)" if Path(args.out).exists()
             else "does not exist") + "; to start a new run there, leave out --resume")
    if args.resume:
        path = Path(args.out) / "config.json"
        obj = read_json(path)                    # its errors name the file
        try:
            cfg = Config.from_json(obj)
        except ValueError as e:
            fail(f"{path}: {e}")
        if cfg.task != args.task:
            fail(f"{args.out} holds a {cfg.task!r} run, not {args.task!r}")
        fixed = sorted(k for k, v in given.items() if k not in RESUMABLE and getattr(cfg, k) != v)
        if fixed:
            fail(f"a resumed run keeps its configuration; cannot change "
                 f"{', '.join('--' + k.replace('_', '-') for k in fixed)}")
        check_checkpoint(cfg, Path(args.out))
    else:
        cfg = defaults_for(args.task, given.get("cell"))
    cfg = dataclasses.replace(cfg, **given)
    check_config(cfg)
    if "WORLD_SIZE" not in os.environ:          # once, before any worker starts
        get_data(cfg)
        if args.nproc > 1:
            launch_distributed(args.nproc, args.argv)
    train(cfg, args.out, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":           # RUN/report.html, as `lstmkit report`
        try:
            report_command(argparse.Namespace(run=args.out, out=None, input=None))
        except (ValueError, OSError) as e:          # the run itself is complete: warn only
            sys.stderr.write(f"lstmkit: warning: the report was not written: {e}\n")


def get_data(cfg: Config) -> None:
    """The task's data set, downloaded first when it is in none of the places looked in (and
    no --data-dir was named), as scripts/demo.sh does."""
    from .data import obtain
    from .tasks import TASKS

    name = TASKS[cfg.task].dataset
    if name and not cfg.path:
        obtain(name, cfg.data_dir, log=lambda m: sys.stderr.write(f"lstmkit: {m}\n"))


def check_config(cfg: Config) -> None:
    """One line naming the option (or config field) whose type or value is wrong."""
    from .config import ConfigError

    flags = {dest: flag for flag, dest, *_ in TRAIN_OPTIONS}
    try:
        cfg.validate()
    except ConfigError as e:
        name = flags.get(e.field, f"config field {e.field}")
        shown = repr(e.value) if len(repr(e.value)) <= 60 else repr(e.value)[:57] + "..."
        fail(f"{name} must be {e.expected}, got {shown}")


def build_skeleton(task):
    """The task's model on the meta device: its shapes and dtypes without memory, so that a
    damaged config.json asking for a huge model is caught before anything is allocated."""
    import torch

    with torch.device("meta"):
        return task.build_model()


def check_checkpoint(cfg: Config, out: Path) -> None:
    """Before resuming: the newest checkpoint (if any) must be readable and fit cfg's model,
    else one line (so that a damaged folder fails before training data and model are built)."""
    from .runio import check_optimizer_files, check_state, load_intact_checkpoint
    from .tasks import make_task
    from .train import make_optimizer

    if not (out / "checkpoint" / "latest.json").exists():
        return                                  # killed before the first one: starts afresh
    tensors, meta, _ = load_intact_checkpoint(out)   # the trainer says if it passed one over
    try:
        skeleton = build_skeleton(make_task(cfg, for_training=False))
    except (KeyError, TypeError, IndexError, ValueError, RuntimeError) as e:
        fail(f"{out / 'config.json'}: cannot rebuild the model from it "
             f"({type(e).__name__}: {e})")
    check_state(skeleton.state_dict(),
                {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
                out / "checkpoint")
    check_optimizer_files(make_optimizer(skeleton, cfg), tensors, meta["optimizer"],
                          f"the optimizer state in {out / 'checkpoint'}")
    carry = [tensors[k] for k in sorted(tensors) if k.startswith("carry.")]
    shapes = getattr(skeleton.rnn, "state_shapes", None)
    expected = ([tuple(s) for s in shapes(cfg.batch_size)] if shapes else
                [(cfg.layers, cfg.batch_size, cfg.hidden)] * len(
                    registry.get(cfg.cell).state_names))
    if carry and (cfg.task not in ("ptb", "chars")
                  or [tuple(t.shape) for t in carry] != expected):
        fail(f"{out / 'checkpoint'}: the carried state is {len(carry)} tensor(s) of shape "
             f"{tuple(carry[0].shape)}, expected {len(expected)} of shape "
             f"{' / '.join(map(str, dict.fromkeys(expected)))} for this run")


# ---------------------------------------------------------------------- using a run
def load_run(run_dir: str, for_training: bool = False):
    """(cfg, task, model) of a run folder, the model holding its best weights."""
    from .runio import check_state, load_state_into, read_json, read_tensors
    from .tasks import make_task

    folder = Path(run_dir)
    if not folder.is_dir():
        fail(f"{run_dir} is not a folder; give the --out folder of a `lstmkit train` run")
    obj = read_json(folder / "config.json")     # its errors name the file
    try:
        cfg = Config.from_json(obj)
    except ValueError as e:
        fail(f"{folder / 'config.json'}: {e}")
    weights = folder / "model.safetensors"
    if not weights.exists() and not weights.is_symlink():
        fail(f"{weights} does not exist: {run_dir} holds no trained model yet (training "
             f"stopped before its first validation); continue it with `lstmkit train "
             f"{cfg.task} --out {run_dir} --resume`")
    tensors = read_tensors(weights)             # never unpickled: safetensors only
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:                                     # damaged, or diverged: sampling would crash
        fail(f"{weights} holds NaN or infinite values (in {', '.join(bad[:3])[:200]}); the "
             "file is damaged")
    if for_training:                            # reads the training data named by config.json
        task = make_task(cfg, for_training=True)
    try:
        if not for_training:
            task = make_task(cfg, for_training=False)
        skeleton = build_skeleton(task)
    except (KeyError, TypeError, IndexError, ValueError, RuntimeError) as e:
        fail(f"{folder / 'config.json'}: cannot rebuild the model from it "
             f"({type(e).__name__}: {e})")
    # shapes first: a model bigger than its file is never allocated
    check_state(skeleton.state_dict(), tensors, weights)
    model = task.build_model()
    load_state_into(model, tensors, weights)
    model.eval()
    return cfg, task, model


def evaluate_command(args) -> None:
    cfg, task, model = load_run(args.run, for_training=True)
    for split in ("valid", "test"):
        print(f"{split}: {task.describe(task.evaluate(model, split))}")


def predict_command(args) -> None:
    import json

    from .data.errors import shorten
    from .tasks.classify import read_name

    if args.top < 1:
        fail(f"--top must be at least 1, got {args.top}")
    names = names_to_predict(args)
    cfg, task, model = load_run(args.run)
    if cfg.task != "names":
        fail(f"predict is for names runs; {args.run} is a {cfg.task!r} run")
    readings = [read_name(name) for name in names]
    readable = [r for r in readings if not r.error]
    ranked = iter(task.predict(model, [r.read_as for r in readable], args.top) if readable
                  else [])
    for i, r in enumerate(readings, 1):
        if r.error:                             # reported, and the others still classified
            sys.stderr.write(f"lstmkit: error: name {i} {shorten(r.name)}: {r.error}; "
                             "skipped\n")
            if args.json:
                print(json.dumps({"name": r.name[:200], "error": r.error}, ensure_ascii=False))
            continue
        top = next(ranked)
        if args.json:
            print(json.dumps({"name": r.name, "read_as": r.read_as, "left_out": r.left_out,
                              "languages": [{"language": lang, "probability": round(p, 6)}
                                            for lang, p in top]}, ensure_ascii=False))
            continue
        note = "; ".join(([f"read as {r.read_as}"] if r.read_as != r.name else []) +
                         ([f"left out {''.join(r.left_out)}"] if r.left_out else []))
        print(f"{r.name}{f' ({note})' if note else ''}: "
              + ", ".join(f"{lang} {p:.3f}" for lang, p in top))
    if len(readable) < len(readings):
        raise SystemExit(2)


def names_to_predict(args) -> list[str]:
    """The names on the command line, "-" standing for those on stdin, and those in --file
    (one per line; "-": stdin); blank lines are skipped."""
    from .data.files import read_utf8

    def lines(source: str) -> list[str]:
        text = sys.stdin.read() if source == "-" else read_utf8(source, "names file")
        return [line.strip() for line in text.splitlines() if line.strip()]

    names = [n for name in args.names for n in (lines("-") if name == "-" else [name])]
    names += lines(args.file) if args.file else []
    if not names:
        fail("no names to classify: give them as arguments, in --file FILE, or on stdin "
             "with -")
    return names


def sample_command(args) -> None:
    cfg, task, model = load_run(args.run)
    if cfg.task not in ("ptb", "chars"):
        fail(f"sample is for ptb and chars runs; {args.run} is a {cfg.task!r} run")
    if args.length < 1:
        fail(f"--length must be at least 1, got {args.length}")
    print(task.sample(model, args.prime, args.length, args.temperature, args.seed))


def forecast_command(args) -> None:
    from . import plots
    from .data import load_series
    from .runio import atomic_write_bytes
    from .tasks.forecast import calendar, check_range, date_axis

    cfg, task, model = load_run(args.run)
    if cfg.task != "forecast":
        fail(f"forecast is for forecast runs; {args.run} is a {cfg.task!r} run")
    if args.horizon < 1:
        fail(f"--horizon must be at least 1, got {args.horizon}")
    if "residual_std" not in cfg.meta:            # written when training finishes
        fail(f"{args.run} holds an unfinished forecast run (config.json has no "
             f"meta.residual_std for the interval); finish it with `lstmkit train forecast "
             f"--out {args.run} --resume`")
    path = args.csv or cfg.path
    own = path == cfg.path                        # the run's own file: its columns
    series = load_series(path, args.value_column or (cfg.value_column if own else None),
                         args.date_column or (cfg.date_column if own else None), cfg.data_dir,
                         test_size=0, valid_size=0, find_dates=True)
    check_range(series.values, path)
    dates, frequency = calendar(series)
    pred = task.forecast(model, series.values, args.horizon)
    low, high = task.interval(model, series.values, args.horizon)
    x = date_axis(dates, frequency, len(series.values) + args.horizon)
    ahead = [d.strftime(frequency.format) for d in x[len(series.values):]] if x else None
    if dates is not None:
        print(f"dates: {series.date_name!r}, " + (
            f"{frequency.name}, the last {dates[-1].strftime(frequency.format)}" if frequency
            else "irregular: the forecast is given in steps"))
    rows = ["step,date,forecast,low_95,high_95"]
    for k, (v, lo, hi) in enumerate(zip(pred.tolist(), low.tolist(), high.tolist()), 1):
        when = ahead[k - 1] if ahead else ""
        print(f"+{k}{' ' + when if when else ''}: {v:.2f}  (approx. 95% interval {lo:.2f} .. "
              f"{hi:.2f})")
        rows.append(f"{k},{when},{v!r},{lo!r},{hi!r}")
    out = Path(args.out or Path(args.run) / "forecast-ahead.png")
    table = out.with_suffix(".csv")
    atomic_write_bytes(table, ("\n".join(rows) + "\n").encode())
    values = series.values.float()
    plots.forecast(values, len(values), pred, low, high, out,
                   title=f"{series.name}: next {args.horizon}", x=x, ylabel=series.name)
    print(f"plot: {out}\ntable: {table}")


def export_command(args) -> None:
    from .export.runs import export_task_model

    out = Path(args.out) if args.out else Path(args.run) / "model.onnx"
    cfg, task, model = load_run(args.run, for_training=args.int8)   # int8: scored on its data
    meta = export_task_model(cfg, task, model, out, streaming=args.streaming, int8=args.int8)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {meta['precision']}) and "
          f"{out.with_suffix('.json')}; onnxruntime matches the run's model to "
          f"{meta['max_abs_diff_vs_torch']:.1e}")
    if args.int8:
        ev, size = meta["evaluation"], meta["size_bytes"]
        print(f"{ev['split']} data: float32 {task.describe(ev['float32'])}")
        print(f"{ev['split']} data: int8    {task.describe(ev['int8'])}")
        print(f"size: float32 {size['float32'] / 1e6:.2f} MB, int8 {size['int8'] / 1e6:.2f} MB")
        if "int8_note" in meta:
            print(f"note: {meta['int8_note']}")


def report_command(args) -> None:
    from .report import write_report

    cfg, task, model = load_run(args.run, for_training=True)     # reads the run's data
    out = write_report(args.run, cfg, task, model, out=args.out, text=args.input)
    print(f"report: {out} ({out.stat().st_size / 1e6:.2f} MB)")


def explain_command(args) -> None:
    from .analysis import worked_unit

    print(worked_unit.explain())
    if args.train:
        r = worked_unit.train_unit(seed=args.seed)
        print(f"\nTrained from random weights (seed {args.seed}, {r['steps']} Adam steps): "
              f"company A -> {r['predictions']['A']:.3f}, company B -> "
              f"{r['predictions']['B']:.3f}, loss {r['loss']:.2e}. Weights found "
              "(short-term weight, input weight, bias):")
        for gate, w in r["weights"].items():
            print(f"  {gate}: " + ", ".join(f"{k} {v:.2f}" for k, v in w.items()))


def gradflow_command(args) -> None:
    from .analysis.gradflow import (
        compare_cells,
        exploding_demo,
        format_table,
        gradflow_cells,
        trained_cells,
    )
    from .runio import atomic_write_bytes

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    if "xlstm" in cells:
        fail("--cells: xlstm is a stack of mLSTM and sLSTM layers; compare its layers, mlstm "
             "and slstm")
    unknown = [c for c in cells if c not in gradflow_cells()]
    if unknown:
        fail(f"--cells: unknown {', '.join(unknown)}; expected some of "
             f"{', '.join(gradflow_cells())}")
    if args.length < 2:
        fail(f"--length must be at least 2, got {args.length}")
    if args.train_steps < 0:
        fail(f"--train-steps must be 0 or more, got {args.train_steps}")
    result = compare_cells(cells, length=args.length, hidden=args.hidden, seed=args.seed)
    table = format_table(result)
    boom = exploding_demo(hidden=args.hidden, length=args.length, seed=args.seed)
    lines = [f"Gradient flow in freshly initialised cells (T = {args.length}, hidden "
             f"{args.hidden}, loss = sum of h_T), mean over a batch, k steps back:", "", table,
             "", f"Exploding case: tanh RNN with W_hh = 3 x orthogonal: |dL/dh| grows "
             f"{boom['rate']:.2f}x per step back; the gradient norm {boom['total_norm']:.3g} "
             f"becomes {boom['clipped_norm']:.3g} after clip_grad_norm_(max_norm="
             f"{boom['max_norm']:g}), direction kept (cosine {boom['cosine']:.4f})."]
    trained = None
    if args.train_steps:
        trained = trained_cells(cells, length=args.length, hidden=args.hidden,
                                steps=args.train_steps, seed=args.seed)
        mse = ", ".join(f"{name} {v:.4f}" for name, v in trained["mse"].items())
        lines += ["", f"The same cells after {args.train_steps} Adam steps on the adding problem "
                  f"at T = {args.length} (loss = the task's MSE; test MSE: {mse}; predicting 1 "
                  "scores 0.167):", "", format_table(trained)]
    print("\n".join(lines))
    if args.out:
        from . import plots

        out = Path(args.out)
        series = {f"{name} {key}": curve for name, curves in result["cells"].items()
                  for key, curve in curves.items() if key != "jacobian"}
        series["rnn, W_hh = 3 x orthogonal"] = boom["grad_h"]
        plots.curves(series, out / "gradflow.png", "steps back k", "mean gradient norm",
                     f"dL/dh, dL/dc (mLSTM: dL/dC) at T-k; fresh cells, T = {args.length}",
                     log_y=True)
        written = [out / "gradflow.png"]
        if trained:
            series = {f"{name} {key}": curve for name, curves in trained["cells"].items()
                      for key, curve in curves.items() if key != "jacobian"}
            plots.curves(series, out / "gradflow-trained.png", "steps back k",
                         "mean gradient norm", "dL/dh, dL/dc (mLSTM: dL/dC) at T-k; trained "
                         f"on adding, T = {args.length}", log_y=True)
            written.append(out / "gradflow-trained.png")
        atomic_write_bytes(out / "gradflow.md", ("\n".join(lines) + "\n").encode())
        written.append(out / "gradflow.md")
        print(f"\nwrote {', '.join(map(str, written))}")


def experiment_command(args) -> None:
    from .experiments import lags

    cells = tuple(c.strip() for c in args.cells.split(","))
    unknown = [c for c in cells if c not in registry.names()]
    if unknown:
        fail(f"--cells: unknown {unknown}; expected some of {', '.join(registry.names())}")
    lengths = tuple(int(v) for v in args.lengths.split(","))
    print(lags(args.out, args.task, cells, lengths, args.steps, args.hidden, args.init,
               args.seed, args.engine, args.threads))


def demo_command(args) -> None:
    from .demo import run_demo

    run_demo(args.out, args.data_dir, quick=args.quick)


def data_command(args) -> None:
    from .data import DATASETS, data_dir, fetch, require

    if args.action == "fetch":
        for name in args.names or sorted(DATASETS):
            print(f"{name}: {fetch(name, args.data_dir)}")
        return
    print(f"data folder: {data_dir(args.data_dir)}")
    for name in sorted(DATASETS):
        try:
            status = f"present in {require(name, args.data_dir)}"
        except ValueError:
            status = f"missing (lstmkit data fetch {name})"
        print(f"  {name}: {status}")


# ---------------------------------------------------------------------- entry point
def torch_version() -> str:
    import torch

    return torch.__version__


def build_parser() -> Parser:
    from . import __version__
    from .tasks.classify import MAX_NAME_CHARS

    parser = Parser(prog="lstmkit", description=(
        "LSTMs and their family with hand-written BPTT: train, evaluate and use models."))
    parser.add_argument("--version", action="version",
                        version=f"lstmkit {__version__} (torch {torch_version()}, Python "
                        f"{sys.version.split()[0]})")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_train_parser(sub)

    p = sub.add_parser("evaluate", help="validation and test metrics of a run")
    p.add_argument("run", help="a run folder")
    p.set_defaults(func=evaluate_command)

    p = sub.add_parser("predict", help="languages of surnames (a names run)", description=(
        "Classify surnames. Any script is accepted: Cyrillic, Greek and Arabic letters are "
        "transliterated, accents dropped; characters with no transliteration (Chinese, "
        "Japanese, Korean script, digits) are left out and named. A name that cannot be read "
        f"(none of its letters readable, or over {MAX_NAME_CHARS} characters) is reported on "
        "stderr and skipped; the others are still classified, and the exit code is then 2."))
    p.add_argument("run", help="a names run folder")
    p.add_argument("names", nargs="*", help="surnames to classify; - reads them from stdin, "
                   "one per line")
    p.add_argument("--file", help="a UTF-8 file of surnames, one per line (- for stdin)")
    p.add_argument("--top", type=int, default=3, help="how many languages to list per name")
    p.add_argument("--json", action="store_true", help="one JSON object per name and line: "
                   "name, read_as, left_out, languages [{language, probability}] (or error)")
    p.set_defaults(func=predict_command)

    p = sub.add_parser("sample", help="generate text (a ptb or chars run)")
    p.add_argument("run", help="a language-model run folder")
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--length", type=int, default=300, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="below 1: safer choices; above 1: more surprising ones")
    p.add_argument("--seed", type=int, default=0, help="seed for the draws")
    p.set_defaults(func=sample_command)

    p = sub.add_parser("forecast", help="forecast a series ahead (a forecast run)")
    p.add_argument("run", help="a forecast run folder")
    p.add_argument("--csv", help="the series to continue (default: the run's own data)")
    p.add_argument("--value-column", help="its value column (name or index; default: the "
                   "run's for its own data, else the last)")
    p.add_argument("--date-column", help="its date column (name or index; default: the run's, "
                   "else the first column that holds only dates, if any)")
    p.add_argument("--horizon", type=int, required=True, help="steps to forecast")
    p.add_argument("--out", help="the plot to write (default: RUN/forecast-ahead.png); the "
                   "forecast's table goes beside it as CSV (forecast-ahead.csv)")
    p.set_defaults(func=forecast_command)

    p = sub.add_parser("export", help="a run's model as ONNX (onnxruntime runs it without "
                       "lstmkit or torch), with model.json beside it")
    p.add_argument("run", help="a run folder")
    p.add_argument("--out", help="the .onnx file to write (default: RUN/model.onnx); its "
                   ".json description is written beside it")
    p.add_argument("--int8", action="store_true", help="dynamically quantized int8 weights; "
                   "reports test metrics of float32 and int8")
    p.add_argument("--streaming", action="store_true", help="state in (initial_h, initial_c) "
                   "and out (Y_h, Y_c), to feed a sequence in chunks (ptb and chars always)")
    p.set_defaults(func=export_command)

    p = sub.add_parser("report", help="one self-contained HTML page of a run: curves, metrics "
                       "beside published numbers, and the gates and states over real input")
    p.add_argument("run", help="a run folder")
    p.add_argument("--out", help="the HTML file to write (default: RUN/report.html)")
    p.add_argument("--input", metavar="TEXT_OR_FILE", help="what to look inside the network "
                   "with (names: one name per line; ptb, chars: a text snippet); a file of that "
                   "name is read; default: the run's validation data")
    p.set_defaults(func=report_command)

    p = sub.add_parser("explain", help="the classic one-unit LSTM worked by hand, in numbers")
    p.add_argument("--train", action="store_true",
                   help="also train the unit from random weights and show what it finds")
    p.add_argument("--seed", type=int, default=0, help="seed for --train")
    p.set_defaults(func=explain_command)

    p = sub.add_parser("gradflow", help="vanishing and exploding gradients, measured")
    p.add_argument("--cells", default="rnn,lstm,gru",
                   help="comma-separated registered cells, e.g. rnn,lstm,gru,slstm,mlstm,mingru")
    p.add_argument("--length", type=int, default=100, help="sequence length T")
    p.add_argument("--hidden", type=int, default=32, help="hidden units")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    p.add_argument("--train-steps", type=int, default=1000,
                   help="also measure the cells after this many Adam steps on the adding "
                   "problem at T = --length (0 = fresh cells only)")
    p.add_argument("--out", help="folder for gradflow.png, gradflow-trained.png, gradflow.md")
    p.set_defaults(func=gradflow_command)

    p = sub.add_parser("experiment", help="grids of runs: long time lags")
    p.add_argument("name", choices=("lags",), help="lags: cells x time lags on adding or copy")
    p.add_argument("--task", choices=("adding", "copy"), default="adding",
                   help="the long-time-lag task")
    p.add_argument("--cells", default="rnn,lstm,gru,peephole,coupled",
                   help="comma-separated cells")
    p.add_argument("--lengths", default="50,100,200,400", help="comma-separated time lags T")
    p.add_argument("--steps", type=int, default=3000, help="Adam steps per run")
    p.add_argument("--hidden", type=int, default=128, help="hidden units (every cell)")
    p.add_argument("--init", default="default", help="default, unit-forget, chrono, "
                   "orthogonal, unit-forget+orthogonal or chrono+orthogonal")
    p.add_argument("--seed", type=int, default=0, help="seed of every run")
    p.add_argument("--engine", default="auto", choices=("auto", "python", "torch", "compiled"),
                   help="the layers' engine (same numbers, different speed)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = default)")
    p.add_argument("--out", default="runs/lags", help="folder for the runs and the report")
    p.set_defaults(func=experiment_command)

    p = sub.add_parser("demo", help="the main job: a worked LSTM unit, RNN vs LSTM on the "
                       "adding problem, gradient flow, a names classifier")
    p.add_argument("--out", default="runs/demo", help="folder for run folders, plots and "
                   "summary.md")
    p.add_argument("--data-dir", help="folder holding the data sets (for the names part)")
    p.add_argument("--quick", action="store_true",
                   help="tiny budgets: checks that every part runs; the numbers mean nothing")
    p.set_defaults(func=demo_command)

    p = sub.add_parser("data", help="where the data sets are; download them")
    p.add_argument("action", choices=("fetch", "where"), help="fetch NAME..., or where")
    p.add_argument("names", nargs="*", help="data sets to fetch (default: all)")
    p.add_argument("--data-dir", help="folder for the data sets")
    p.set_defaults(func=data_command)
    return parser


def main(argv=None) -> None:
    from .train import Interrupted, TrainingStopped

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:                                # a first try: the help, not a usage error
        parser.print_help()
        raise SystemExit(0)
    args = parser.parse_args(argv)
    args.argv = argv
    func = train_command if args.command == "train" else args.func
    try:
        func(args)
    except TrainingStopped as e:                 # the cause and what was kept: one line
        fail(str(e))
    except Interrupted as e:
        if os.environ.get("RANK", "0") == "0":
            sys.stderr.write(f"lstmkit: stopped by {e}; checkpoint saved in "
                             f"{Path(args.out) / 'checkpoint'}. Continue with: lstmkit train "
                             f"{args.task} --out {args.out} --resume\n")
        raise SystemExit(128 + e.signum) from None
    except (ValueError, OSError) as e:         # bad input the user can fix: one line
        if os.environ.get("LSTMKIT_DEBUG"):
            raise
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted")


if __name__ == "__main__":
    main()
