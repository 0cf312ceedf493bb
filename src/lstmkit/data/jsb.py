"""Polyphonic music: the JSB Chorales as piano rolls (Boulanger-Lewandowski et al. 2012).

The JSON file holds ``{"train": [...], "valid": [...], "test": [...]}``; a chorale is a list of
quarter-note time steps, a step the list of sounding MIDI notes (empty for a rest). A piano
roll has one column per piano key, MIDI 21 (A0) to 108 (C8): ``roll[t, note - 21] = 1``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from .errors import DataError, shorten
from .files import read_utf8
from .store import require

LOWEST_NOTE, HIGHEST_NOTE = 21, 108
KEYS = HIGHEST_NOTE - LOWEST_NOTE + 1  # 88
SPLITS = ("train", "valid", "test")


def _piano_roll(chorale, where: str) -> Tensor:
    """A chorale (list of steps, each a list of MIDI notes) as a (T, 88) float32 roll."""
    if not isinstance(chorale, list) or not chorale:
        raise DataError(f"{where}: expected a non-empty list of time steps")
    steps, keys = [], []
    for t, notes in enumerate(chorale):
        if not isinstance(notes, list):
            raise DataError(f"{where}, step {t}: expected a list of MIDI notes, got "
                            f"{shorten(notes)}")
        for note in notes:
            if type(note) is not int or not LOWEST_NOTE <= note <= HIGHEST_NOTE:
                raise DataError(f"{where}, step {t}: note {shorten(note)} is not a MIDI note "
                                f"{LOWEST_NOTE}..{HIGHEST_NOTE} (an 88-key piano)")
            steps.append(t)
            keys.append(note - LOWEST_NOTE)
    roll = torch.zeros(len(chorale), KEYS, dtype=torch.float32)
    roll[steps, keys] = 1.0
    return roll


def load_piano_rolls(path: str | Path) -> dict[str, list[Tensor]]:
    """Each split of a chorales JSON file as a list of (T, 88) float32 piano rolls.

    Raises DataError naming the split, chorale and step of anything that is not a note in
    21..108, and for a file that is not JSON or lacks a split.
    """
    try:
        data = json.loads(read_utf8(path, "chorales file"))
    except DataError:
        raise
    except ValueError as e:                 # not JSON, or an integer of too many digits
        raise DataError(f"chorales file {path} is not valid JSON: {e}") from None
    except RecursionError:
        raise DataError(f"chorales file {path} is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict) or any(s not in data for s in SPLITS):
        found = shorten(sorted(data)) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"chorales file {path}: expected an object with keys "
                        f"{', '.join(SPLITS)}, got {found}")
    rolls = {}
    for split in SPLITS:
        if not isinstance(data[split], list):
            raise DataError(f"chorales file {path}: {split!r} is not a list of chorales")
        rolls[split] = [_piano_roll(c, f"chorales file {path}, {split} chorale {i}")
                        for i, c in enumerate(data[split])]
    return rolls


def load_jsb(data_dir: str | Path | None = None) -> dict[str, list[Tensor]]:
    """The JSB Chorales: 229 / 76 / 77 chorales with 13,807 / 4,602 / 4,725 time steps in
    train / valid / test, each a (T, 88) float32 piano roll.

    As the jsb task trains and scores next-step prediction on them, raises DataError for a
    split without chorales and for a chorale of fewer than 2 time steps.
    """
    path = require("jsb_chorales", data_dir) / "jsb-chorales-quarter.json"
    rolls = load_piano_rolls(path)
    for split, chorales in rolls.items():
        if not chorales:
            raise DataError(f"chorales file {path}: expected at least one chorale in "
                            f"{split!r}, got none")
        short = [i for i, roll in enumerate(chorales) if len(roll) < 2]
        if short:
            raise DataError(f"chorales file {path}, {split} chorale {short[0]}: expected at "
                            f"least 2 time steps (an input and the next step to predict), "
                            f"got {len(chorales[short[0]])}")
    return rolls
