"""Surnames and their language of origin (the PyTorch char-RNN classification data).

A folder holds one ``<Language>.txt`` per class, one UTF-8 name per line. Names are turned
into ASCII as the PyTorch tutorial does (Unicode NFD, combining marks dropped, only the 57
symbols of ``ALPHABET`` kept), so "Ślusàrski" becomes "Slusarski". Every line is one example;
duplicates are kept (the real data has 20,074 lines).
"""

from __future__ import annotations

import random
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .errors import DataError, shorten
from .files import read_utf8
from .store import require

ALPHABET = string.ascii_letters + " .,;'"
_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}
_LETTERS = frozenset(string.ascii_letters)


def transliterate(name: str) -> str:
    """name in ASCII: NFD-decomposed, combining marks (category Mn) dropped, then only the
    characters of ALPHABET kept (so "Ł", "ß" and a no-break space vanish)."""
    return "".join(ch for ch in unicodedata.normalize("NFD", name)
                   if unicodedata.category(ch) != "Mn" and ch in _INDEX)


# Letters of other scripts in Latin (lower case; upper case is capitalised), for names to
# classify: Russian/Ukrainian Cyrillic as the names data spells it (Abaev, Abaidulin), Greek
# (with "ou" for the digraph), Arabic consonants (short vowels are unwritten marks, dropped),
# and Latin letters that do not decompose into a base letter and accents. Accented letters
# (й, ά, é) decompose first and lose their accents, as in transliterate.
_CYRILLIC = dict(zip("абвгдезиклмнопрстуфхцчшщъыьэюяієїґў",
                     "a b v g d e z i k l m n o p r s t u f kh ts ch sh shch _ y _ e yu ya i "
                     "ye yi g u".split()))
_GREEK = dict(zip("αβγδεζηθικλμνξοπρσςτυφχψω",
                  "a v g d e z i th i k l m n x o p r s s t y f ch ps o".split()))
_ARABIC = dict(zip("ءابتثجحخدذرزسشصضطظعغفقكلمنهويةىأإآؤئ",
                   "' a b t th j h kh d dh r z s sh s d t z ' gh f q k l m n h w y a a a i a "
                   "' '".split()))
_LATIN = {"ł": "l", "ß": "ss", "ø": "o", "æ": "ae", "œ": "oe", "đ": "d", "þ": "th", "ð": "d",
          "ı": "i", "ŀ": "l"}
_ROMAN = {ch: ("" if m == "_" else m) for table in (_CYRILLIC, _GREEK, _ARABIC, _LATIN)
          for ch, m in table.items()}


def romanize(name: str) -> tuple[str, list[str]]:
    """(ascii, left_out): name in the characters of ALPHABET, for a trained model to read.
    Latin letters lose their accents (as transliterate); Cyrillic, Greek and Arabic letters are
    transliterated (Достоевский -> Dostoevskii; a name of a script without case, such as
    Arabic, gets capitals); any whitespace is a space. Characters with no transliteration here
    (Chinese, Japanese and Korean script, digits, symbols) are left out and listed in
    left_out, each once, in the order they appear."""
    chars = unicodedata.normalize("NFC", name)
    out, left_out, skip = [], [], False
    for k, ch in enumerate(chars):
        if skip:
            skip = False
            continue
        base = unicodedata.normalize("NFD", ch)[0]           # the letter without its accents
        after = unicodedata.normalize("NFD", chars[k + 1])[0] if k + 1 < len(chars) else ""
        if base.lower() == "ο" and after.lower() == "υ":        # Greek's digraph: ou, not oy
            latin, skip = "ou", True
        elif base in _INDEX:
            latin = base
        elif base.lower() in _ROMAN:
            latin = _ROMAN[base.lower()]
        elif ch.isspace():
            latin = " "
        else:
            if ch not in left_out:
                left_out.append(ch)
            continue
        if base.isupper() and base not in _INDEX:            # Щукин -> Shchukin, ЩУКИН -> SHCHUKIN
            shouting = after.isupper() or k > 0 and chars[k - 1].isupper()
            latin = latin.upper() if shouting else latin.capitalize()
        out.append(latin)
    ascii_name = " ".join("".join(out).split())
    if not any(c.isupper() or c.islower() for c in chars):      # a script without case
        ascii_name = " ".join(word[:1].upper() + word[1:] for word in ascii_name.split(" "))
    return ascii_name, left_out


def encode_name(name: str) -> Tensor:
    """The ALPHABET indices of transliterate(name): a LongTensor of shape (L,).

    Raises DataError if no letter is left after transliteration.
    """
    ascii_name = transliterate(name)
    if not _LETTERS.intersection(ascii_name):
        raise DataError(f"name {shorten(name)} has no letters A-Z/a-z after transliteration "
                        "to ASCII")
    return torch.tensor([_INDEX[ch] for ch in ascii_name], dtype=torch.long)


@dataclass
class Names:
    """Names split into train and test, stratified by language.

    ``languages[label]`` is the language of an example ``(ascii_name, label)``.
    """

    languages: list[str]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]

    def encode(self, name: str) -> Tensor:
        """Alphabet indices of a name, (L,) long; see ``encode_name``."""
        return encode_name(name)


def read_name_file(path: str | Path) -> list[str]:
    """The transliterated names of one language file, one per line, duplicates kept.

    Raises DataError naming the file (and line or byte offset) for a file that is empty, is
    not UTF-8, or has a line with no letters left after transliteration.
    """
    text = read_utf8(path, "names file")
    lines = text.split("\n")
    if lines[-1] == "":                                  # the newline that ends the last line
        lines.pop()
    names = []
    for number, line in enumerate(lines, start=1):
        ascii_name = transliterate(line)
        if not _LETTERS.intersection(ascii_name):
            raise DataError(f"names file {path}, line {number}: {shorten(line)} has no letters "
                            "A-Z/a-z after transliteration to ASCII")
        names.append(ascii_name)
    return names


SPLITS = ("standard", "disjoint")


def split_disjoint(items: list[tuple[str, int]], fraction: float,
                   rng: random.Random) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(kept, held): items split so that no name is in both, stratified by language.

    Every example of a name goes to the same side. A name listed under several languages
    counts for the language it is listed under most often (the first in label order on a tie);
    for each language in label order, ``round(fraction * k)`` of its k distinct names, at least
    1 and at most k - 1 when k > 1, shuffled by rng, are held out with all their examples.
    """
    labels_of: dict[str, list[int]] = {}
    for name, label in items:
        labels_of.setdefault(name, []).append(label)
    by_label: dict[int, list[str]] = {}
    for name, labels in labels_of.items():
        main = max(sorted(set(labels)), key=labels.count)
        by_label.setdefault(main, []).append(name)
    held_names: set[str] = set()
    for label in sorted(by_label):
        group = sorted(by_label[label])
        rng.shuffle(group)
        k = len(group)
        n_held = min(max(1, round(fraction * k)), k - 1) if k > 1 else 0
        held_names.update(group[:n_held])
    kept = [item for item in items if item[0] not in held_names]
    held = [item for item in items if item[0] in held_names]
    return kept, held


def load_name_lists(folder: str | Path, seed: int = 0, test_fraction: float = 0.1,
                    split: str = "standard") -> Names:
    """Names from every ``*.txt`` in folder (the stem is the language), split per language.

    Languages are sorted; label i is ``languages[i]``. ``split="standard"``: one
    ``random.Random(seed)`` shuffles each language's names in turn (in sorted order) and
    ``round(test_fraction * n)`` of them, at least 1 and at most n - 1, go to test; a surname
    listed twice may land on both sides. ``split="disjoint"``: ``split_disjoint`` with that
    rng, so that no name is both a training and a test name. Examples are grouped by language
    in the standard split's train and test.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = Path(folder)
    try:
        is_dir = folder.is_dir()
    except OSError as e:                 # e.g. a name too long
        raise DataError(f"names folder {folder} cannot be read: {e.strerror or e}") from None
    if not is_dir:
        raise DataError(f"names folder {folder} is not a directory")
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataError(f"names folder {folder} has no *.txt files (one per language)")
    rng = random.Random(seed)
    languages, train, test, every = [], [], [], []
    for label, path in enumerate(files):
        names = read_name_file(path)
        if len(names) < 2:
            raise DataError(f"names file {path} has {len(names)} name; a train/test split "
                            "needs at least 2 per language")
        languages.append(path.stem)
        if split == "disjoint":
            every += [(name, label) for name in names]
            continue
        rng.shuffle(names)
        n_test = min(max(1, round(test_fraction * len(names))), len(names) - 1)
        test += [(name, label) for name in names[:n_test]]
        train += [(name, label) for name in names[n_test:]]
    if split == "disjoint":
        train, test = split_disjoint(every, test_fraction, rng)
    return Names(languages, train, test)


def load_names(data_dir: str | Path | None = None, seed: int = 0,
               test_fraction: float = 0.1, split: str = "standard") -> Names:
    """The registry's names data set (18 languages, 20,074 names); see ``load_name_lists``."""
    return load_name_lists(require("names", data_dir), seed=seed, test_fraction=test_fraction,
                           split=split)
