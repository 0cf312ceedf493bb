"""The loaders on small files made in tmp_path: what they return, and a DataError that names
the file and the place for every kind of bad input."""

from __future__ import annotations

import csv
import json
import random
import string
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmkit.data import (
    ALPHABET,
    DataError,
    encode_name,
    load_name_lists,
    load_piano_rolls,
    load_series,
    load_text,
    load_word_corpus,
    transliterate,
)
from lstmkit.data.names import split_disjoint


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


# ------------------------------------------------------------------ names
@pytest.mark.parametrize("raw, ascii_name", [
    ("Ślusàrski", "Slusarski"), ("Müller", "Muller"), ("Nuñez", "Nunez"), ("O'Neal", "O'Neal"),
    ("Kowalczyk", "Kowalczyk"), ("De\u00a0la Cruz", "Dela Cruz"), ("Maxa/B", "MaxaB"),
    ("Rafaj1", "Rafaj"), ("Lu:", "Lu"), ("To The First\u00a0 Page", "To The First Page"),
    ("Łukasz", "ukasz"), ("Groß", "Gro"),  # no decomposition, so dropped, as in the tutorial
])
def test_transliterate_as_the_tutorial(raw, ascii_name):
    assert transliterate(raw) == ascii_name


@given(st.text())
def test_transliterate_gives_alphabet_only_and_is_idempotent(text):
    out = transliterate(text)
    assert set(out) <= set(ALPHABET)
    assert transliterate(out) == out


@given(st.text(alphabet=ALPHABET))
def test_transliterate_keeps_alphabet_text(text):
    assert transliterate(text) == text


def test_alphabet():
    assert ALPHABET == string.ascii_letters + " .,;'" and len(ALPHABET) == 57


def test_encode_name():
    code = encode_name("Abé")
    assert code.dtype == torch.long and code.shape == (3,)
    assert code.tolist() == [ALPHABET.index("A"), ALPHABET.index("b"), ALPHABET.index("e")]
    with pytest.raises(DataError, match=r"name '123' has no letters"):
        encode_name("123")


@pytest.fixture
def names_folder(tmp_path):
    folder = tmp_path / "names"
    polish = [f"Nowak{c}" for c in "abcdefghijklmnopqrs"] + ["Wójcik"]          # 20 names
    write(folder / "Polish.txt", "".join(f"{name}\n" for name in polish))
    write(folder / "Greek.txt", "Alexopoulos\nPapadopoulos\nAlexopoulos\n")
    write(folder / "SOURCE.md", "not a language\n")
    return folder


def test_name_lists_split(names_folder):
    names = load_name_lists(names_folder)
    assert names.languages == ["Greek", "Polish"]
    assert len(names.train) + len(names.test) == 23                 # duplicates kept
    assert Counter(label for _, label in names.test) == {0: 1, 1: 2}
    assert ("Alexopoulos", 0) in names.train + names.test
    assert ("Wojcik", 1) in names.train + names.test
    assert load_name_lists(names_folder, seed=0) == names
    assert load_name_lists(names_folder, seed=5).test != names.test


def test_names_bad_test_fraction(names_folder):
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        load_name_lists(names_folder, test_fraction=1.5)


def test_names_empty_folder(tmp_path):
    write(tmp_path / "names" / "SOURCE.md", "x")
    with pytest.raises(DataError, match=r"has no \*\.txt files"):
        load_name_lists(tmp_path / "names")


def test_names_folder_is_missing(tmp_path):
    with pytest.raises(DataError, match=r"is not a directory"):
        load_name_lists(tmp_path / "nowhere")


def test_names_empty_file(names_folder):
    write(names_folder / "Korean.txt", "")
    with pytest.raises(DataError, match=r"names file .*Korean\.txt is empty"):
        load_name_lists(names_folder)


def test_names_not_utf8(names_folder):
    write(names_folder / "Czech.txt", b"Novak\nDvo\xf8ak\n")           # Latin-2, not UTF-8
    with pytest.raises(DataError, match=r"Czech\.txt is not valid UTF-8: byte 0xf8 at byte "
                       r"offset 9 \(line 2\)"):
        load_name_lists(names_folder)


@pytest.mark.parametrize("content, line", [("Abe\n123\n", 2), ("Abe\n\nBob\n", 2),
                                           ("\u00a0\n", 1), ("'.,;\n", 1)])
def test_names_line_without_letters(names_folder, content, line):
    write(names_folder / "Irish.txt", content)
    with pytest.raises(DataError, match=rf"Irish\.txt, line {line}: .* has no letters"):
        load_name_lists(names_folder)


def test_names_language_with_one_name(names_folder):
    write(names_folder / "Korean.txt", "Ahn\n")
    with pytest.raises(DataError, match=r"Korean\.txt has 1 name; .* at least 2"):
        load_name_lists(names_folder)


# ------------------------------------------------------------------ word corpus
@pytest.fixture
def corpus_folder(tmp_path):
    write(tmp_path / "toy.train.txt", " the cat sat \n the dog <unk> \n")
    write(tmp_path / "toy.valid.txt", " the dog sat \n")
    write(tmp_path / "toy.test.txt", " <unk> cat\n")
    return tmp_path


def test_word_corpus(corpus_folder):
    c = load_word_corpus(corpus_folder, "toy")
    assert c.vocab == ["the", "cat", "sat", "<eos>", "dog", "<unk>"]
    assert c.stoi == {w: i for i, w in enumerate(c.vocab)}
    assert c.train.dtype == torch.long
    assert [c.vocab[i] for i in c.train] == "the cat sat <eos> the dog <unk> <eos>".split()
    assert [c.vocab[i] for i in c.valid] == "the dog sat <eos>".split()
    assert [c.vocab[i] for i in c.test] == "<unk> cat <eos>".split()


def test_word_corpus_unknown_word(corpus_folder):
    write(corpus_folder / "toy.valid.txt", " the cat \n the bird \n")
    with pytest.raises(DataError, match=r"toy\.valid\.txt, line 2: word 'bird' is not in the "
                       r"vocabulary of the train split"):
        load_word_corpus(corpus_folder, "toy")


def test_word_corpus_vocab_size(corpus_folder):
    with pytest.raises(DataError, match=r"toy\.train\.txt has 6 distinct words \(incl\. <eos>\), "
                       r"expected 10000"):
        load_word_corpus(corpus_folder, "toy", vocab_size=10_000)


@pytest.mark.parametrize("content, message", [
    (b"", r"toy\.test\.txt is empty"),
    (b"the \xff cat\n", r"toy\.test\.txt is not valid UTF-8: byte 0xff at byte offset 4"),
])
def test_word_corpus_bad_file(corpus_folder, content, message):
    write(corpus_folder / "toy.test.txt", content)
    with pytest.raises(DataError, match=message):
        load_word_corpus(corpus_folder, "toy")


def test_word_corpus_missing_file(corpus_folder):
    (corpus_folder / "toy.test.txt").unlink()
    with pytest.raises(DataError, match=r"corpus file .*toy\.test\.txt does not exist"):
        load_word_corpus(corpus_folder, "toy")


# ------------------------------------------------------------------ character text
def test_text_split(tmp_path):
    text = "héllo wörld, " * 10                                     # 130 characters
    corpus = load_text(write(tmp_path / "t.txt", text))
    assert corpus.chars == sorted(set(text))
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (118, 6, 6)
    decoded = "".join(corpus.chars[i]
                      for i in torch.cat([corpus.train, corpus.valid, corpus.test]))
    assert decoded == text


@pytest.mark.parametrize("content, message", [
    (b"", r"text file .*t\.txt is empty"),
    (b"ab\ncd\n\xe9t\xe9\n", r"t\.txt is not valid UTF-8: byte 0xe9 at byte offset 6 "
                             r"\(line 3\)"),
    (b"abcdefghijklmnopqrstuvwxyz", r"has 26 characters, too few for a "
                                    r"0\.9/0\.05/0\.05 train/valid/test split"),
])
def test_text_bad_file(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        load_text(write(tmp_path / "t.txt", content))


def test_text_path_is_a_directory(tmp_path):
    with pytest.raises(DataError, match=r"text file .* is not a file but a directory"):
        load_text(tmp_path)


def test_text_path_is_missing(tmp_path):
    with pytest.raises(DataError, match=r"text file .*missing\.txt does not exist"):
        load_text(tmp_path / "missing.txt")


def test_text_bad_fraction(tmp_path):
    with pytest.raises(ValueError, match=r"valid_fraction must be in \(0, 1\)"):
        load_text(write(tmp_path / "t.txt", "abcdef"), valid_fraction=0)
    with pytest.raises(ValueError, match=r"valid_fraction \+ test_fraction must be below 1"):
        load_text(write(tmp_path / "t.txt", "abcdef"), valid_fraction=0.5, test_fraction=0.5)


# ------------------------------------------------------------------ CSV series
def csv_file(tmp_path: Path, rows: list[list[str]], header=("Month", "Passengers")) -> Path:
    lines = ['"' + '","'.join(header) + '"'] + [",".join(r) for r in rows]
    return write(tmp_path / "s.csv", "\r\n".join(lines))              # CRLF, no final newline


def months(n: int) -> list[list[str]]:
    return [[f'"2000-{i + 1:02d}"', str(100 + i)] for i in range(n)]


def test_series_csv_with_crlf(tmp_path):
    s = load_series(csv_file(tmp_path, months(30)), test_size=5, valid_size=3)
    assert s.name == "Passengers" and s.dates is None and s.values.dtype == torch.float64
    assert s.values.tolist() == [100.0 + i for i in range(30)]
    assert s.test.tolist() == [125.0, 126.0, 127.0, 128.0, 129.0]
    assert s.valid.tolist() == [122.0, 123.0, 124.0] and len(s.train) == 22


def test_series_columns_by_name_and_index(tmp_path):
    path = csv_file(tmp_path, months(30))
    by_name = load_series(path, value_column="Passengers", date_column="Month")
    by_index = load_series(path, value_column=1, date_column=0)
    assert torch.equal(by_name.values, by_index.values)
    assert by_name.dates == by_index.dates and by_name.dates[0] == "2000-01"
    assert load_series(path, value_column=-1).name == "Passengers"
    assert load_series(path, value_column="1").name == "Passengers"     # as a command line gives
    named_1 = write(tmp_path / "n.csv", "0,1\n" + "".join(f"{i},{-i}\n" for i in range(30)))
    assert load_series(named_1, value_column="0").values[1] == 1         # a name wins


def test_series_trailing_newline_is_fine(tmp_path):
    path = write(tmp_path / "s.csv", "v\n" + "".join(f"{i}\n" for i in range(30)) + "\n")
    assert len(load_series(path).values) == 30


@pytest.mark.parametrize("bad, message", [
    ('"2000-03",', r"data row 3 \(line 4\), column 'Passengers': missing value"),
    ('"2000-03"', r"data row 3 \(line 4\), column 'Passengers': missing value"),
    ("", r"data row 3 \(line 4\), column 'Passengers': missing value"),
    ('"2000-03",12a', r"data row 3 \(line 4\), column 'Passengers': '12a' is not a number"),
    ('"2000-03",NaN', r"data row 3 \(line 4\), column 'Passengers': 'NaN' is not a finite"),
    ('"2000-03",-inf', r"data row 3 \(line 4\), column 'Passengers': '-inf' is not a finite"),
])
def test_series_bad_value(tmp_path, bad, message):
    rows = [",".join(r) for r in months(30)]
    rows[2] = bad
    path = write(tmp_path / "s.csv", '"Month","Passengers"\r\n' + "\r\n".join(rows))
    with pytest.raises(DataError, match=message):
        load_series(path)


@pytest.mark.parametrize("column", ["passengers", 2, -3])
def test_series_unknown_column(tmp_path, column):
    with pytest.raises(DataError, match=rf"has no value column {column!r}; its columns are "
                       r"0: 'Month', 1: 'Passengers'"):
        load_series(csv_file(tmp_path, months(30)), value_column=column)


def test_series_unknown_date_column(tmp_path):
    with pytest.raises(DataError, match=r"has no date column 'Date'"):
        load_series(csv_file(tmp_path, months(30)), date_column="Date")


@pytest.mark.parametrize("n", [0, 24])
def test_series_too_few_rows(tmp_path, n):
    with pytest.raises(DataError, match=rf"has {n} data rows, too few for valid_size=12 and "
                       r"test_size=12"):
        load_series(csv_file(tmp_path, months(n)))


@pytest.mark.parametrize("content, message", [
    (b"", r"CSV file .* is empty"), (b"\r\n\r\n", r"has no header row"),
    (b"v\n1\n\xff\n", r"not valid UTF-8: byte 0xff at byte offset 4 \(line 3\)"),
])
def test_series_bad_file(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        load_series(write(tmp_path / "s.csv", content))


def test_series_path_is_a_directory(tmp_path):
    with pytest.raises(DataError, match=r"is not a file but a directory"):
        load_series(tmp_path)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
column = st.one_of(st.lists(finite, min_size=3, max_size=40),
                   st.lists(st.integers(-10**15, 10**15), min_size=3, max_size=40))


@settings(max_examples=50, deadline=None)
@given(st.lists(column, min_size=1, max_size=4), st.sampled_from(["\r\n", "\n"]))
def test_series_round_trips_numeric_columns(tmp_path_factory, columns, newline):
    n = min(len(c) for c in columns)
    header = [f"col {j}" for j in range(len(columns))]
    path = tmp_path_factory.mktemp("csv") / "s.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator=newline)
        writer.writerow(header)
        writer.writerows([repr(c[i]) for c in columns] for i in range(n))
    for j, (name, values) in enumerate(zip(header, columns)):
        expected = [float(v) for v in values[:n]]
        for key in (name, j):
            s = load_series(path, value_column=key, test_size=1, valid_size=1)
            assert s.values.tolist() == expected and s.name == name
            assert s.test.tolist() == expected[-1:] and s.valid.tolist() == expected[-2:-1]
    assert load_series(path, test_size=1, valid_size=1).name == header[-1]


# ------------------------------------------------------------------ piano rolls
def chorales_file(tmp_path: Path, data) -> Path:
    return write(tmp_path / "jsb.json", json.dumps(data))


def test_piano_rolls(tmp_path):
    data = {"train": [[[60, 64, 67], [], [21, 108]]], "valid": [[[48]]], "test": []}
    rolls = load_piano_rolls(chorales_file(tmp_path, data))
    roll = rolls["train"][0]
    assert roll.shape == (3, 88) and roll.dtype == torch.float32
    assert torch.nonzero(roll).tolist() == [[0, 39], [0, 43], [0, 46], [2, 0], [2, 87]]
    assert rolls["valid"][0].shape == (1, 88) and rolls["test"] == []


@pytest.mark.parametrize("chorale, message", [
    ([[60], [20]], r"train chorale 1, step 1: note 20 is not a MIDI note 21\.\.108"),
    ([[109]], r"train chorale 1, step 0: note 109 is not"),
    ([[60.0]], r"note 60\.0 is not a MIDI note"),
    ([[True]], r"note True is not a MIDI note"),
    ([60], r"train chorale 1, step 0: expected a list of MIDI notes, got 60"),
    ([], r"train chorale 1: expected a non-empty list of time steps"),
])
def test_piano_rolls_bad_chorale(tmp_path, chorale, message):
    data = {"train": [[[60]], chorale], "valid": [], "test": []}
    with pytest.raises(DataError, match=message):
        load_piano_rolls(chorales_file(tmp_path, data))


def test_piano_rolls_missing_split(tmp_path):
    with pytest.raises(DataError, match=r"expected an object with keys train, valid, test, "
                       r"got \['test', 'train'\]"):
        load_piano_rolls(chorales_file(tmp_path, {"train": [], "test": []}))


def test_piano_rolls_not_json(tmp_path):
    with pytest.raises(DataError, match=r"jsb\.json is not valid JSON"):
        load_piano_rolls(write(tmp_path / "jsb.json", "{train: []}"))


def test_names_disjoint_split(names_folder):
    """No name on both sides; every example kept; a name's duplicates stay together."""
    names = load_name_lists(names_folder, split="disjoint")
    assert not {n for n, _ in names.train} & {n for n, _ in names.test}
    standard = load_name_lists(names_folder)
    assert sorted(names.train + names.test) == sorted(standard.train + standard.test)
    assert Counter(label for _, label in set(names.test)) == {0: 1, 1: 2}   # distinct names
    assert load_name_lists(names_folder, split="disjoint") == names
    with pytest.raises(ValueError, match=r"split must be one of standard, disjoint, got 'x'"):
        load_name_lists(names_folder, split="x")


def test_split_disjoint_name_under_two_languages():
    """A name listed under two languages goes with all its examples to one side, counted for
    the language that lists it most often."""
    items = [("Smith", 0), ("Smith", 1), ("Smith", 1)] + [(f"A{i}", 0) for i in range(9)] + \
        [(f"B{i}", 1) for i in range(9)]
    for seed in range(20):
        kept, held = split_disjoint(items, 0.2, random.Random(seed))
        assert sorted(kept + held) == sorted(items)
        assert not {n for n, _ in kept} & {n for n, _ in held}
        assert len({n for n, _ in held if n.startswith("A")}) == 2            # round(0.2 * 9)
        assert len({n for n, _ in held if n[0] in "BS"}) == 2                 # of 10
