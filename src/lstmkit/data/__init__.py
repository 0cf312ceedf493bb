"""Data for lstmkit: the registry's real data sets (names, Penn Treebank, Tiny Shakespeare, JSB
Chorales, airline passengers, sunspots), loaders for any file laid out like them, and tasks
generated in code.

Real data is found by ``require`` in ``--data-dir``, ``$LSTMKIT_DATA``, ``../shared/data`` or the
user cache, and downloaded with checksums by ``fetch`` (``lstmkit data fetch NAME``).
"""

from .errors import ChecksumError, DataError, MissingDataError
from .jsb import load_jsb, load_piano_rolls
from .names import (
    ALPHABET,
    Names,
    encode_name,
    load_name_lists,
    load_names,
    romanize,
    transliterate,
)
from .ptb import WordCorpus, load_ptb, load_word_corpus
from .registry import DATASETS, DataFile, Dataset
from .series import Series, load_series
from .store import ENV_VAR, data_dir, dataset, fetch, locate, obtain, require, sha256_file, verify
from .synthetic import (
    ADDING_BASELINE_MSE,
    adding_problem,
    copy_task,
    copy_task_baseline,
    toy_sequences,
)
from .text import CharCorpus, load_text

__all__ = [
    "DataError", "MissingDataError", "ChecksumError",
    "DATASETS", "Dataset", "DataFile", "ENV_VAR",
    "data_dir", "dataset", "require", "locate", "obtain", "fetch", "verify", "sha256_file",
    "ALPHABET", "Names", "transliterate", "romanize", "encode_name", "load_names",
    "load_name_lists",
    "WordCorpus", "load_ptb", "load_word_corpus",
    "CharCorpus", "load_text",
    "Series", "load_series",
    "load_jsb", "load_piano_rolls",
    "adding_problem", "copy_task", "copy_task_baseline", "toy_sequences", "ADDING_BASELINE_MSE",
]
