"""Damaged and hostile run folders: every command that reads one (evaluate, predict, sample,
forecast, export, train --resume) ends in one line on stderr and exit code 2, unpickles and runs
nothing, and writes nothing (inside the run folder or out of it). SECURITY.md lists these
tests."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from cli_harness import assert_one_line_error, run_in, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save

from lstmkit.data import DATASETS

RUN = "run"
TINY = ("--epochs", 1, "--max-steps", 2, "--hidden", 8)
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------- the runs to damage
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """One small trained run folder per task that the read-a-run commands take."""
    root = tmp_path_factory.mktemp("base")
    (root / "text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 20)
    (root / "series.csv").write_text("t,v\n" + "".join(f"{i},{100 + 10 * math.sin(i)}\n"
                                                        for i in range(40)))
    names = root / "data" / "names"
    names.mkdir(parents=True)
    for k, f in enumerate(DATASETS["names"].files):
        names.joinpath(f.name).write_text("".join(f"Name{chr(97 + k)}{chr(97 + i)}\n"
                                                  for i in range(4)))
    commands = {
        "adding": ("adding", "--length", 5, "--steps-per-epoch", 2, "--batch-size", 4),
        "chars": ("chars", "--path", root / "text.txt", "--embed", 4, "--layers", 1,
                  "--batch-size", 2, "--bptt", 5),
        "forecast": ("forecast", "--path", root / "series.csv", "--window", 4, "--horizon", 3,
                     "--difference", 0),
        "names": ("names", "--data-dir", root / "data", "--embed", 4, "--layers", 1),
    }
    runs = {}
    for task, args in commands.items():
        result = run_in(root, task, "train", *args, "--out", root / task, *TINY)
        assert result.code == 0, result.err
        runs[task] = root / task
    return runs


# the read-a-run commands, each on a run of its task
COMMANDS = {
    "evaluate": ("adding", ["evaluate", RUN]),
    "evaluate-chars": ("chars", ["evaluate", RUN]),
    "predict": ("names", ["predict", RUN, "Smith"]),
    "sample": ("chars", ["sample", RUN, "--length", 5]),
    "forecast": ("forecast", ["forecast", RUN, "--horizon", 2]),
    "export": ("chars", ["export", RUN]),
    "report": ("names", ["report", RUN]),
}


def workspace_with(base, tmp_path, task) -> Path:
    """A working directory holding a copy of the task's run as ./run."""
    shutil.copytree(base[task], tmp_path / RUN, symlinks=True)
    return tmp_path


def run_damaged(workspace: Path, *args):
    """The command in workspace; if it fails, the run folder must be left as it was."""
    before = tree(workspace / RUN)
    result = run_in(workspace, RUN, *args)
    if result.code != 0:
        assert tree(workspace / RUN) == before, "a failed command changed the run folder"
    return result


@pytest.mark.parametrize("command", COMMANDS)
def test_undamaged_runs_work(base, tmp_path, command):
    task, args = COMMANDS[command]
    result = run_in(workspace_with(base, tmp_path, task), RUN, *args)
    assert result.code == 0, result.err
    assert result.out.strip()


# ---------------------------------------------------------------------- model.safetensors
class Unpickled:
    """Unpickling this creates the folder `marker`: proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def resaved(data: bytes, change) -> bytes:
    tensors = load_file_bytes(data)
    change(tensors)
    return save(tensors)


def load_file_bytes(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return dict(load(data))


def first_weight(tensors):
    return next(k for k, v in tensors.items() if v.dim() == 2)


MODEL_DAMAGE = {
    # name: (bytes from the good file's bytes, a fragment of the message)
    "empty": (lambda d: b"", "not a readable safetensors file"),
    "truncated-in-length": (lambda d: d[:5], "not a readable safetensors file"),
    "truncated-in-header": (lambda d: d[:8 + header_length(d) // 2],
                            "not a readable safetensors file"),
    "truncated-in-data": (lambda d: d[:-7], "not a readable safetensors file"),
    "oversized-header": (lambda d: struct.pack("<Q", 2**63) + d[8:], "header too large"),
    "header-past-end": (lambda d: struct.pack("<Q", len(d)) + d[8:],
                        "not a readable safetensors file"),
    "header-not-json": (lambda d: d[:8] + b"[" * header_length(d) + d[8 + header_length(d):],
                        "invalid JSON in header"),
    "huge-shape-claim": (lambda d: (lambda h: struct.pack("<Q", len(h)) + h + b"\0" * 8)(
        json.dumps({"w": {"dtype": "F32", "shape": [2**40, 2**40],
                          "data_offsets": [0, 8]}}).encode()), "not a readable safetensors"),
    "random-bytes": (lambda d: bytes((i * 7919 + 13) % 256 for i in range(4096)),
                     "not a readable safetensors file"),
    "text": (lambda d: b"model weights go here\n", "not a readable safetensors file"),
    "wrong-shape": (lambda d: resaved(d, lambda t: t.update(
        {first_weight(t): t[first_weight(t)].t()[:, :-1].contiguous()})),
        "does not match the model of its config.json"),
    "wrong-dtype-float64": (lambda d: resaved(d, lambda t: t.update(
        {first_weight(t): t[first_weight(t)].double()})), "torch.float64"),
    "wrong-dtype-int8": (lambda d: resaved(d, lambda t: t.update(
        {first_weight(t): t[first_weight(t)].to(torch.int8)})), "torch.int8"),
    "missing-tensor": (lambda d: resaved(d, lambda t: t.pop(first_weight(t))), "missing"),
    "extra-tensor": (lambda d: resaved(d, lambda t: t.update(extra=torch.zeros(3))),
                     "unexpected extra"),
    "nan-weights": (lambda d: resaved(d, lambda t: t[first_weight(t)].fill_(math.nan)),
                    "holds NaN or infinite values"),
    "other-model": (lambda d: save({"weight": torch.zeros(2, 2)}), "does not match"),
}


@pytest.mark.parametrize("damage", MODEL_DAMAGE)
@pytest.mark.parametrize("command", COMMANDS)
def test_damaged_model_file(base, tmp_path, command, damage):
    task, args = COMMANDS[command]
    ws = workspace_with(base, tmp_path, task)
    make, fragment = MODEL_DAMAGE[damage]
    model = ws / RUN / "model.safetensors"
    model.write_bytes(make(model.read_bytes()))
    assert_one_line_error(run_damaged(ws, *args), "model.safetensors", fragment)


MODEL_PLACE = {
    "missing": (lambda p: p.unlink(), "does not exist"),
    "directory": (lambda p: (p.unlink(), p.mkdir(), (p / "x").write_text("x")),
                  "is a directory, not a file"),
    "fifo": (lambda p: (p.unlink(), os.mkfifo(p)), "is a special file"),
    "symlink-to-dev-zero": (lambda p: (p.unlink(), p.symlink_to("/dev/zero")),
                            "is a special file"),
}


@pytest.mark.parametrize("place", MODEL_PLACE)
@pytest.mark.parametrize("command", COMMANDS)
def test_model_file_that_is_not_a_file(base, tmp_path, command, place):
    task, args = COMMANDS[command]
    ws = workspace_with(base, tmp_path, task)
    make, fragment = MODEL_PLACE[place]
    make(ws / RUN / "model.safetensors")
    assert_one_line_error(run_damaged(ws, *args), "model.safetensors", fragment)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickled_model_file_is_never_unpickled(base, tmp_path, writer):
    ws = workspace_with(base, tmp_path, "adding")
    marker = tmp_path / "unpickled"
    model = ws / RUN / "model.safetensors"
    if writer == "pickle":
        model.write_bytes(pickle.dumps(Unpickled(marker)))
    else:
        torch.save({"weight": Unpickled(marker)}, model)
    ckpt = next((ws / RUN / "checkpoint").glob("ckpt-*.safetensors"))
    shutil.copy(model, ckpt)
    assert_one_line_error(run_damaged(ws, "evaluate", RUN), "not a readable safetensors file")
    assert_one_line_error(run_damaged(ws, "train", "adding", "--out", RUN, "--resume"),
                          "not a readable safetensors file")
    assert not marker.exists()
    pickle.loads(pickle.dumps(Unpickled(marker)))      # the payload is live when unpickled
    assert marker.is_dir()


def test_source_has_no_unpickling_or_eval():
    # model files are safetensors + JSON: no loader that can run code may appear in lstmkit
    import re

    import lstmkit

    risky = re.compile(r"\btorch\.load\b|\b(pickle|cPickle|marshal|shelve|dill|joblib)\b|"
                       r"(?<![.\w])(eval|exec)\(|\bweights_only\b")
    root = Path(lstmkit.__file__).parent
    hits = [f"{path.relative_to(root)}:{number}: {line.strip()}"
            for path in sorted(root.rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if risky.search(line)]
    assert not hits, hits
    assert risky.search("state = torch.load(path)") and risky.search("import pickle")


def test_config_asking_for_a_huge_model_allocates_nothing(base, tmp_path):
    # 10^6 hidden units: 16 TB of weights. The shapes are compared on the meta device first.
    ws = workspace_with(base, tmp_path, "names")
    config = json.loads((ws / RUN / "config.json").read_text())
    (ws / RUN / "config.json").write_text(json.dumps({**config, "hidden": 10**6}))
    for args in (["predict", RUN, "Smith"], ["train", "names", "--out", RUN, "--resume"]):
        assert_one_line_error(run_damaged(ws, *args), "does not match the model of its "
                              "config.json", "out.weight: expected (18, 2000000)")


@FUZZ
@given(data=st.one_of(st.binary(max_size=512),
                      st.builds(lambda h, rest: struct.pack("<Q", len(h)) + h + rest,
                                st.binary(max_size=200), st.binary(max_size=64)),
                      st.builds(lambda h, rest: struct.pack("<Q", len(h)) + h + rest,
                                st.recursive(st.none() | st.integers() | st.text(max_size=5),
                                             lambda c: st.lists(c, max_size=3)
                                             | st.dictionaries(st.text(max_size=5), c,
                                                               max_size=3),
                                             max_leaves=8).map(lambda v: json.dumps(v)
                                                               .encode()),
                                st.binary(max_size=64))))
def test_random_bytes_as_model_file(base, tmp_path_factory, data):
    ws = workspace_with(base, tmp_path_factory.mktemp("ws"), "adding")
    (ws / RUN / "model.safetensors").write_bytes(data)
    assert_one_line_error(run_damaged(ws, "evaluate", RUN), "model.safetensors")


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1,
                      max_size=4))
def test_flipped_bytes_in_model_file(base, tmp_path_factory, flips):
    ws = workspace_with(base, tmp_path_factory.mktemp("ws"), "chars")
    model = ws / RUN / "model.safetensors"
    data = bytearray(model.read_bytes())
    for where, mask in flips:
        data[where % len(data)] ^= mask
    model.write_bytes(bytes(data))
    result = run_damaged(ws, "sample", RUN, "--length", 5)
    if result.code != 0:           # a flip among the weights leaves a valid file
        assert_one_line_error(result, "model.safetensors")


# ---------------------------------------------------------------------- config.json
def edit(**fields):
    """config.json with fields replaced (None: removed)."""
    def change(config):
        for key, value in fields.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        return json.dumps(config).encode()
    return change


def edit_meta(**entries):
    def change(config):
        meta = dict(config["meta"])
        for key, value in entries.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        return edit(meta=meta)(config)
    return change


CONFIG_DAMAGE = {
    # name: (task, new bytes from the parsed good config, a fragment of the message)
    "empty": ("adding", lambda c: b"", "is not readable JSON"),
    "not-json": ("adding", lambda c: b"{task: adding}", "is not readable JSON"),
    "binary": ("adding", lambda c: bytes(range(256)), "is not readable JSON"),
    "utf-16": ("adding", lambda c: json.dumps(c).encode("utf-16"), "is not readable JSON"),
    "latin-1": ("adding", lambda c: json.dumps({**c, "path": "caf\u00e9"}, ensure_ascii=False)
                .encode("latin-1"), "is not readable JSON"),
    "nested-too-deeply": ("adding", lambda c: b"[" * 100_000 + b"]" * 100_000,
                          "nested too deeply"),
    "integer-of-10000-digits": ("adding", lambda c: b'{"hidden": ' + b"9" * 10_000 + b"}",
                                "is not readable JSON"),
    "a-list": ("adding", lambda c: b"[1, 2]", "expected a JSON object"),
    "a-string": ("adding", lambda c: b'"adding"', "expected a JSON object"),
    "null": ("adding", lambda c: b"null", "expected a JSON object"),
    "unknown-field": ("adding", edit(hiden=8), "unknown fields 'hiden'"),
    "no-task": ("adding", edit(task=None), "task must be present"),
    "unknown-task": ("adding", edit(task="dance"), "task must be one of names"),
    "unknown-cell": ("adding", edit(cell="lstn"), "cell must be one of lstm"),
    "unknown-optimizer": ("adding", edit(optimizer="adagrad"), "optimizer must be one of"),
    "unknown-init": ("adding", edit(init="zeros"), "init must be one of"),
    "unknown-engine": ("adding", edit(engine="gpu"), "engine must be one of"),
    "hidden-a-string": ("adding", edit(hidden="8"), "hidden must be an integer, got '8'"),
    "hidden-a-float": ("adding", edit(hidden=8.0), "hidden must be an integer, got 8.0"),
    "hidden-a-bool": ("adding", edit(hidden=True), "hidden must be an integer, got True"),
    "dropout-a-string": ("adding", edit(dropout="0.1"), "dropout must be a number"),
    "bidirectional-an-int": ("adding", edit(bidirectional=1), "bidirectional must be true or"),
    "path-a-number": ("adding", edit(path=5), "path must be a string or null"),
    "hidden-zero": ("adding", edit(hidden=0), "hidden must be at least 1, got 0"),
    "layers-negative": ("adding", edit(layers=-2), "layers must be at least 1"),
    "hidden-beyond-int32": ("adding", edit(hidden=2**40), "hidden must be at most 2147483647"),
    "lr-zero": ("adding", edit(lr=0), "lr must be positive"),
    "lr-nan": ("adding", lambda c: json.dumps({**c, "lr": math.nan}).encode(),
               "lr must be a finite number, got nan"),
    "clip-infinite": ("adding", lambda c: json.dumps({**c, "clip": math.inf}).encode(),
                      "clip must be a finite number"),
    "dropout-one": ("adding", edit(dropout=1), "dropout must be in [0, 1)"),
    "threads-a-million": ("adding", edit(threads=10**6), "threads must be at most 1024"),
    "meta-a-list": ("adding", edit(meta=[]), "meta must be an object, got []"),
    "names-meta-missing": ("names", edit(meta=None), "meta.languages must be present"),
    "names-languages-missing": ("names", edit_meta(languages=None),
                                "meta.languages must be present"),
    "names-languages-a-number": ("names", edit_meta(languages=5),
                                 "meta.languages must be a non-empty list of strings"),
    "names-languages-empty": ("names", edit_meta(languages=[]), "meta.languages must be"),
    "names-languages-of-numbers": ("names", edit_meta(languages=[1, 2]), "meta.languages"),
    "names-fewer-languages": ("names", lambda c: edit_meta(languages=c["meta"]["languages"][:3])
                              (c), "does not match the model of its config.json"),
    "chars-vocab-missing": ("chars", edit_meta(vocab=None), "meta.vocab must be present"),
    "chars-vocab-a-string": ("chars", edit_meta(vocab="abc"), "meta.vocab must be a non-empty"),
    "chars-vocab-of-lists": ("chars", edit_meta(vocab=[["a"]]), "meta.vocab"),
    "forecast-transform-missing": ("forecast", edit_meta(transform=None),
                                   "meta.transform must be present"),
    "forecast-transform-extra-key": ("forecast", lambda c: edit_meta(
        transform={**c["meta"]["transform"], "scale": 2})(c), "meta.transform must be an "
        "object with keys difference, log, mean, std"),
    "forecast-difference-a-string": ("forecast", lambda c: edit_meta(
        transform={**c["meta"]["transform"], "difference": "12"})(c),
        "meta.transform.difference must be an integer"),
    "forecast-std-zero": ("forecast", lambda c: edit_meta(
        transform={**c["meta"]["transform"], "std": 0})(c), "meta.transform.std must be"),
    "forecast-residual-std-a-string": ("forecast", edit_meta(residual_std="wide"),
                                       "meta.residual_std must be a finite number"),
    "tie-with-embed-not-hidden": ("chars", edit(tie=True), "cannot rebuild the model"),
}


def command_for(task: str) -> list:
    return {"adding": ["evaluate", RUN], "names": ["predict", RUN, "Smith"],
            "chars": ["sample", RUN, "--length", 5],
            "forecast": ["forecast", RUN, "--horizon", 2]}[task]


@pytest.mark.parametrize("damage", CONFIG_DAMAGE)
def test_damaged_config(base, tmp_path, damage):
    task, make, fragment = CONFIG_DAMAGE[damage]
    ws = workspace_with(base, tmp_path, task)
    config = ws / RUN / "config.json"
    config.write_bytes(make(json.loads(config.read_text())))
    line = assert_one_line_error(run_damaged(ws, *command_for(task)), "config.json", fragment)
    assert len(line) < 400
    if task == "adding":        # train --resume reads the same file
        assert_one_line_error(run_damaged(ws, "train", "adding", "--out", RUN, "--resume"),
                              "config.json", fragment)


CONFIG_PLACE = {
    "missing": (lambda p: p.unlink(), "does not exist"),
    "directory": (lambda p: (p.unlink(), p.mkdir()), "is a directory, not a file"),
    "fifo": (lambda p: (p.unlink(), os.mkfifo(p)), "is a special file"),
    "symlink-to-dev-zero": (lambda p: (p.unlink(), p.symlink_to("/dev/zero")),
                            "is a special file"),
}


@pytest.mark.parametrize("place", CONFIG_PLACE)
def test_config_that_is_not_a_file(base, tmp_path, place):
    # a FIFO or /dev/zero would block or never end if read
    ws = workspace_with(base, tmp_path, "chars")
    make, fragment = CONFIG_PLACE[place]
    make(ws / RUN / "config.json")
    assert_one_line_error(run_damaged(ws, "sample", RUN), "config.json", fragment)


def test_line_breaks_in_a_path_still_give_one_line(base, tmp_path):
    ws = workspace_with(base, tmp_path, "forecast")
    config = ws / RUN / "config.json"
    config.write_bytes(edit(path="no\nsuch\r\n.csv")(json.loads(config.read_text())))
    assert_one_line_error(run_damaged(ws, "forecast", RUN, "--horizon", 2),
                          "CSV file no such .csv does not exist")


def test_unfinished_forecast_run(base, tmp_path):
    ws = workspace_with(base, tmp_path, "forecast")
    config = ws / RUN / "config.json"
    config.write_bytes(edit_meta(residual_std=None)(json.loads(config.read_text())))
    assert_one_line_error(run_damaged(ws, "forecast", RUN, "--horizon", 2),
                          "unfinished forecast run", "--resume")


@pytest.mark.parametrize("args, fragment", [
    (["predict", RUN, "Smith", "--top", -1], "--top must be at least 1"),
    (["sample", RUN, "--temperature", 0], "temperature must be positive"),
    (["sample", RUN, "--length", 0], "--length must be at least 1"),
])
def test_bad_options_of_read_a_run_commands(base, tmp_path, args, fragment):
    ws = workspace_with(base, tmp_path, "names" if args[0] == "predict" else "chars")
    assert_one_line_error(run_damaged(ws, *args), fragment)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
    | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6)


@FUZZ
@given(task=st.sampled_from(["names", "chars", "forecast"]), data=st.data())
def test_random_values_in_config(base, tmp_path_factory, task, data):
    ws = workspace_with(base, tmp_path_factory.mktemp("ws"), task)
    config_path = ws / RUN / "config.json"
    config = json.loads(config_path.read_text())
    key = data.draw(st.sampled_from(sorted(config)), label="field")
    config[key] = data.draw(json_values, label="value")
    config_path.write_text(json.dumps(config))
    result = run_damaged(ws, *command_for(task))
    if result.code != 0:          # e.g. a new seed or data_dir: still a valid run
        assert_one_line_error(result)


@FUZZ
@given(task=st.sampled_from(["names", "chars", "forecast"]), data=st.data())
def test_random_meta_in_config(base, tmp_path_factory, task, data):
    ws = workspace_with(base, tmp_path_factory.mktemp("ws"), task)
    config_path = ws / RUN / "config.json"
    config = json.loads(config_path.read_text())
    key = data.draw(st.sampled_from(sorted(config["meta"]) + ["transform", "vocab"]))
    config["meta"][key] = data.draw(json_values, label="value")
    config_path.write_text(json.dumps(config))
    result = run_damaged(ws, *command_for(task))
    if result.code != 0:
        assert_one_line_error(result)


# ---------------------------------------------------------------------- train --resume
def checkpoint_files(run: Path) -> tuple[Path, Path]:
    name = json.loads((run / "checkpoint" / "latest.json").read_text())["name"]
    return run / "checkpoint" / f"{name}.safetensors", run / "checkpoint" / f"{name}.json"


def change_tensors(change):
    def damage(run):
        path = checkpoint_files(run)[0]
        tensors = load_file(path)
        change(tensors)
        path.write_bytes(save(tensors))
    return damage


def change_meta(change):
    def damage(run):
        path = checkpoint_files(run)[1]
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))
    return damage


def first_model_weight(t):
    return next(k for k, v in t.items() if k.startswith("model.") and v.dim() == 2)


RESUME_DAMAGE = {
    # name: (task, damage(run folder), fragment of the message)
    "checkpoint-truncated": ("adding", lambda r: checkpoint_files(r)[0].write_bytes(
        checkpoint_files(r)[0].read_bytes()[:100]), "not a readable safetensors file"),
    "checkpoint-oversized-header": ("adding", lambda r: checkpoint_files(r)[0].write_bytes(
        struct.pack("<Q", 2**60) + checkpoint_files(r)[0].read_bytes()[8:]),
        "header too large"),
    "checkpoint-not-safetensors": ("adding", lambda r: checkpoint_files(r)[0].write_bytes(
        b"PK\x03\x04" + bytes(200)), "not a readable safetensors file"),
    "checkpoint-a-directory": ("adding", lambda r: (checkpoint_files(r)[0].unlink(),
                                                    checkpoint_files(r)[0].mkdir()),
                               "is a directory, not a file"),
    "checkpoint-missing": ("adding", lambda r: checkpoint_files(r)[0].unlink(),
                           "does not exist"),
    "model-wrong-shape": ("adding", change_tensors(lambda t: t.update(
        {first_model_weight(t): torch.zeros(3, 3)})), "does not match the model"),
    "model-wrong-dtype": ("adding", change_tensors(lambda t: t.update(
        {first_model_weight(t): t[first_model_weight(t)].half()})), "torch.float16"),
    "model-tensors-missing": ("adding", change_tensors(lambda t: [
        t.pop(k) for k in list(t) if k.startswith("model.")]), "missing"),
    "optimizer-wrong-shape": ("adding", change_tensors(lambda t: t.update(
        {"optimizer.0.exp_avg": torch.zeros(1, 1)})), "optimizer.0.exp_avg is (1, 1)"),
    "optimizer-no-such-parameter": ("adding", change_tensors(lambda t: t.update(
        {"optimizer.99.exp_avg": torch.zeros(1)})), "names no parameter"),
    "optimizer-state-missing": ("adding", change_tensors(lambda t: [
        t.pop(k) for k in list(t) if k.endswith(".exp_avg")]), "lack some of"),
    "rng-missing": ("adding", change_tensors(lambda t: t.pop("rng.torch")), "has no rng.torch"),
    "rng-wrong-dtype": ("adding", change_tensors(lambda t: t.update(
        {"rng.torch": t["rng.torch"].float()})), "rng.torch is not a random-number state"),
    "rng-wrong-size": ("adding", change_tensors(lambda t: t.update(
        {"rng.torch": t["rng.torch"][:10]})), "rng.torch is not a random-number state"),
    "latest-a-list": ("adding", lambda r: (r / "checkpoint" / "latest.json").write_text("[]"),
                      "names no checkpoint"),
    "latest-escapes-the-folder": ("adding", lambda r: (r / "checkpoint" / "latest.json")
                                  .write_text('{"name": "ckpt-1/../../../x"}'),
                                  "names no checkpoint"),
    "latest-not-json": ("adding", lambda r: (r / "checkpoint" / "latest.json")
                        .write_bytes(b"\xff\xfe{"), "is not readable JSON"),
    "meta-a-list": ("adding", lambda r: checkpoint_files(r)[1].write_text("[]"),
                    'expected an object with "state" and "optimizer"'),
    "meta-state-missing": ("adding", change_meta(lambda m: m.pop("state")),
                           'expected an object with "state"'),
    "meta-state-wrong-type": ("adding", change_meta(lambda m: m["state"].update(epoch="1")),
                              "state entry 'epoch' is '1', not an integer >= 0"),
    "meta-state-negative-count": ("adding", change_meta(lambda m: m["state"].update(step=-5)),
                                  "state entry 'step'"),
    "meta-state-unknown-entry": ("adding", change_meta(lambda m: m["state"].update(boom=1)),
                                 "not a field of the trainer state"),
    "meta-python-random-bad": ("adding", change_meta(lambda m: m["state"].update(
        python_random=[1, 2, 3])), "python_random is not a Python random state"),
    "meta-param-groups-wrong": ("adding", change_meta(lambda m: m["optimizer"].update(
        param_groups=[{"lr": "fast"}])), "parameter group 0 has other keys"),
    "meta-betas-a-string": ("adding", change_meta(lambda m: m["optimizer"]["param_groups"][0]
                                                  .update(betas="0.9")), "betas"),
    "meta-optimizer-state-junk": ("adding", change_meta(lambda m: m["optimizer"].update(
        state={"x": 1})), "is not the plain state of a parameter"),
    "carry-wrong-count": ("chars", change_tensors(lambda t: t.pop("carry.1")),
                          "the carried state is 1 tensor(s)"),
    "carry-wrong-dtype": ("chars", change_tensors(lambda t: t.update(
        {"carry.0": t["carry.0"].double()})), "is not carry.0, carry.1"),
    "carry-wrong-shape": ("chars", change_tensors(lambda t: t.update(
        {"carry.0": torch.zeros(1, 1, 1)})), "expected 2 of shape (1, 2, 8)"),
    "config-hidden-zero": ("adding", lambda r: (r / "config.json").write_bytes(
        edit(hidden=0)(json.loads((r / "config.json").read_text()))),
        "hidden must be at least 1"),
    "config-huge-hidden": ("adding", lambda r: (r / "config.json").write_bytes(
        edit(hidden=10**6)(json.loads((r / "config.json").read_text()))),
        "does not match the model"),
}


@pytest.mark.parametrize("damage", RESUME_DAMAGE)
def test_resume_on_damaged_folder(base, tmp_path, damage):
    task, make, fragment = RESUME_DAMAGE[damage]
    ws = workspace_with(base, tmp_path, task)
    make(ws / RUN)
    result = run_damaged(ws, "train", task, "--out", RUN, "--resume", "--epochs", 2,
                         "--max-steps", 4)
    assert_one_line_error(result, fragment)


@pytest.mark.parametrize("task", ["adding", "chars"])
def test_resume_of_an_undamaged_folder_trains_on(base, tmp_path, task):
    ws = workspace_with(base, tmp_path, task)
    result = run_in(ws, RUN, "train", task, "--out", RUN, "--resume", "--epochs", 2,
                    "--max-steps", 4)
    assert result.code == 0, result.err
    assert json.loads((ws / RUN / "results.json").read_text())["steps"] == 4


@FUZZ
@given(data=st.binary(max_size=300), which=st.sampled_from(["tensors", "meta", "latest"]))
def test_random_bytes_as_checkpoint(base, tmp_path_factory, data, which):
    ws = workspace_with(base, tmp_path_factory.mktemp("ws"), "adding")
    tensors, meta = checkpoint_files(ws / RUN)
    target = {"tensors": tensors, "meta": meta,
              "latest": ws / RUN / "checkpoint" / "latest.json"}[which]
    target.write_bytes(data)
    result = run_damaged(ws, "train", "adding", "--out", RUN, "--resume")
    assert_one_line_error(result)
