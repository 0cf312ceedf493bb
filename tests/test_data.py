"""The real data sets, read from $LSTMKIT_DATA: the registry's sums and sizes match the files,
and each loader gives the counts their SOURCE.md records. Skipped when the data is not there
(scripts/test.sh sets LSTMKIT_DATA to ../shared/data when that folder exists)."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from lstmkit.data import (
    ALPHABET,
    DATASETS,
    load_jsb,
    load_names,
    load_ptb,
    load_series,
    load_text,
    sha256_file,
)

# names per language, from names/SOURCE.md
NAME_COUNTS = {
    "Arabic": 2000, "Chinese": 268, "Czech": 519, "Dutch": 297, "English": 3668, "French": 277,
    "German": 724, "Greek": 203, "Irish": 232, "Italian": 709, "Japanese": 991, "Korean": 94,
    "Polish": 139, "Portuguese": 74, "Russian": 9408, "Scottish": 100, "Spanish": 298,
    "Vietnamese": 73,
}


def _real_dir(name: str) -> Path:
    """$LSTMKIT_DATA if it holds data set ``name``; skip the test otherwise."""
    env = os.environ.get("LSTMKIT_DATA")
    if not env:
        pytest.skip("real data: LSTMKIT_DATA is not set (scripts/test.sh sets it to "
                    "../shared/data when that folder exists)")
    if not (Path(env) / name).is_dir():
        pytest.skip(f"real data: {Path(env) / name} does not exist")
    return Path(env)


@pytest.fixture(scope="module")
def names():
    return load_names(_real_dir("names"))


@pytest.fixture(scope="module")
def ptb():
    return load_ptb(_real_dir("ptb"))


@pytest.mark.parametrize("name", list(DATASETS))
def test_registry_sums_and_sizes_match_the_real_files(name):
    folder = _real_dir(name) / name
    for f in DATASETS[name].files:
        assert (folder / f.name).stat().st_size == f.size, f.name
        assert sha256_file(folder / f.name) == f.sha256, f.name


# ------------------------------------------------------------------ names
def test_names_languages_and_counts(names):
    assert names.languages == sorted(NAME_COUNTS)
    assert len(names.train) + len(names.test) == 20_074
    per_language = Counter(label for _, label in names.train + names.test)
    assert {names.languages[k]: n for k, n in per_language.items()} == NAME_COUNTS


def test_names_split_is_stratified(names):
    test = Counter(label for _, label in names.test)
    for label, language in enumerate(names.languages):
        assert test[label] == max(1, round(0.1 * NAME_COUNTS[language])), language


def test_names_split_reproducible_with_seed(names):
    again = load_names(_real_dir("names"), seed=0)
    other = load_names(_real_dir("names"), seed=1)
    assert again.test == names.test and again.train == names.train
    assert other.test != names.test
    assert sorted(other.test + other.train) == sorted(names.test + names.train)


def test_names_are_ascii_in_the_alphabet(names):
    assert len(ALPHABET) == 57
    assert all(set(name) <= set(ALPHABET) for name, _ in names.train + names.test)
    assert names.encode("Ślusàrski").tolist() == [ALPHABET.index(c) for c in "Slusarski"]


# ------------------------------------------------------------------ Penn Treebank
def test_ptb_vocabulary(ptb):
    assert len(ptb.vocab) == 10_000
    assert {"<eos>", "<unk>", "N"} <= set(ptb.stoi)
    assert all(ptb.vocab[i] == w for w, i in ptb.stoi.items())


def test_ptb_token_counts_match_source(ptb):
    # tokens incl. one <eos> per line, from ptb/SOURCE.md (and Zaremba et al. 2014)
    assert (len(ptb.train), len(ptb.valid), len(ptb.test)) == (929_589, 73_760, 82_430)
    eos, unk = ptb.stoi["<eos>"], ptb.stoi["<unk>"]
    assert [int((s == eos).sum()) for s in (ptb.train, ptb.valid, ptb.test)] == \
        [42_068, 3_370, 3_761]
    assert [int((s == unk).sum()) for s in (ptb.train, ptb.valid, ptb.test)] == \
        [45_020, 3_485, 4_794]
    assert int((ptb.train == ptb.stoi["N"]).sum()) == 32_481
    assert ptb.train.dtype == torch.long


# ------------------------------------------------------------------ Tiny Shakespeare
def test_tinyshakespeare_split():
    corpus = load_text(data_dir=_real_dir("tinyshakespeare"))
    assert len(corpus.chars) == 65
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == \
        (1_003_856, 55_769, 55_769)
    assert "".join(corpus.chars[i] for i in corpus.train[:14]) == "First Citizen:"
    assert corpus.chars[int(corpus.test[-1])] == "\n"


# ------------------------------------------------------------------ CSV series
def test_airline_passengers():
    s = load_series(data_dir=_real_dir("airline_passengers"))
    assert s.name == "Passengers" and s.values.dtype == torch.float64
    assert len(s.values) == 144 and s.values[0] == 112 and s.values[-1] == 432
    assert s.values.sum() == 40_363
    assert s.dates[0] == "1949-01" and s.dates[-1] == "1960-12" and len(s.dates) == 144
    assert s.test.tolist() == [417, 391, 419, 461, 472, 535, 622, 606, 508, 461, 390, 432]
    assert (len(s.train), len(s.valid)) == (120, 12)
    assert torch.equal(torch.cat([s.train, s.valid, s.test]), s.values)


def test_sunspots():
    path = _real_dir("sunspots") / "sunspots" / "monthly-sunspots.csv"
    s = load_series(path, date_column="Month")
    assert s.name == "Sunspots" and len(s.values) == 2_820
    assert (s.values[0], s.values[-1], s.values.max()) == (58.0, 33.4, 253.8)
    assert s.dates[s.values.argmax()] == "1957-10"
    assert int((s.values == 0).sum()) == 67


# ------------------------------------------------------------------ JSB Chorales
def test_jsb_chorales():
    rolls = load_jsb(_real_dir("jsb_chorales"))
    assert {k: len(v) for k, v in rolls.items()} == {"train": 229, "valid": 76, "test": 77}
    steps = {k: sum(r.shape[0] for r in v) for k, v in rolls.items()}
    assert steps == {"train": 13_807, "valid": 4_602, "test": 4_725}
    every = torch.cat([r for v in rolls.values() for r in v])           # (23134, 88)
    assert every.dtype == torch.float32 and every.shape[1] == 88
    notes_per_step = Counter(every.sum(1).int().tolist())
    assert notes_per_step == {4: 20_835, 3: 2_205, 2: 17, 1: 13, 0: 64}
    used = torch.nonzero(every.sum(0)).flatten() + 21                     # MIDI notes used
    assert (int(used.min()), int(used.max()), len(used)) == (43, 96, 52)
    lengths = [r.shape[0] for r in rolls["test"]]
    assert (min(lengths), max(lengths)) == (32, 160)
    assert math.isclose(sum(lengths) / len(lengths), 61.4, abs_tol=0.05)
