"""Where data is looked for (data_dir, require), the registry's shape, and fetch: downloads
from file:// URLs, checksums, atomic writes, zip archives. No test touches the network."""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path

import pytest

from lstmkit.data import (
    DATASETS,
    ChecksumError,
    DataError,
    DataFile,
    Dataset,
    MissingDataError,
    data_dir,
    fetch,
    load_names,
    require,
    verify,
)
from lstmkit.data import store as store_module

REAL_DATA = os.environ.get("LSTMKIT_DATA")  # read before the fixture below clears it


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No LSTMKIT_DATA, no ../shared/data and a cache inside tmp_path, so no test sees real
    data by accident."""
    monkeypatch.delenv("LSTMKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(store_module, "_shared_folders", lambda: [])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporary files a download left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_public_api_is_importable():
    import lstmkit.data

    assert all(hasattr(lstmkit.data, name) for name in lstmkit.data.__all__)


# ------------------------------------------------------------------ data_dir
def test_data_dir_prefers_explicit_then_env_then_cache(tmp_path, monkeypatch):
    assert data_dir() == tmp_path / "xdg" / "lstmkit"
    monkeypatch.setenv("LSTMKIT_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_data_dir_cache_without_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "lstmkit"


# ------------------------------------------------------------------ registry
def test_registry_lists_the_six_data_sets():
    assert set(DATASETS) == {"names", "ptb", "tinyshakespeare", "jsb_chorales",
                             "airline_passengers", "sunspots"}
    assert len(DATASETS["names"].files) == 18


@pytest.mark.parametrize("name", list(DATASETS))
def test_registry_entries_are_well_formed(name):
    files = DATASETS[name].files
    assert len({f.name for f in files}) == len(files)
    for f in files:
        assert re.fullmatch(r"[0-9a-f]{64}", f.sha256) and f.size > 0
        assert f.url.startswith("https://")
        if f.url.startswith("https://raw.githubusercontent.com/") and name != "ptb":
            # pinned to the commit its SOURCE.md gives
            assert re.match(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/",
                            f.url), f.url
        if name == "names":
            assert f.member == f"data/names/{f.name}"


# ------------------------------------------------------------------ require
def test_require_finds_the_first_complete_place(tmp_path, monkeypatch):
    env = tmp_path / "env"
    (env / "tinyshakespeare").mkdir(parents=True)
    (env / "tinyshakespeare" / "input.txt").write_text("x")
    monkeypatch.setenv("LSTMKIT_DATA", str(env))
    assert require("tinyshakespeare") == env / "tinyshakespeare"
    # an explicit folder is the only place looked in: no silent fall-through
    with pytest.raises(MissingDataError, match="--data-dir"):
        require("tinyshakespeare", tmp_path / "empty")


def test_require_missing_lists_files_places_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTMKIT_DATA", str(tmp_path / "env"))
    partial = tmp_path / "env" / "ptb"
    partial.mkdir(parents=True)
    (partial / "ptb.train.txt").write_text("a b\n")
    with pytest.raises(MissingDataError) as info:
        require("ptb", tmp_path / "arg")
    assert f"{tmp_path / 'arg' / 'ptb'} (--data-dir): no such folder" in str(info.value)
    with pytest.raises(MissingDataError) as info:
        require("ptb")
    message = str(info.value)
    assert "\n" not in message                      # one line, for the command line
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
    assert f"{partial} (LSTMKIT_DATA): missing ptb.valid.txt, ptb.test.txt" in message
    assert f"{tmp_path / 'xdg' / 'lstmkit' / 'ptb'} (cache): no such folder" in message
    assert "lstmkit data fetch ptb" in message
    assert "--data-dir DIR" in message and "LSTMKIT_DATA=DIR" in message


def test_loader_without_data_raises_missing_data_error():
    with pytest.raises(MissingDataError, match=r"(?s)data set 'names' not found.*cache.*"
                       r"LSTMKIT_DATA is not set.*lstmkit data fetch names"):
        load_names()


def test_require_names_each_place_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTMKIT_DATA", str(tmp_path / "d"))
    with pytest.raises(MissingDataError) as info:
        require("sunspots", tmp_path / "d")
    assert str(info.value).count(str(tmp_path / "d" / "sunspots")) == 1


def test_require_unknown_name():
    with pytest.raises(ValueError, match=r"unknown data set 'mnist'; known: names, ptb"):
        require("mnist")


def test_verify_reports_a_changed_file(tmp_path, monkeypatch):
    content = b"hello\n"
    tiny = Dataset("tiny", "test", (DataFile("a.txt", 6, sha(b"other"), "https://x/a.txt"),))
    monkeypatch.setitem(DATASETS, "tiny", tiny)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "a.txt").write_bytes(content)
    with pytest.raises(ChecksumError, match=rf"a.txt: expected sha256 {sha(b'other')}, "
                       rf"got {sha(content)}"):
        verify("tiny", tmp_path)


# ------------------------------------------------------------------ fetch, plain files
FILES = {"a.txt": b"alpha\n", "b.csv": b"x,y\r\n1,2\r\n"}


@pytest.fixture
def server(tmp_path):
    """A folder standing in for a download server, and its file:// base URL."""
    folder = tmp_path / "server"
    folder.mkdir()
    for name, content in FILES.items():
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture
def tiny(monkeypatch):
    """A registry entry for FILES at made-up https URLs (downloads need a mirror)."""
    files = tuple(DataFile(n, len(c), sha(c), f"https://example.invalid/repo/{n}")
                  for n, c in FILES.items())
    monkeypatch.setitem(DATASETS, "tiny", Dataset("tiny", "test", files))
    return DATASETS["tiny"]


def test_fetch_downloads_and_verifies(tmp_path, server, tiny):
    folder = fetch("tiny", tmp_path / "data", mirror=server.as_uri())
    assert folder == tmp_path / "data" / "tiny"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES
    assert require("tiny", tmp_path / "data") == folder
    assert verify("tiny", tmp_path / "data") == folder


def test_fetched_files_get_the_umask_mode_not_mkstemps(tmp_path, server, tiny):
    old = os.umask(0o022)
    try:
        folder = fetch("tiny", tmp_path / "data", mirror=server.as_uri())
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {"0o644"}


def test_fetch_from_the_registry_url(tmp_path, server, monkeypatch):
    content = FILES["a.txt"]
    url = (server / "a.txt").as_uri()
    monkeypatch.setitem(DATASETS, "one", Dataset("one", "t", (DataFile("a.txt", 6, sha(content),
                                                                        url),)))
    folder = fetch("one")                                   # into the (tmp) cache
    assert folder == tmp_path / "xdg" / "lstmkit" / "one"
    assert (folder / "a.txt").read_bytes() == content


def test_fetch_skips_files_already_present(tmp_path, server, tiny):
    folder = fetch("tiny", tmp_path, mirror=server.as_uri())
    for p in server.iterdir():
        p.unlink()                                          # the server is gone
    stamp = os.stat(folder / "a.txt").st_mtime_ns
    assert fetch("tiny", tmp_path, mirror=server.as_uri()) == folder
    assert os.stat(folder / "a.txt").st_mtime_ns == stamp
    with pytest.raises(DataError, match=r"could not download file://.*a\.txt"):
        fetch("tiny", tmp_path, mirror=server.as_uri(), force=True)
    assert (folder / "a.txt").read_bytes() == FILES["a.txt"]  # the old file is untouched


def test_fetch_replaces_a_corrupted_file(tmp_path, server, tiny):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "a.txt").write_bytes(b"truncated")
    fetch("tiny", tmp_path, mirror=server.as_uri())
    assert (tmp_path / "tiny" / "a.txt").read_bytes() == FILES["a.txt"]


def test_fetch_checksum_mismatch_leaves_no_file(tmp_path, server, tiny):
    tampered = b"tampered\n"
    (server / "b.csv").write_bytes(tampered)
    with pytest.raises(ChecksumError) as info:
        fetch("tiny", tmp_path, mirror=server.as_uri())
    message = str(info.value)
    assert "b.csv" in message and (server / "b.csv").as_uri() in message
    assert f"expected sha256 {sha(FILES['b.csv'])}, got {sha(tampered)}" in message
    assert "not saved" in message
    folder = tmp_path / "tiny"
    assert not (folder / "b.csv").exists() and leftovers(folder) == []


def test_fetch_interrupted_download_leaves_no_file(tmp_path, tiny, monkeypatch):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection reset by peer")
            return super().read(2)

    monkeypatch.setattr(store_module.urllib.request, "urlopen",
                        lambda url, timeout: Broken(b"alpha\n"))
    with pytest.raises(DataError, match=r"could not download https://example.invalid/repo/"
                       r"a\.txt: connection reset by peer"):
        fetch("tiny", tmp_path)
    assert list((tmp_path / "tiny").iterdir()) == []


# ------------------------------------------------------------------ fetch, zip archives
def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in members.items():
            z.writestr(name, content)
    return path


@pytest.fixture
def zipped(monkeypatch):
    files = tuple(DataFile(n, len(c), sha(c), "https://example.invalid/tutorial/data.zip",
                           member=f"data/names/{n}") for n, c in FILES.items())
    monkeypatch.setitem(DATASETS, "zipped", Dataset("zipped", "test", files))


def test_fetch_extracts_members_of_a_zip(tmp_path, server, zipped):
    make_zip(server / "data.zip", {"data/eng-fra.txt": b"other\n",
                                   **{f"data/names/{n}": c for n, c in FILES.items()}})
    folder = fetch("zipped", tmp_path, mirror=server.as_uri())
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES  # no archive left


def test_fetch_zip_member_with_wrong_sum_is_not_kept(tmp_path, server, zipped):
    make_zip(server / "data.zip", {"data/names/a.txt": FILES["a.txt"],
                                   "data/names/b.csv": b"bad"})
    with pytest.raises(ChecksumError, match=r"b\.csv from file://.*data\.zip "
                       r"\(data/names/b\.csv\): expected sha256"):
        fetch("zipped", tmp_path, mirror=server.as_uri())
    assert [p.name for p in (tmp_path / "zipped").iterdir()] == ["a.txt"]


def test_fetch_zip_without_the_member(tmp_path, server, zipped):
    make_zip(server / "data.zip", {"data/names/a.txt": FILES["a.txt"]})
    with pytest.raises(DataError, match=r"data\.zip has no member data/names/b\.csv"):
        fetch("zipped", tmp_path, mirror=server.as_uri())
    assert leftovers(tmp_path / "zipped") == []


def test_fetch_not_a_zip(tmp_path, server, zipped):
    (server / "data.zip").write_bytes(b"<html>moved</html>")
    with pytest.raises(DataError, match=r"data\.zip is not a valid zip archive"):
        fetch("zipped", tmp_path, mirror=server.as_uri())
    assert list((tmp_path / "zipped").iterdir()) == []


def test_fetch_names_from_a_tutorial_style_zip(tmp_path):
    """The real registry entry: the 18 files come out of data/names/ in data.zip, verified."""
    real = REAL_DATA
    if not real or not (Path(real) / "names").is_dir():
        pytest.skip("real data: LSTMKIT_DATA with names/ is needed to build the archive")
    server = tmp_path / "server"
    server.mkdir()
    make_zip(server / "data.zip", {f"data/names/{p.name}": p.read_bytes()
                                   for p in (Path(real) / "names").glob("*.txt")})
    folder = fetch("names", tmp_path / "data", mirror=server.as_uri())
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in
                                                              DATASETS["names"].files)
    names = load_names(tmp_path / "data")
    assert len(names.train) + len(names.test) == 20_074
