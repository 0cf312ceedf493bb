"""Reading and writing a run folder: atomic files, safetensors + JSON only, nothing pickled.

A run folder holds ``config.json``, ``model.safetensors``, ``metrics.jsonl``, PNG plots, and
``checkpoint/``: numbered ``ckpt-<step>.safetensors`` (model, optimizer and RNG tensors) with
``ckpt-<step>.json`` (everything else), and ``latest.json`` naming the newest complete pair.
Every file is written to a temporary name in the same folder, flushed to disk and renamed over
the old one, so a kill at any moment leaves the previous complete file readable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .data.files import temporary_file


class RunError(ValueError):
    """A run folder or one of its files is missing or unreadable."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)      # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors as one safetensors file. Tensors that share memory (tied weights: a
    decoder that is the embedding) are each written as their own copy; safetensors refuses
    shared storage, and loading the same values into both names restores the tie."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        v = v.detach().contiguous().cpu()
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if v.numel() and ptr in seen else v
        seen.add(ptr)
    atomic_write_bytes(path, save(out))


def _not_a_file(path: Path) -> str:
    if not path.exists():
        return f"{path} does not exist"
    if path.is_dir():
        return f"{path} is a directory, not a file"
    return f"{path} is a special file (a FIFO, device or socket), not a regular file"


def read_json(path: str | Path) -> dict:
    """The parsed JSON of a file; RunError if it is missing, not a regular file (a FIFO would
    block), not UTF-8 or not JSON."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path} does not exist; is {path.parent} a run folder made by "
                       "`lstmkit train ... --out DIR`?")
    if not path.is_file():
        raise RunError(_not_a_file(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:   # ValueError: also JSONDecodeError
        hint = ("; it starts with a UTF-16 byte-order mark, lstmkit writes UTF-8"
                if isinstance(e, UnicodeDecodeError) and e.object[:2] in (b"\xff\xfe", b"\xfe\xff")
                else "")
        raise RunError(f"{path} is not readable JSON ({e}{hint})") from None
    except RecursionError:
        raise RunError(f"{path} is not readable JSON (nested too deeply)") from None


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (never unpickled); RunError if it is missing, not a
    regular file, or not a complete safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise RunError(_not_a_file(path))
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path} is not a readable safetensors file ({e})") from None


def check_state(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], where) -> None:
    """RunError naming every entry of tensors that is missing, extra or of another shape or
    dtype than in the state_dict own (whose tensors may live on the meta device)."""
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    wrong = [f"{k}: expected {tuple(own[k].shape)} {own[k].dtype}, got "
             f"{tuple(tensors[k].shape)} {tensors[k].dtype}"
             for k in sorted(set(own) & set(tensors))
             if own[k].shape != tensors[k].shape or own[k].dtype != tensors[k].dtype]
    if missing or extra or wrong:
        problems = ([f"missing {_names(missing)}"] if missing else []) + \
            ([f"unexpected {_names(extra)}"] if extra else []) + wrong[:5] + \
            ([f"{len(wrong) - 5} more of another shape or dtype"] if len(wrong) > 5 else [])
        raise RunError(f"{where} does not match the model of its config.json: "
                       + "; ".join(problems))


def _names(keys: list[str], shown: int = 8) -> str:
    """Some tensor names for a message: a hostile file may hold millions."""
    text = ", ".join(repr(k)[1:-1][:80] for k in keys[:shown])
    return text + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where) -> None:
    """Copy tensors into module's state_dict, naming every missing, extra or misshapen entry."""
    check_state(module.state_dict(), tensors, where)
    module.load_state_dict(tensors)


# ------------------------------------------------------------------ optimizer state
def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer's state_dict into tensors (for safetensors) and plain JSON."""
    sd = optimizer.state_dict()
    tensors, state_json = {}, {}
    for idx, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                state_json.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": state_json}


# state every parameter with any state must have, for the optimizers lstmkit makes
_OPTIMIZER_STATE = {torch.optim.Adam: {"step", "exp_avg", "exp_avg_sq"}}


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Load what optimizer_to_files wrote into optimizer (see check_optimizer_files)."""
    state = check_optimizer_files(optimizer, tensors, meta)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def check_optimizer_files(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict,
                          where="the checkpoint's optimizer state") -> dict[int, dict]:
    """The optimizer state_dict's "state" from optimizer_to_files' output, or RunError (naming
    the entry) for state that does not fit optimizer: a parameter index out of range, a tensor
    of another shape or dtype than its parameter, state missing, a parameter group of other
    keys or kinds of values. optimizer's parameters may live on the meta device."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if not name.startswith("optimizer."):
            continue
        match = re.fullmatch(r"optimizer\.([0-9]{1,9})\.(\w+)", name)
        if not match or int(match[1]) >= len(params):
            raise RunError(f"{where}: tensor {name[:80]!r} names no parameter of the model "
                           f"(expected optimizer.<0..{len(params) - 1}>.<name>)")
        p = params[int(match[1])]
        if value.dtype != p.dtype or value.dim() and value.shape != p.shape:
            raise RunError(f"{where}: {name} is {tuple(value.shape)} {value.dtype}, expected "
                           f"{tuple(p.shape)} {p.dtype} like its parameter (or a scalar)")
        state.setdefault(int(match[1]), {})[match[2]] = value
    if not isinstance(meta.get("state"), dict) or not isinstance(meta.get("param_groups"), list):
        raise RunError(f"{where}: expected an object with 'state' and 'param_groups'")
    for idx, entries in meta["state"].items():
        if not re.fullmatch(r"[0-9]{1,9}", idx) or int(idx) >= len(params) or \
                not isinstance(entries, dict) or \
                not all(v is None or _is_finite_number(v) for v in entries.values()):
            raise RunError(f"{where}: entry {idx[:80]!r} is not the plain state of a parameter")
        state.setdefault(int(idx), {}).update(entries)
    required = _OPTIMIZER_STATE.get(type(optimizer), set())
    keys = {frozenset(entries) for entries in state.values()}
    if len(keys) > 1 or keys and not required <= set(next(iter(keys))):
        raise RunError(f"{where}: parameters hold different state or lack some of "
                       f"{', '.join(sorted(required))}")
    _check_param_groups(optimizer.state_dict()["param_groups"], meta["param_groups"], where)
    return state


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _check_param_groups(own: list[dict], saved: list, where: str) -> None:
    """saved (from JSON) must have own's groups, keys, parameters and kinds of values."""
    if len(saved) != len(own) or not all(isinstance(g, dict) for g in saved):
        raise RunError(f"{where}: expected {len(own)} parameter group(s)")
    for i, (mine, theirs) in enumerate(zip(own, saved)):
        if set(theirs) != set(mine) or theirs["params"] != mine["params"]:
            raise RunError(f"{where}: parameter group {i} has other keys or parameters than "
                           "the optimizer of its config.json")
        for key, value in mine.items():
            got = theirs[key]
            if isinstance(value, bool) or value is None:
                ok = got is None or isinstance(got, bool)
            elif isinstance(value, (tuple, list)):
                ok = isinstance(got, list) and len(got) == len(value) and \
                    all(_is_finite_number(v) for v in got)
            else:
                ok = _is_finite_number(got)
            if not ok:
                raise RunError(f"{where}: parameter group {i}: {key} is {str(got)[:40]!r}, "
                               f"not like {value!r}")


# ------------------------------------------------------------------ checkpoints
@dataclass
class TrainState:
    """Where a run is: everything besides tensors that a checkpoint restores (the trainer's
    state, train.py)."""

    epoch: int = 0                   # epochs completed
    batch_in_epoch: int = 0          # batches of the current epoch already trained on
    step: int = 0                    # optimiser steps so far
    lr_scale: float = 1.0            # plateau halvings
    best_valid: float = math.inf
    best_metrics: dict = field(default_factory=dict)
    bad_epochs: int = 0              # epochs since validation last improved
    skipped: int = 0                 # steps whose loss or gradient was not finite
    records: int = 0                 # lines in metrics.jsonl
    loss_sum: float = 0.0            # this epoch's training losses so far, and their number
    loss_count: int = 0
    bad_in_row: int = 0              # ... of them in a row, up to now
    train_seconds: float = 0.0
    python_random: list = field(default_factory=list)


def save_checkpoint(run_dir: str | Path, step: int, tensors: dict, meta: dict,
                    keep: int = 2) -> None:
    """Write checkpoint `step` (tensors + JSON), then point latest.json at it, then drop all but
    the newest `keep` checkpoints."""
    folder = Path(run_dir) / "checkpoint"
    name = f"ckpt-{step:09d}"
    atomic_save_tensors(folder / f"{name}.safetensors", tensors)
    atomic_write_json(folder / f"{name}.json", meta)
    atomic_write_json(folder / "latest.json", {"name": name, "step": step})
    stale = sorted(p for p in folder.glob("ckpt-*.json") if p.stem != name)[:-(keep - 1) or None]
    for p in stale:
        p.with_suffix(".safetensors").unlink(missing_ok=True)
        p.unlink(missing_ok=True)


def load_checkpoint(run_dir: str | Path) -> tuple[dict, dict]:
    """(tensors, meta) of the newest complete checkpoint of a run folder.

    Raises RunError unless latest.json names a checkpoint (``ckpt-<digits>``) whose files hold
    the trainer's state, an optimizer state, and the random-number states lstmkit writes.
    """
    folder = Path(run_dir) / "checkpoint"
    return _load_checkpoint_files(folder, _latest_name(folder))


def _latest_name(folder: Path) -> str:
    latest = read_json(folder / "latest.json")
    name = latest.get("name") if isinstance(latest, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"ckpt-[0-9]{1,18}", name):
        raise RunError(f"{folder / 'latest.json'} names no checkpoint (expected an object with "
                       "\"name\": \"ckpt-<step>\")")
    return name


def load_intact_checkpoint(run_dir: str | Path) -> tuple[dict, dict, str]:
    """(tensors, meta, note) of the checkpoint latest.json names, or, when its files cannot be
    read (truncated by a full disk, say), of the newest older checkpoint that can; note says
    which was passed over and why ("" when none was). Raises load_checkpoint's RunError when
    latest.json itself is unreadable or no checkpoint is intact."""
    folder = Path(run_dir) / "checkpoint"
    name = _latest_name(folder)
    try:
        return (*_load_checkpoint_files(folder, name), "")
    except RunError as damaged:
        older = sorted((p.stem for p in folder.glob("ckpt-*.json")
                        if re.fullmatch(r"ckpt-[0-9]{1,18}", p.stem) and p.stem < name),
                       reverse=True)
        for other in older:
            try:
                tensors, meta = _load_checkpoint_files(folder, other)
            except RunError:
                continue
            return tensors, meta, (f"checkpoint {name} cannot be read ({damaged}); using the "
                                   f"newest intact one, {other}, instead")
        raise


def _load_checkpoint_files(folder: Path, name: str) -> tuple[dict, dict]:
    tensors = read_tensors(folder / f"{name}.safetensors")
    meta = read_json(folder / f"{name}.json")
    where = folder / f"{name}.json"
    if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict) or \
            not isinstance(meta.get("optimizer"), dict):
        raise RunError(f"{where}: expected an object with \"state\" and \"optimizer\" objects")
    _check_train_state(meta["state"], where)
    _check_rng(tensors.get("rng.torch"), folder / f"{name}.safetensors")
    carry = sorted(k for k in tensors if k.startswith("carry."))
    if carry and (carry != [f"carry.{i}" for i in range(len(carry))] or
                  any(tensors[k].dtype not in (torch.float32, torch.bfloat16) for k in carry)):
        raise RunError(f"{folder / f'{name}.safetensors'}: the carried state {_names(carry)} "
                       "is not carry.0, carry.1, ... of float32 or bfloat16")
    return tensors, meta


def _check_rng(state, where) -> None:
    """state must be a CPU generator state torch accepts; tried, then the old one put back."""
    if not isinstance(state, torch.Tensor):
        raise RunError(f"{where} has no rng.torch (the random-number state)")
    saved = torch.get_rng_state()
    try:
        torch.set_rng_state(state)
    except (TypeError, RuntimeError, ValueError) as e:
        raise RunError(f"{where}: rng.torch is not a random-number state ({e})") from None
    finally:
        torch.set_rng_state(saved)


def _check_train_state(state: dict, where) -> None:
    """The trainer's state: TrainState's fields with their types, counts >= 0, and a Python
    random state that random.setstate accepts."""
    hints = typing.get_type_hints(TrainState)
    names = {f.name for f in dataclasses.fields(TrainState)}
    for key, value in state.items():
        hint = hints.get(key) if key in names else None
        ok = {int: isinstance(value, int) and not isinstance(value, bool) and value >= 0,
              float: isinstance(value, (int, float)) and not isinstance(value, bool),
              dict: isinstance(value, dict), list: isinstance(value, list)}.get(hint, False)
        if not ok:
            kind = {int: "an integer >= 0", float: "a number", dict: "an object",
                    list: "a list"}.get(hint, "a field of the trainer state")
            raise RunError(f"{where}: state entry {key[:40]!r} is {str(value)[:40]!r}, not "
                           f"{kind}")
    try:
        random.Random().setstate((3, tuple(state.get("python_random", [])), None))
    except (TypeError, ValueError, OverflowError):
        raise RunError(f"{where}: python_random is not a Python random state") from None
