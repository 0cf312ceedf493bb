"""Word-level corpora: the Penn Treebank (Mikolov's version) and any corpus laid out like it.

A corpus folder holds ``<prefix>.train.txt``, ``<prefix>.valid.txt`` and ``<prefix>.test.txt``.
Each line is split on whitespace and ends with an ``<eos>`` token, as in Zaremba et al. 2014
and Mikolov's RNNLM. The vocabulary is the train split's words in order of first appearance, so
ids are stable; a word of valid or test that train lacks is an error, not a silent ``<unk>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .errors import DataError, shorten
from .files import read_utf8
from .store import require

EOS = "<eos>"
PTB_VOCAB_SIZE = 10_000
SPLITS = ("train", "valid", "test")


@dataclass
class WordCorpus:
    """A word corpus: ``vocab[id]`` is a word, ``stoi[word]`` its id; each split is a 1-D
    LongTensor of ids of shape (number of tokens incl. one ``<eos>`` per line,)."""

    vocab: list[str]
    stoi: dict[str, int]
    train: Tensor
    valid: Tensor
    test: Tensor


def _lines(path: Path) -> list[list[str]]:
    """Each line's whitespace-separated words, then ``<eos>``."""
    text = read_utf8(path, "corpus file")
    lines = text.split("\n")
    if lines[-1] == "":                                  # the newline that ends the last line
        lines.pop()
    return [line.split() + [EOS] for line in lines]


def load_word_corpus(folder: str | Path, prefix: str,
                     vocab_size: int | None = None) -> WordCorpus:
    """The corpus ``folder/<prefix>.{train,valid,test}.txt``.

    Raises DataError for a missing, empty or non-UTF-8 file, for a valid/test word not in the
    train vocabulary (naming file, line and word), and, when ``vocab_size`` is given, for a
    vocabulary of another size.
    """
    folder = Path(folder)
    lines = {split: _lines(folder / f"{prefix}.{split}.txt") for split in SPLITS}
    stoi: dict[str, int] = {}
    for line in lines["train"]:
        for word in line:
            stoi.setdefault(word, len(stoi))
    if vocab_size is not None and len(stoi) != vocab_size:
        raise DataError(f"{folder / f'{prefix}.train.txt'} has {len(stoi)} distinct words "
                        f"(incl. {EOS}), expected {vocab_size}")
    ids = {}
    for split in SPLITS:
        for number, line in enumerate(lines[split], start=1):
            for word in line:
                if word not in stoi:
                    raise DataError(f"{folder / f'{prefix}.{split}.txt'}, line {number}: word "
                                    f"{shorten(word)} is not in the vocabulary of the train split")
        ids[split] = torch.tensor([stoi[w] for line in lines[split] for w in line],
                                  dtype=torch.long)
    return WordCorpus(list(stoi), stoi, ids["train"], ids["valid"], ids["test"])


def load_ptb(data_dir: str | Path | None = None) -> WordCorpus:
    """The Penn Treebank: 10,000 words (incl. ``<eos>`` and ``<unk>``); 929,589 / 73,760 /
    82,430 tokens in train / valid / test."""
    return load_word_corpus(require("ptb", data_dir), "ptb", vocab_size=PTB_VOCAB_SIZE)
