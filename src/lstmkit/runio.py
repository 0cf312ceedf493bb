"""Reading and writing a run folder: atomic files, safetensors + JSON only, nothing pickled.

A run folder holds ``config.json``, ``model.safetensors``, ``metrics.jsonl``, PNG plots, and
``checkpoint/``: numbered ``ckpt-<step>.safetensors`` (model, optimizer and RNG tensors) with
``ckpt-<step>.json`` (everything else), and ``latest.json`` naming the newest complete pair.
Every file is written to a temporary name in the same folder, flushed to disk and renamed over
the old one, so a kill at any moment leaves the previous complete file readable.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save


class RunError(ValueError):
    """A run folder or one of its files is missing or unreadable."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(tensors))


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist; is {path.parent} a run folder made by "
                       "`lstmkit train ... --out DIR`?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is not readable JSON ({e})") from None


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} does not exist or is not a file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path} is not a readable safetensors file ({e})") from None


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where) -> None:
    """Copy tensors into module's state_dict, naming every missing, extra or misshapen entry."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    wrong = [f"{k}: expected {tuple(own[k].shape)} {own[k].dtype}, got "
             f"{tuple(tensors[k].shape)} {tensors[k].dtype}"
             for k in sorted(set(own) & set(tensors))
             if own[k].shape != tensors[k].shape or own[k].dtype != tensors[k].dtype]
    if missing or extra or wrong:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
            ([f"unexpected {', '.join(extra)}"] if extra else []) + wrong
        raise RunError(f"{where} does not match the model of its config.json: "
                       + "; ".join(problems))
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


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, entries in meta["state"].items():
        state.setdefault(int(idx), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ------------------------------------------------------------------ checkpoints
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
    """(tensors, meta) of the newest complete checkpoint of a run folder."""
    folder = Path(run_dir) / "checkpoint"
    latest = read_json(folder / "latest.json")
    name = latest.get("name")
    if not isinstance(name, str) or "/" in name or not name.startswith("ckpt-"):
        raise RunError(f"{folder / 'latest.json'} names no checkpoint")
    return read_tensors(folder / f"{name}.safetensors"), read_json(folder / f"{name}.json")
