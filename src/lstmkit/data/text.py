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
    """``chars[id]`` is a character, ``stoi[char]`` its id; ``train`` is the first part of the
    text and ``valid`` the rest, both 1-D LongTensors of ids, shapes (N_train,) and (N_valid,).
    The vocabulary covers the whole text, so valid has no unknown characters."""

    chars: list[str]
    stoi: dict[str, int]
    train: Tensor
    valid: Tensor


def load_text(path: str | Path | None = None, data_dir: str | Path | None = None,
              valid_fraction: float = 0.1) -> CharCorpus:
    """The characters of a UTF-8 text file, the first ``1 - valid_fraction`` for train.

    ``path`` defaults to ``tinyshakespeare/input.txt`` in the data directory (1,115,394
    characters, 65 distinct; train 1,003,854). The split point is
    ``int(len(text) * (1 - valid_fraction))``. Raises DataError for a missing path, a
    directory, an empty or non-UTF-8 file, or a text too short to give each split 2 characters.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if path is None:
        path = require("tinyshakespeare", data_dir) / "input.txt"
    text = read_utf8(path, "text file")
    n_train = int(len(text) * (1 - valid_fraction))
    if min(n_train, len(text) - n_train) < MIN_SPLIT_CHARS:
        raise DataError(f"text file {path} has {len(text)} characters, too few for a "
                        f"{1 - valid_fraction:g}/{valid_fraction:g} train/valid split with at "
                        f"least {MIN_SPLIT_CHARS} characters in each")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
    return CharCorpus(chars, stoi, ids[:n_train].clone(), ids[n_train:].clone())
