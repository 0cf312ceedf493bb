"""Any UTF-8 text file as a character corpus (by default Tiny Shakespeare)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .errors import DataError
from .files import read_utf8
from .store import require

MIN_SPLIT_CHARS = 2  # a split needs an input and a next-character target


@dataclass
class CharCorpus:
    """``chars[id]`` is a character, ``stoi[char]`` its id; ``train``, ``valid`` and ``test``
    are consecutive parts of the text (in that order), 1-D LongTensors of ids, shapes
    (N_train,), (N_valid,), (N_test,). The vocabulary covers the whole text, so valid and test
    have no unknown characters."""

    chars: list[str]
    stoi: dict[str, int]
    train: Tensor
    valid: Tensor
    test: Tensor


def load_text(path: str | Path | None = None, data_dir: str | Path | None = None,
              valid_fraction: float = 0.05, test_fraction: float = 0.05) -> CharCorpus:
    """The characters of a UTF-8 text file: the first ``1 - valid_fraction - test_fraction``
    train, the next ``valid_fraction`` validate, the last ``test_fraction`` test (90/5/5).

    ``path`` defaults to ``tinyshakespeare/input.txt`` in the data directory (1,115,394
    characters, 65 distinct; train 1,003,856, valid and test 55,769 each): valid holds
    ``int(len(text) * valid_fraction)`` characters, test ``int(len(text) * test_fraction)``,
    train the rest. Raises DataError for a missing path, a
    directory, an empty or non-UTF-8 file, or a text too short to give each split 2
    characters.
    """
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    if valid_fraction + test_fraction >= 1:
        raise ValueError(f"valid_fraction + test_fraction must be below 1, got "
                         f"{valid_fraction} + {test_fraction}")
    if path is None:
        path = require("tinyshakespeare", data_dir) / "input.txt"
    text = read_utf8(path, "text file")
    n_valid, n_test = int(len(text) * valid_fraction), int(len(text) * test_fraction)
    n_train = len(text) - n_valid - n_test
    if min(n_train, n_valid, n_test) < MIN_SPLIT_CHARS:
        raise DataError(f"text file {path} has {len(text)} characters, too few for a "
                        f"{1 - valid_fraction - test_fraction:g}/{valid_fraction:g}/"
                        f"{test_fraction:g} train/valid/test split with at least "
                        f"{MIN_SPLIT_CHARS} characters in each")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
    return CharCorpus(chars, stoi, ids[:n_train].clone(), ids[n_train:n_train + n_valid].clone(),
                      ids[n_train + n_valid:].clone())
