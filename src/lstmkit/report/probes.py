"""The input the report looks inside the network with, per task, and the task's loss on it.

``probe(task, model, text)`` runs the model's own forward pass with its recurrent layer traced
(``layer.trace``), then the backward pass of the task's loss on that input, and returns a
``Probe``: the trace (gates, states and, after the backward pass, dL/dh_t and dL/dc_t), what
each step shows in the page (a character, a word, a value), classes of steps for finding
selective units, and notes (symbols replaced, steps left out). ``text`` is ``--input`` (names,
ptb, chars); None takes the run's validation data (the test data of adding and copy, the
window before the validation months of forecast).

A probe may hold several sequences (names: one per name); ``segments`` says where each one's
steps are in the concatenated time axis the page shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import ALPHABET, DataError, transliterate

# what --input may hold at most, before any per-model limit on steps
MAX_INPUT_CHARS = 20_000
NAMES_SHOWN = 18              # validation names in the default names probe
DEFAULT_STEPS = {"ptb": 120, "chars": 240}
VOWELS = set("aeiouAEIOU")
QUOTES = set("'\"`")
PUNCTUATION = set(".,;:!?-()")
DETERMINERS = {"the", "a", "an"}
PREPOSITIONS = {"of", "in", "to", "for", "on", "at", "by", "with", "from"}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass
class Probe:
    """A traced input (see the module docstring). Per-step lists run over the concatenated
    time axis; ``lengths[k]`` steps of sequence k sit in trace batch column ``columns[k]``."""

    trace: object                          # lstmkit.Trace, after backward
    symbols: list[str]                     # what each step shows in the text view
    hover: list[str]                       # a longer description of each step
    segments: list[tuple[int, int, str]]   # [start, end) of each sequence, and its caption
    columns: list[int]
    lengths: list[int]
    features: dict[str, list[float]]       # step classes (0/1) or values, for selectivity
    source: str                            # where the input came from
    loss_text: str                         # what L is, for the gradient chart
    loss: float
    kind: str = "symbol"                   # "symbol", "word" or "value"
    notes: list[str] = field(default_factory=list)
    ids: list[int] | None = None           # the token ids fed (symbol tasks)


def read_input(value: str | None) -> str | None:
    """--input as text: the contents of a file of that name if one exists, else the value."""
    from pathlib import Path

    if value is None:
        return None
    path = Path(value) if 0 < len(value) < 4096 and "\0" not in value else None
    if path is not None and path.is_dir() and value.strip() not in (".", ".."):
        raise ValueError(f"--input {value} is a folder; give a text or a file holding it")
    if path is not None and path.is_file():
        if path.stat().st_size > 4 * MAX_INPUT_CHARS:
            raise ValueError(f"--input {value}: the file holds {path.stat().st_size:,} bytes; "
                             f"a report looks inside the network for at most "
                             f"{MAX_INPUT_CHARS:,} characters")
        try:
            value = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"--input {value}: not UTF-8 text ({e.reason} at byte "
                             f"{e.start})") from None
    if not value.strip():
        raise ValueError("--input is empty; give a name, a text snippet or a file holding one")
    if len(value) > MAX_INPUT_CHARS:
        raise ValueError(f"--input holds {len(value):,} characters; a report looks inside the "
                         f"network for at most {MAX_INPUT_CHARS:,}")
    return value


def probe(task, model, text: str | None, max_steps: int) -> Probe:
    """The task's probe (see the module docstring); at most max_steps steps from --input."""
    name = task.cfg.task
    if text is not None and name not in ("names", "ptb", "chars"):
        raise ValueError(f"--input is for names, ptb and chars runs; the report of a {name!r} "
                         f"run looks inside the network with its own data")
    model.eval()
    return PROBES[name](task, model, text, max_steps)


def _too_long(steps: int, max_steps: int, what: str) -> None:
    if steps > max_steps:
        raise ValueError(f"--input has {steps:,} {what}; the report of this model shows at "
                         f"most {max_steps:,} (every unit's states and gates at every step)")


def _shown(items, limit: int = 12) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ---------------------------------------------------------------------- names
def _names_features(symbols: list[str]) -> dict[str, list[float]]:
    return {"vowels": [float(s in VOWELS) for s in symbols],
            "capital letters": [float(s.isupper()) for s in symbols],
            "spaces": [float(s == " ") for s in symbols],
            "punctuation and quotes": [float(s in PUNCTUATION | QUOTES) for s in symbols],
            "first letter of a name": [0.0] * len(symbols)}


def names_probe(task, model, text, max_steps) -> Probe:
    languages = task.languages
    notes = []
    if text is None:
        encoded, labels = task.splits["valid"]
        names, gold, seen = [], [], set()
        for ids, label in zip(encoded, labels.tolist()):    # one name of each language
            if label not in seen and len(names) < NAMES_SHOWN and \
                    sum(map(len, names)) + len(ids) <= max_steps:
                seen.add(label)
                names.append("".join(ALPHABET[i] for i in ids.tolist()))
                gold.append(label)
        if not names:
            raise DataError("no validation name is short enough for the report's size budget")
        source = (f"validation names, the first of each language ({len(names)} of "
                  f"{len(languages)} languages)")
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        names, gold, changed = [], None, {}
        for line in lines:
            ascii_name = transliterate(line)
            for ch in line:
                if ch not in ALPHABET:
                    base = transliterate(ch)
                    changed[ch] = f"{ch} -> {base}" if base else f"{ch} removed"
            if not any(ch.isalpha() for ch in ascii_name):
                raise DataError(f"--input: the name {line[:40]!r} has no letters A-Z/a-z "
                                "after transliteration to ASCII")
            names.append(ascii_name)
        if changed:
            notes.append("Symbols outside the model's alphabet were replaced as training "
                         f"replaced them (transliterated to ASCII): {_shown(changed.values())}.")
        source = f"--input ({len(names)} name{'s' * (len(names) != 1)}, one per line)"
    steps = sum(len(n) for n in names)
    _too_long(steps, max_steps, "letters")
    ids = [torch.tensor([ALPHABET.index(ch) for ch in n]) for n in names]
    lengths = torch.tensor([len(n) for n in names])
    order = lengths.argsort(descending=True, stable=True)      # the layer wants longest first
    tokens = torch.nn.utils.rnn.pad_sequence([ids[i] for i in order.tolist()])   # (L, N)
    trace = model.rnn.trace(model.embed(tokens), lengths=lengths[order])
    final = model.final(trace.output, trace.h_n, lengths[order])
    logits = model.out(model.drop(final))                           # (N, C) in `order`
    probs = logits.detach().softmax(-1)
    target = (torch.tensor(gold)[order] if gold is not None else probs.argmax(-1))
    loss = F.cross_entropy(logits, target, reduction="sum")
    loss.backward()
    column_of = {int(k): col for col, k in enumerate(order.tolist())}
    symbols, hover, segments, start = [], [], [], 0
    for k, name in enumerate(names):
        col = column_of[k]
        p, guess = probs[col].max(0)
        truth = f"; true: {languages[gold[k]]}" if gold is not None else ""
        caption = f"{name}: {languages[int(guess)]} {float(p):.2f}{truth}"
        segments.append((start, start + len(name), caption))
        symbols += list(name)
        hover += [f"{name!r}, letter {t + 1}: {ch!r}" for t, ch in enumerate(name)]
        start += len(name)
    features = _names_features(symbols)
    for s, _, _ in segments:
        features["first letter of a name"][s] = 1.0
    what = ("true language (validation names)" if gold is not None else
            "language as the model predicts it (--input names have no label)")
    return Probe(trace, symbols, hover, segments, [column_of[k] for k in range(len(names))],
                 [len(n) for n in names], features, source,
                 f"L = cross-entropy of each name's {what}, summed over the names (each "
                 "name's gradient is its own)", loss.item(), notes=notes,
                 ids=[ALPHABET.index(ch) for ch in "".join(names)])


# ---------------------------------------------------------------------- language models
def _lm_ids(task, text, max_steps) -> tuple[list[int], str, list[str], str]:
    """(ids, source, notes, kind) of a language model's probe."""
    vocab, stoi, name = task.vocab, task.stoi, task.cfg.task
    notes: list[str] = []
    if text is None:
        steps = min(DEFAULT_STEPS[name], max_steps)
        ids = task.eval_data["valid"][:, 0][:steps].tolist()      # the first stream: in order
        unit = "words" if name == "ptb" else "characters"
        return ids, f"the first {len(ids)} {unit} of the validation text", notes, \
            "word" if name == "ptb" else "symbol"
    if name == "chars":
        _too_long(len(text), max_steps, "characters")
        fill = " " if " " in stoi else vocab[0]
        missing = sorted(set(text) - set(stoi))
        if missing:
            notes.append(f"Characters the model never saw were replaced by {fill!r}: "
                         f"{_shown(repr(ch) for ch in missing)}.")
        return [stoi.get(ch, stoi[fill]) for ch in text], \
            f"the text given with --input ({len(text)} characters)", notes, "symbol"
    words, replaced = [], {}
    lines = text.splitlines()
    for k, line in enumerate(lines):
        for w in line.split():
            if w in stoi:
                words.append(w)
            elif w.lower() in stoi:
                words.append(w.lower())
                replaced[w] = f"{w} -> {w.lower()}"
            else:
                if "<unk>" not in stoi:
                    raise DataError(f"--input: the word {w[:40]!r} is not in the vocabulary, "
                                    "which has no <unk>")
                words.append("<unk>")
                replaced[w] = f"{w} -> <unk>"
        if "<eos>" in stoi and (k < len(lines) - 1 or text.endswith("\n")):
            words.append("<eos>")                 # PTB ends each line with <eos>
    if not words:
        raise ValueError("--input holds no words")
    _too_long(len(words), max_steps, "words")
    if replaced:
        notes.append(f"Words outside the vocabulary were replaced: {_shown(replaced.values())}.")
    return [stoi[w] for w in words], f"the text given with --input ({len(words)} words)", \
        notes, "word"


def _lm_features(task, symbols: list[str]) -> dict[str, list[float]]:
    if task.cfg.task == "ptb":
        return {"sentence ends (<eos>)": [float(w == "<eos>") for w in symbols],
                "unknown words (<unk>)": [float(w == "<unk>") for w in symbols],
                "numbers (N)": [float(w == "N") for w in symbols],
                "determiners (the, a, an)": [float(w in DETERMINERS) for w in symbols],
                "prepositions (of, in, to, ...)": [float(w in PREPOSITIONS) for w in symbols]}
    return {"vowels": [float(s in VOWELS) for s in symbols],
            "spaces": [float(s == " ") for s in symbols],
            "line breaks": [float(s == "\n") for s in symbols],
            "punctuation": [float(s in PUNCTUATION) for s in symbols],
            "quotes": [float(s in QUOTES) for s in symbols],
            "capital letters": [float(s.isupper()) for s in symbols]}


def language_model_probe(task, model, text, max_steps) -> Probe:
    ids, source, notes, kind = _lm_ids(task, text, max_steps)
    x = torch.tensor(ids)[:, None]                                     # (T, 1)
    trace = model.rnn.trace(model.drop(model.embed(x)))
    logits = model.decoder(model.drop(trace.output))                   # (T, 1, V)
    if len(ids) > 1:
        loss = F.cross_entropy(logits[:-1, 0], x[1:, 0])
        loss.backward()
    else:
        loss = torch.tensor(float("nan"))
        notes.append("One step has no next symbol to predict: no loss, no gradient.")
    probs = logits.detach()[:, 0].softmax(-1)
    p, guess = probs.max(-1)
    vocab = task.vocab
    symbols = [vocab[i] for i in ids]
    show = (lambda s: s) if kind == "word" else repr
    hover = [f"step {t}: {show(s)}; the model's guess for the next: {show(vocab[int(g)])} "
             f"({float(q):.2f})" for t, (s, g, q) in enumerate(zip(symbols, guess, p))]
    unit = "word" if kind == "word" else "character"
    return Probe(trace, symbols, hover, [(0, len(ids), "")], [0], [len(ids)],
                 _lm_features(task, symbols), source,
                 f"L = mean cross-entropy of predicting each next {unit} of this input (the "
                 f"last step has none)", loss.item(), kind=kind, notes=notes, ids=ids)


# ---------------------------------------------------------------------- value inputs
def _value_probe(trace, symbols, hover, features, source, loss_text, loss, notes=()) -> Probe:
    return Probe(trace, symbols, hover, [(0, len(symbols), "")], [0], [len(symbols)],
                 features, source, loss_text, loss.item(), kind="value", notes=list(notes))


def forecast_probe(task, model, text, max_steps) -> Probe:
    t, window, start = task.transform, task.cfg.window, task.n_train
    z = t.forward(task.values[: start + 1])                 # z[k] is y[k + difference]
    x = z[-window - 1 : -1]                                 # the window before y[start]
    trace = model.rnn.trace(x[:, None, None])
    pred = model.out(trace.output[-1])[0, 0]
    loss = (pred - z[-1]) ** 2
    loss.backward()
    first = start - window                                  # y index of the window's step 0
    dates = series_dates(task.cfg)
    y = task.values[first:start].tolist()
    symbols = [f"{v:.4g}" for v in y]
    when = [dates[first + k] if dates else f"point {first + k}" for k in range(window)]
    hover = [f"{d}: value {v:.6g}; the model reads z = {float(zk):.3f} (scaled change)"
             for d, v, zk in zip(when, y, x)]
    mean = sum(y) / len(y)
    features = {"z, the scaled change the model reads": x.tolist(),
                "value above the window's mean": [float(v > mean) for v in y]}
    return _value_probe(trace, symbols, hover, features,
                        f"the {window} points before the first validation point "
                        f"({when[0]} .. {when[-1]})",
                        "L = squared error of the model's one-step prediction of the next z "
                        "(the first validation point)", loss)


def adding_probe(task, model, text, max_steps) -> Probe:
    x, y = task.test
    x, y = x[:, :1], y[:1]                                  # (T, 1, 2), (1,)
    trace = model.rnn.trace(x)
    pred = model.out(trace.output[-1])[:, 0]
    loss = F.mse_loss(pred, y)
    loss.backward()
    values, marks = x[:, 0, 0].tolist(), x[:, 0, 1].tolist()
    symbols = [f"{v:.2f}" + ("*" if m else "") for v, m in zip(values, marks)]
    hover = [f"step {t}: value {v:.3f}" + (", marked" if m else "")
             for t, (v, m) in enumerate(zip(values, marks))]
    return _value_probe(trace, symbols, hover,
                        {"marked steps": marks, "the value": values},
                        f"the first test sequence (T = {len(values)}; target "
                        f"{y.item():.3f}, the model says {pred.item():.3f}; * = marked)",
                        "L = squared error of the model's sum", loss)


def copy_probe(task, model, text, max_steps) -> Probe:
    from ..tasks.synthetic import COPY_LENGTH, COPY_SYMBOLS

    x, y = task.test
    x, y = x[:, :1], y[:, :1]                               # (T, 1)
    trace = model.rnn.trace(model.embed(x))
    logits = model.out(trace.output)                        # (T, 1, V)
    loss = F.cross_entropy(logits[:, 0], y[:, 0])
    loss.backward()
    ids = x[:, 0].tolist()
    show = {0: "_", COPY_SYMBOLS + 1: "#"}
    symbols = [show.get(i, str(i)) for i in ids]
    guess = logits.detach()[:, 0].argmax(-1).tolist()
    hover = [f"step {t}: {s} (target {show.get(int(g), str(int(g)))}, the model says "
             f"{show.get(p, str(p))})" for t, (s, g, p) in enumerate(zip(symbols, y[:, 0], guess))]
    delimiter = ids.index(COPY_SYMBOLS + 1)
    recall = [float(t > delimiter) for t in range(len(ids))]
    features = {"data symbols": [float(0 < i <= COPY_SYMBOLS) for i in ids],
                "blanks (_)": [float(i == 0) for i in ids],
                "the delimiter (#)": [float(i == COPY_SYMBOLS + 1) for i in ids],
                "recall phase (after #)": recall}
    return _value_probe(trace, symbols, hover, features,
                        f"the first test sequence ({COPY_LENGTH} symbols, blanks _, the "
                        f"delimiter #, then the {COPY_LENGTH} steps that must repeat them)",
                        "L = mean cross-entropy per step, as in training", loss)


def parity_probe(task, model, text, max_steps) -> Probe:
    tokens, lengths, labels = task.sets["valid"][""]
    n = int(lengths[0])                                     # the first validation string
    x, y = tokens[:n, :1], labels[:1]                       # (T, 1), (1,)
    trace = model.rnn.trace(model.embed(x))
    logits = model.out(model.drop(model.final(trace.output, trace.h_n, torch.tensor([n]))))
    loss = F.cross_entropy(logits, y)
    loss.backward()
    bits = x[:, 0].tolist()
    odd = [float(sum(bits[: t + 1]) % 2) for t in range(n)]
    hover = [f"step {t}: bit {b}; ones so far {'odd' if o else 'even'}"
             for t, (b, o) in enumerate(zip(bits, odd))]
    guess = "odd" if logits.argmax(-1).item() else "even"
    return _value_probe(trace, [str(b) for b in bits], hover,
                        {"ones": [float(b) for b in bits], "odd so far": odd},
                        f"the first validation string ({n} bits, {'odd' if y.item() else 'even'}"
                        f" count of ones; the model says {guess})",
                        "L = cross-entropy of the string's parity", loss)


def note_name(midi: int) -> str:
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def jsb_probe(task, model, text, max_steps) -> Probe:
    from ..tasks.music import KEYS

    roll = task.splits["valid"][0]                          # (T, 88)
    frames, targets = roll[:-1, None], roll[1:, None]       # (T, 1, 88)
    trace = model.rnn.trace(frames)
    logits = model.out(model.drop(trace.output))
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(frames)
    loss.backward()
    chords = [[note_name(21 + k) for k in frame.nonzero()[:, 0].tolist()] for frame in roll[:-1]]
    symbols = [c[0] if c else "-" for c in chords]
    hover = [f"step {t}: " + (" ".join(c) if c else "silence") for t, c in enumerate(chords)]
    counts = [float(len(c)) for c in chords]
    change = [0.0] + [float(a != b) for a, b in zip(chords, chords[1:])]
    return _value_probe(trace, symbols, hover,
                        {"notes sounding": counts, "chord changes": change},
                        f"the first validation chorale ({len(frames)} steps; each step shows "
                        f"its lowest note, of {KEYS} keys)",
                        "L = negative log-likelihood of each next frame, mean over the steps",
                        loss)


PROBES = {"names": names_probe, "ptb": language_model_probe, "chars": language_model_probe,
          "forecast": forecast_probe, "adding": adding_probe, "copy": copy_probe,
          "jsb": jsb_probe, "parity": parity_probe}


def per_step(probe: Probe, x: Tensor) -> Tensor:
    """A trace tensor (T, N, ...) as the probe's concatenated steps (T_total, ...)."""
    return torch.cat([x[:n, col] for col, n in zip(probe.columns, probe.lengths)])


def series_dates(cfg) -> list[str] | None:
    """The dates of a forecast run's series: its --date-column, else the CSV's first column
    when that is not the value column (the airline data's "Month"); None without one."""
    from ..data import load_series

    column = cfg.date_column if cfg.date_column is not None else 0
    try:
        s = load_series(cfg.path, cfg.value_column, column, cfg.data_dir,
                        test_size=cfg.horizon, valid_size=cfg.horizon)
    except (DataError, OSError):
        return None
    if cfg.date_column is None and all(_same_number(d, v) for d, v in zip(s.dates,
                                                                          s.values.tolist())):
        return None                          # the first column is the values themselves
    return s.dates


def _same_number(text: str, value: float) -> bool:
    try:
        return float(text) == value
    except ValueError:
        return False
