"""Data-parallel training over processes with torch.distributed (gloo on CPU, nccl on GPU).

Launched by ``torchrun --nproc_per_node=N -m lstmkit train ...`` (or ``lstmkit train ... --nproc
N``, which runs exactly that). Every rank builds the same model (DistributedDataParallel also
broadcasts rank 0's weights), walks the same global batches in the same order and trains on its
own contiguous slice of each, its mean loss weighted by its share of the batch so that the
averaged gradient is the gradient of the global mean. Every rank evaluates (the same weights
give the same numbers, so early stopping agrees without messages); only rank 0 writes files
and logs. Stop decisions (a signal, the time limit) and non-finite losses are agreed on with
one small all-reduce per step.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass
class Group:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup() -> Group:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK,
    MASTER_ADDR, MASTER_PORT); a plain single process when WORLD_SIZE is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Group(dist.get_rank(), dist.get_world_size())


def teardown(group: Group) -> None:
    """Leave the process group while the interpreter is fully alive. The DDP wrapper holds the
    group from inside reference cycles; collected only at exit, gloo's threads outlive Python
    and the rank aborts ("terminate called without an active exception")."""
    if group.active and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def shard(batch: tuple, dims: tuple[int, ...], group: Group) -> tuple:
    """This rank's contiguous slice of every tensor of a batch, along its batch dimension."""
    return tuple(t.tensor_split(group.world, dim=d)[group.rank] if isinstance(t, Tensor) else t
                 for t, d in zip(batch, dims))


def batch_rows(batch: tuple, dims: tuple[int, ...]) -> int:
    return next(t.shape[d] for t, d in zip(batch, dims) if isinstance(t, Tensor))


def all_sum(values: list[float], group: Group) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flags: list[bool], group: Group) -> list[bool]:
    """Each flag, true if it is true on any rank."""
    t = torch.tensor([1.0 if f else 0.0 for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def shard_tensors(tensors: dict[str, Tensor], dim: int, group: Group) -> dict[str, Tensor]:
    return {k: t.tensor_split(group.world, dim=dim)[group.rank].contiguous()
            for k, t in tensors.items()}


def gather_rows(tensors: dict[str, Tensor], dim: int, group: Group) -> dict[str, Tensor]:
    """Every rank's slice put back together along `dim` (for checkpointing a carried state)."""
    out = {}
    for name, t in tensors.items():
        parts = [torch.empty_like(t) for _ in range(group.world)]
        dist.all_gather(parts, t.contiguous())
        out[name] = torch.cat(parts, dim)
    return out


def barrier(group: Group) -> None:
    if group.active:
        dist.barrier()
