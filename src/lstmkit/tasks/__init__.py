"""Tasks people train: each knows its data, its model, its loss and its metrics."""

from __future__ import annotations

from ..config import Config
from .base import Task
from .classify import NamesTask
from .forecast import ForecastTask
from .language_model import CharsTask, PTBTask
from .music import JSBTask
from .synthetic import AddingTask, CopyTask, ParityTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (NamesTask, PTBTask, CharsTask, ForecastTask,
                                                   AddingTask, CopyTask, JSBTask,
                                                   ParityTask)}


def make_task(cfg: Config, for_training: bool = True) -> Task:
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; expected one of {', '.join(TASKS)}")
    return TASKS[cfg.task](cfg, for_training)
