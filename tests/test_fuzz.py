"""Fuzzing the data loaders and the `lstmkit` commands that read data or run folders.

Random bytes, huge lines, mixed encodings (UTF-8, UTF-8 and UTF-16 with a byte-order mark,
Latin-1, cp1252), NaN, inf and empty cells in CSVs, empty files, paths that do not exist and
paths that are directories. A loader returns a valid result or raises DataError, one line
naming the file; a command exits 0, or 2 with one line "lstmkit: ..." on stderr, and writes
nothing outside its run folder. Examples are derandomized, so every run tries the same ones.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from cli_harness import assert_one_line_error, run_in
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from lstmkit.data import (
    ALPHABET,
    DATASETS,
    DataError,
    load_jsb,
    load_name_lists,
    load_piano_rolls,
    load_series,
    load_text,
    load_word_corpus,
)

RUN = "run"
TINY = ("--epochs", 1, "--max-steps", 2, "--hidden", 8)


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ---------------------------------------------------------------------- what files hold
ENCODINGS = ["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]


def encode(text: str, encoding: str) -> bytes:
    # surrogatepass: a lone surrogate becomes bytes that are not valid UTF-8
    return text.encode(encoding, errors="surrogatepass" if "utf" in encoding else "replace")


def encoded(texts: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Text in one encoding, or pieces of it in several (mixed encodings in one file)."""
    pieces = st.lists(st.tuples(texts, st.sampled_from(ENCODINGS)), min_size=1, max_size=3)
    return st.one_of(
        st.tuples(texts, st.sampled_from(ENCODINGS)).map(lambda p: encode(*p)),
        pieces.map(lambda ps: b"".join(encode(t, e) for t, e in ps)))


any_text = st.text(st.characters(codec=None), max_size=200)
huge_line = st.builds(lambda piece, n: (piece * n).encode(),
                      st.sampled_from(["a", "\u00e9", "x,", '"', "ab cd ", "1"]),
                      st.integers(100_000, 150_000))
small_file_bytes = st.one_of(st.just(b""), st.binary(max_size=300), encoded(any_text),
                             st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\n",
                                              b"\r\n\r\n", b"\x00" * 64]))
file_bytes = small_file_bytes | huge_line

# names of files and folders that do not exist: anything but "/", some past the 255-byte
# limit of a name; without line breaks for the loaders, whose messages print paths as they are
name_chars = st.characters(exclude_characters="/\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
                           codec="utf-8")
path_names = st.one_of(
    st.text(name_chars, min_size=1, max_size=40),
    st.text(name_chars, min_size=1, max_size=3).map(lambda s: s * 120),
    st.integers(250, 300).map(lambda n: "n" * n)).filter(lambda s: s not in (".", ".."))
cli_path_names = path_names | st.text(st.characters(exclude_characters="/", codec="utf-8"),
                                      min_size=1, max_size=20).filter(
    lambda s: s not in (".", "..") and s.strip())


_BASE: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _workdirs(tmp_path_factory):
    """Where workdir() makes its folders; removed with everything in it after the module."""
    _BASE.append(tmp_path_factory.mktemp("fuzz"))
    yield
    shutil.rmtree(_BASE.pop(), ignore_errors=True)


def workdir() -> Path:
    """A fresh empty folder for one example."""
    return Path(tempfile.mkdtemp(dir=_BASE[-1]))


def load_or_error(where: Path, load, *args, **kwargs):
    """load(*args)'s result, or None after a DataError of one line that names where; any
    other exception fails the test."""
    try:
        result = load(*args, **kwargs)
        event("valid")
        return result
    except DataError as e:
        event("DataError")
        message = str(e)
        assert "\n" not in message and len(message) < 500, message
        assert str(where) in message or where.name in message, message
        return None


# ---------------------------------------------------------------------- the loaders
# surnames: mostly letters (some accented, some without an ASCII form), sometimes anything
letters = st.sampled_from("ABCabcxyz\u00c9\u00e9\u00f1\u015a")
name_like = st.builds(str.__add__, letters,
                      st.text("abcxyz \u00e9\u00f1\u00df\u0141\u00a0'.,;-1\r\t", max_size=10))
surname = st.one_of(name_like, name_like, name_like,
                    st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=12))
name_lines = st.lists(surname, min_size=2, max_size=6).map(lambda ls: "\n".join(ls) + "\n")


@fuzz(60)
@given(files=st.dictionaries(st.sampled_from(["Polish.txt", "Greek.txt", "Irish.txt",
                                              "notes.md"]),
                             st.one_of(file_bytes, encoded(name_lines), name_lines.map(
                                 str.encode), name_lines.map(str.encode)), min_size=1,
                             max_size=3))
def test_names_loader(files):
    folder = workdir() / "names"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    names = load_or_error(folder, load_name_lists, folder)
    if names is not None:
        assert names.languages == sorted(Path(f).stem for f in files if f.endswith(".txt"))
        for name, label in names.train + names.test:
            assert 0 <= label < len(names.languages)
            assert set(name) <= set(ALPHABET) and any(c.isalpha() for c in name)
        assert {label for _, label in names.test} == set(range(len(names.languages)))


vocabulary = st.lists(st.sampled_from(["the", "cat", "sat", "<unk>", "\u00e9t\u00e9",
                                       "x\u00a0y", "\ufeffz", "a"]), min_size=1, max_size=5,
                      unique=True)


def corpus_lines(known: list[str], min_lines: int = 1,
                 min_words: int = 0) -> st.SearchStrategy[bytes]:
    return st.lists(st.lists(st.sampled_from(known), min_size=min_words, max_size=8),
                    min_size=min_lines, max_size=12).map(
        lambda ls: "".join(" ".join(w) + "\n" for w in ls).encode())


@fuzz(60)
@given(words=vocabulary, bad=st.sampled_from(["none", "train", "valid", "test"]),
       data=st.data())
def test_word_corpus_loader(words, bad, data):
    # a corpus of known words, or one whose file `bad` holds anything (or an unknown word)
    folder = workdir()
    for split in ("train", "valid", "test"):
        strategy = corpus_lines(words) if split != bad else st.one_of(
            corpus_lines(words + ["zzz"]), encoded(corpus_lines(words).map(bytes.decode)),
            file_bytes)
        (folder / f"toy.{split}.txt").write_bytes(data.draw(strategy, label=split))
    corpus = load_or_error(folder, load_word_corpus, folder, "toy")
    if corpus is not None:
        assert corpus.stoi == {w: i for i, w in enumerate(corpus.vocab)}
        for ids in (corpus.train, corpus.valid, corpus.test):
            assert ids.dtype == torch.long and (ids < len(corpus.vocab)).all()


@fuzz(60)
@given(data=file_bytes)
def test_text_loader(data):
    path = workdir() / "text.txt"
    path.write_bytes(data)
    corpus = load_or_error(path, load_text, path)
    if corpus is not None:
        text = data.decode("utf-8").removeprefix("\ufeff")
        ids = torch.cat([corpus.train, corpus.valid, corpus.test])
        assert "".join(corpus.chars[i] for i in ids) == text


BAD_CELLS = ["nan", "NaN", "inf", "-inf", "Infinity", "", " ", "1e400", "abc", "1,5", '"3"',
             '"', "\u00a0", "0x10", "1_000"]
number = st.floats(-1e6, 1e6).map(repr) | st.integers(-10**6, 10**6).map(str)
cell = st.one_of(number, number, st.sampled_from(BAD_CELLS), st.text(max_size=5))


def csv_text(header, rows, newline):
    return newline.join(",".join(r) for r in [header, *rows]) + newline


def numeric_csv(values: list[str]) -> bytes:
    return csv_text(["month", "v"], [[str(i), v] for i, v in enumerate(values)], "\n").encode()


def with_bad_cell(values, where, bad):
    values = list(values)
    values[where % len(values)] = bad
    return values


series_rows = st.lists(number, min_size=12, max_size=30)
one_bad_cell = st.builds(with_bad_cell, series_rows, st.integers(0, 29),
                         st.sampled_from(BAD_CELLS) | st.text(max_size=4))
csv_texts = st.builds(csv_text, st.lists(st.text(max_size=6), min_size=1, max_size=3),
                      st.lists(st.lists(cell, min_size=1, max_size=3), max_size=30),
                      st.sampled_from(["\n", "\r\n", "\r"])).flatmap(
    lambda text: encoded(st.just(text)))
small_csv_files = st.one_of(series_rows.map(numeric_csv), series_rows.map(numeric_csv),
                            one_bad_cell.map(numeric_csv),
                            csv_texts, small_file_bytes)
csv_files = small_csv_files | huge_line


@fuzz(80)
@given(data=csv_files, column=st.sampled_from([None, 0, -1, "1", "v", "nope"]))
def test_series_loader(data, column):
    path = workdir() / "series.csv"
    path.write_bytes(data)
    series = load_or_error(path, load_series, path, column, test_size=1, valid_size=1)
    if series is not None:
        assert torch.isfinite(series.values).all()
        assert len(series.train) + len(series.valid) + len(series.test) == len(series.values)


notes = st.one_of(st.integers(0, 130), st.integers(21, 108), st.floats(), st.booleans(),
                  st.text(max_size=3), st.none())
chorales = st.lists(st.lists(st.lists(notes, max_size=4) | notes, max_size=6), max_size=4)
good_chorale = st.lists(st.lists(st.integers(21, 108), max_size=3), min_size=2, max_size=6)
good_chorales = st.fixed_dictionaries({s: st.lists(good_chorale, min_size=1, max_size=3) for s
                                       in ("train", "valid", "test")})
chorale_json = st.one_of(good_chorales, good_chorales,
    st.fixed_dictionaries({"train": chorales, "valid": chorales, "test": chorales}),
    st.dictionaries(st.sampled_from(["train", "valid", "test", "extra"]), chorales),
    st.lists(chorales, max_size=2)).map(lambda obj: json.dumps(obj).encode())
small_jsb_files = st.one_of(chorale_json, chorale_json, small_file_bytes,
                            st.integers(1, 2000).map(lambda n: b"[" * n + b"]" * n))
jsb_files = st.one_of(small_jsb_files, huge_line,
                      st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
                      st.integers(4301, 6000).map(lambda n: b'{"train": [[[' + b"7" * n
                                                  + b"]]]}"))


@fuzz(80)
@given(data=jsb_files)
def test_jsb_loader(data):
    path = workdir() / "jsb.json"
    path.write_bytes(data)
    rolls = load_or_error(path, load_piano_rolls, path)
    if rolls is not None:
        assert set(rolls) == {"train", "valid", "test"}
        for roll in (r for split in rolls.values() for r in split):
            assert roll.shape[1] == 88 and set(roll.unique().tolist()) <= {0.0, 1.0}


LOADERS = {
    "names": (lambda p: load_name_lists(p), "folder"),
    "word corpus": (lambda p: load_word_corpus(p, "ptb"), "folder"),
    "text": (lambda p: load_text(p), "file"),
    "series": (lambda p: load_series(p), "file"),
    "chorales": (lambda p: load_piano_rolls(p), "file"),
}


@fuzz(40)
@given(loader=st.sampled_from(sorted(LOADERS)), name=path_names,
       kind=st.sampled_from(["missing", "directory", "file", "missing parent"]))
def test_loaders_on_paths_that_do_not_fit(loader, name, kind):
    load, wants = LOADERS[loader]
    root = workdir()
    path = root / name
    if kind == "missing parent":
        path = root / "nowhere" / name
    elif kind == "directory":
        assume(len(name.encode()) <= 255 and "\0" not in name)
        path.mkdir()
    elif kind == "file":
        assume(len(name.encode()) <= 255 and "\0" not in name)
        path.write_bytes(b"x\n")
    if kind == "file" and wants == "file" or kind == "directory" and wants == "folder":
        return                    # the right kind of path: covered by the tests above
    with pytest.raises(DataError) as e:
        load(path)
    assert "\n" not in str(e.value)
    assert name in str(e.value) or "does not exist" in str(e.value)


# ---------------------------------------------------------------------- the commands
def train_in(ws: Path, *args):
    """`lstmkit train ... --out run` in ws: exit 0 with a model, or 2 with one line."""
    result = run_in(ws, RUN, "train", *args, "--out", RUN, *TINY)
    event(f"exit {result.code}")
    if result.code == 0:
        assert (ws / RUN / "model.safetensors").is_file(), result.err
    else:
        assert len(assert_one_line_error(result)) < 1000
    return result


def text_of(length: int) -> st.SearchStrategy[bytes]:
    return st.text(st.characters(codec="utf-8"), min_size=length, max_size=length * 2).map(
        str.encode)


@fuzz(10)
@given(data=st.one_of(text_of(40), text_of(300), text_of(300), small_file_bytes))
def test_train_chars_on_fuzzed_text(data):
    ws = workdir()
    (ws / "in").mkdir()
    (ws / "in" / "text.txt").write_bytes(data)
    train_in(ws, "chars", "--path", "in/text.txt", "--embed", 4, "--layers", 1,
             "--batch-size", 2, "--bptt", 5)


@fuzz(12)
@given(data=small_csv_files)
def test_train_forecast_on_fuzzed_csv(data):
    ws = workdir()
    (ws / "in.csv").write_bytes(data)
    train_in(ws, "forecast", "--path", "in.csv", "--window", 3, "--horizon", 2,
             "--difference", 0)


ptb_words = st.lists(st.text("abcdefgh<>", min_size=1, max_size=5), min_size=1, max_size=6)


@fuzz(10)
@given(words=ptb_words, bad=st.sampled_from(["none", "none", "train", "valid", "test"]),
       data=st.data())
def test_train_ptb_on_fuzzed_corpus(words, bad, data):
    # a corpus of known words, or one whose file `bad` holds anything (or an unknown word)
    ws = workdir()
    (ws / "ptb").mkdir()
    for split in ("train", "valid", "test"):
        strategy = corpus_lines(words, 7, 3) if split != bad else st.one_of(
            corpus_lines(words + ["zzz"], 7, 3), small_file_bytes)
        (ws / "ptb" / f"ptb.{split}.txt").write_bytes(data.draw(strategy, label=split))
    train_in(ws, "ptb", "--path", "ptb", "--embed", 4, "--layers", 1, "--batch-size", 2,
             "--bptt", 5)


# valid notes, but maybe a split without chorales or a chorale of one step
few_chorales = st.fixed_dictionaries(
    {s: st.lists(st.lists(st.lists(st.integers(21, 108), max_size=2), min_size=1, max_size=3),
                 max_size=2) for s in ("train", "valid", "test")}).map(
    lambda o: json.dumps(o).encode())


@fuzz(16)
@given(data=st.one_of(few_chorales, good_chorales.map(lambda o: json.dumps(o).encode()),
                      small_jsb_files))
def test_train_jsb_on_fuzzed_chorales(data):
    ws = workdir()
    (ws / "data" / "jsb_chorales").mkdir(parents=True)
    (ws / "data" / "jsb_chorales" / "jsb-chorales-quarter.json").write_bytes(data)
    train_in(ws, "jsb", "--data-dir", "data")


LANGUAGES = [f.name for f in DATASETS["names"].files]


@fuzz(10)
@given(which=st.sampled_from(LANGUAGES), data=st.one_of(
    name_lines.map(str.encode), name_lines.map(str.encode), encoded(name_lines),
    small_file_bytes))
def test_train_names_on_fuzzed_file(which, data):
    ws = workdir()
    folder = ws / "data" / "names"
    folder.mkdir(parents=True)
    for k, language in enumerate(LANGUAGES):
        folder.joinpath(language).write_text(f"Ab{chr(97 + k)}\nCd{chr(97 + k)}\nEf\n")
    (folder / which).write_bytes(data)
    train_in(ws, "names", "--data-dir", "data", "--embed", 4, "--layers", 1)


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("forecast")
    (root / "s.csv").write_bytes(numeric_csv([str(100 + 10 * (i % 12)) for i in range(40)]))
    result = run_in(root, "run", "train", "forecast", "--path", root / "s.csv", "--out",
                    root / "run", "--window", 3, "--horizon", 2, "--difference", 0, *TINY)
    assert result.code == 0, result.err
    return root / "run"


@fuzz(12)
@given(data=small_csv_files)
def test_forecast_command_on_fuzzed_csv(forecast_run, data):
    ws = workdir()
    shutil.copytree(forecast_run, ws / RUN)
    (ws / "in.csv").write_bytes(data)
    result = run_in(ws, RUN, "forecast", RUN, "--csv", "in.csv", "--horizon", 3)
    event(f"exit {result.code}")
    if result.code == 0:
        assert result.out.count("approx. 95% interval") == 3
    else:
        assert len(assert_one_line_error(result)) < 1000


READ_A_RUN = {
    "evaluate": lambda run: ["evaluate", run],
    "predict": lambda run: ["predict", run, "Smith"],
    "sample": lambda run: ["sample", run],
    "forecast": lambda run: ["forecast", run, "--horizon", 2],
    # no run there: --resume starts one afresh, which needs data that is not there
    "resume": lambda run: ["train", "chars", "--out", run, "--resume", "--data-dir", "none",
                           *TINY],
}


@fuzz(40)
@given(command=st.sampled_from(sorted(READ_A_RUN)), name=cli_path_names,
       kind=st.sampled_from(["missing", "empty directory", "file", "missing parent"]))
def test_read_a_run_commands_on_paths_that_are_not_runs(command, name, kind):
    ws = workdir()
    top = name if kind != "missing parent" else "nowhere"
    if kind in ("empty directory", "file"):
        assume(len(name.encode()) <= 255 and "\0" not in name)
        (ws / name).mkdir() if kind == "empty directory" else (ws / name).write_text("{}")
    run = "./" + name if kind != "missing parent" else f"./nowhere/{name}"  # not an option
    assert_one_line_error(run_in(ws, top, *READ_A_RUN[command](run)))


@pytest.mark.parametrize("chorales, message", [
    ({"train": [[[60], [62]]], "valid": [], "test": [[[60], [62]]]},
     r"expected at least one chorale in 'valid', got none"),
    ({"train": [[[60], [62]]], "valid": [[[60], [62]]], "test": [[[60]]]},
     r"test chorale 0: expected at least 2 time steps .*, got 1"),
])
def test_jsb_task_data_needs_chorales_of_two_steps_in_every_split(tmp_path, chorales, message):
    # the jsb task divided by zero frames (an empty split) or ran a layer on empty sequences
    folder = tmp_path / "jsb_chorales"
    folder.mkdir()
    (folder / "jsb-chorales-quarter.json").write_text(json.dumps(chorales))
    with pytest.raises(DataError, match=message):
        load_jsb(tmp_path)
    assert load_piano_rolls(folder / "jsb-chorales-quarter.json")       # a valid file as such


def test_huge_csv_field_is_a_data_error(tmp_path):
    # csv's field limit (131,072 characters) raised csv.Error, not a DataError
    path = tmp_path / "s.csv"
    path.write_text("v\n1\n" + "2" * 200_000 + "\n3\n")
    with pytest.raises(DataError, match=r"s\.csv, line 3: not readable as CSV: field larger"):
        load_series(path, test_size=0, valid_size=0)


def test_deeply_nested_or_huge_integer_json_is_a_data_error(tmp_path):
    # json.loads raised RecursionError, and ValueError (not JSONDecodeError) for the integer
    for content in (b"[" * 100_000 + b"]" * 100_000, b'{"train": [[[' + b"1" * 5000 + b"]]]}"):
        path = tmp_path / "jsb.json"
        path.write_bytes(content)
        with pytest.raises(DataError, match=r"jsb\.json is not valid JSON"):
            load_piano_rolls(path)


@pytest.mark.parametrize("load", [load_text, load_series, load_piano_rolls, load_name_lists,
                                  lambda p: load_word_corpus(p, "ptb")])
def test_path_name_too_long_is_a_data_error(tmp_path, load):
    # Path.exists() and is_dir() raised OSError (ENAMETOOLONG) out of the loaders
    with pytest.raises(DataError, match="x" * 300):
        load(tmp_path / ("x" * 300))


def test_utf16_file_says_so(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes("hello world\n".encode("utf-16"))
    with pytest.raises(DataError, match="starts with a UTF-16 byte-order mark"):
        load_text(path)


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity", "1e400", "", "abc"])
def test_nonfinite_or_empty_cell_names_row_and_column(tmp_path, bad):
    path = tmp_path / "s.csv"
    path.write_text("v\n" + "1\n" * 5 + f"{bad}\n" + "2\n" * 5)
    with pytest.raises(DataError, match=r"data row 6 \(line 7\), column 'v'"):
        load_series(path, test_size=1, valid_size=1)
