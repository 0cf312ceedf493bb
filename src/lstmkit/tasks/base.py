"""What the trainer needs from a task: its data, its model, one training step, an evaluation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..config import Config


class Task:
    """A task built from a Config. ``for_training=False`` rebuilds only what a trained model
    needs (from ``cfg.meta``) without loading the training data."""

    name: str = ""
    # the validation metric that picks the best model, and whether higher is better
    select_by: str = "loss"
    higher_is_better: bool = False
    # the batch dimension of each tensor of a training batch, and of a carried state (for
    # splitting a batch over processes in distributed training)
    batch_dims: tuple[int, ...] = (1, 0)
    carry_dim: int = 1
    # the registry data set it reads unless cfg.path names a file (None: data made in code)
    dataset: str | None = None
    # what its loss is, for the axis of the loss curves
    loss_label: str = "loss"

    def __init__(self, cfg: Config, for_training: bool = True):
        self.cfg = cfg

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def data_sizes(self) -> str:
        """The training data's size for the start line, e.g. "train 120, valid 12, test 12
        points"."""
        return ""

    def data_source(self) -> str:
        """Where the training data came from, for the start line ("" when made in code)."""
        from ..data import locate

        if self.cfg.path:
            return str(self.cfg.path)
        if self.dataset is None:
            return ""
        folder, how = locate(self.dataset, self.cfg.data_dir)
        return f"{folder} ({how})"

    def selection_score(self, metrics: dict) -> float:
        """The validation score the trainer minimises when it picks the model to keep."""
        value = metrics[self.select_by]
        return -value if self.higher_is_better else value

    def train_batches(self, generator: torch.Generator) -> Iterable:
        """One epoch of training batches, in an order fixed by `generator`."""
        raise NotImplementedError

    def batches_per_epoch(self) -> int | None:
        """How many batches train_batches yields (for the progress bar), if known."""
        return None

    def train_step(self, model: nn.Module, batch, carry) -> tuple[Tensor, object]:
        """The mean loss of one batch, and what carries over to the next (a recurrent state
        for truncated BPTT, else None)."""
        raise NotImplementedError

    def batch_units(self, batch) -> float:
        """How many terms a batch's mean loss averages over (examples, tokens or frames)."""
        return next(t.shape[d] for t, d in zip(batch, self.batch_dims) if isinstance(t, Tensor))

    def loss_weight(self, batch) -> float:
        """What the trainer multiplies a batch's mean loss by before backpropagating it."""
        return 1.0

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics on "valid" or "test", always including "loss"."""
        raise NotImplementedError

    def describe(self, metrics: dict[str, float]) -> str:
        """A short line for the progress log."""
        return f"loss {metrics['loss']:.4f}"

    def figures(self, model: nn.Module, run_dir) -> None:
        """Task-specific plots written into the run folder (the loss curves are the trainer's)."""

    def carry_tensors(self, carry) -> dict[str, Tensor]:
        """The carry as named tensors, for a checkpoint taken inside an epoch."""
        return {}

    def carry_from_tensors(self, tensors: dict[str, Tensor]):
        return None


def split_sizes(sizes: dict[str, int], unit: str) -> str:
    """"train 1,000, valid 100, test 100 <unit>"."""
    return ", ".join(f"{split} {n:,}" for split, n in sizes.items()) + f" {unit}"


def detach_state(state):
    """A recurrent state cut from the graph: BPTT stops at the batch boundary."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
