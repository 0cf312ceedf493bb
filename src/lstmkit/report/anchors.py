"""Published numbers (and this project's own measured ones) the report sets a run's metrics
beside: the anchors README.md and RESULTS.md quote for each task.

Each anchor: the metric key in the task's metrics, the split, the value, who measured it, and
for which layer ("LSTM", "GRU", "RNN" as the cell registry names them; None: any). ``kind`` is
"published", "project" (RESULTS.md, with its command) or "baseline" (what a model that learns
nothing scores, or a threshold; the run's own metrics add more).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Anchor:
    metric: str
    split: str
    value: float
    source: str
    kind: str = "published"
    cell: str | None = None


ANCHORS: dict[str, list[Anchor]] = {
    "ptb": [
        Anchor("perplexity", "test", 114.5, "Zaremba et al. 2014, small configuration (2 x 200 "
               "LSTM, no dropout, 13 epochs)", cell="LSTM"),
        Anchor("perplexity", "valid", 120.7, "Zaremba et al. 2014, small configuration",
               cell="LSTM"),
        Anchor("perplexity", "test", 113.0, "this project, `lstmkit train ptb` (RESULTS.md)",
               "project", cell="LSTM"),
    ],
    "chars": [
        Anchor("loss", "valid", 1.337, "this project, `lstmkit train chars` (2 x 512 LayerNorm "
               "LSTM, 10 minutes on Tiny Shakespeare; RESULTS.md)", "project", cell="LSTM"),
        Anchor("loss", "test", 1.477, "the same run; the test text is mostly The Tempest, a "
               "play absent from training (RESULTS.md)", "project", cell="LSTM"),
        Anchor("loss", "test", 1.40, "the planning issue's target (not reached, RESULTS.md)",
               "project"),
    ],
    "names": [
        Anchor("accuracy", "test", 0.827, "this project, `lstmkit train names` (0.827-0.839 "
               "over six seeds; RESULTS.md)", "project", cell="LSTM"),
        Anchor("macro_accuracy", "test", 0.552, "the same run (0.552-0.598 over six seeds)",
               "project", cell="LSTM"),
        Anchor("accuracy", "test", 0.837, "character n-gram naive Bayes on the same split "
               "(RESULTS.md)", "baseline"),
        Anchor("accuracy", "test", 0.85, "the planning issue's target (not reached, "
               "RESULTS.md)", "project"),
        Anchor("macro_accuracy", "test", 0.60, "the planning issue's target (not reached, "
               "RESULTS.md)", "project"),
    ],
    "forecast": [
        Anchor("mape", "test", 2.88, "this project, airline passengers, 1960 held out "
               "(RESULTS.md)", "project", cell="LSTM"),
    ],
    "adding": [
        Anchor("mse", "test", 1 / 6, "predicting 1 for every sequence (the baseline)",
               "baseline"),
        Anchor("mse", "test", 0.01, "solved below", "baseline"),
    ],
    "copy": [
        Anchor("accuracy", "test", 1 / 8, "chance: a uniform guess among the 8 symbols",
               "baseline"),
    ],
    "jsb": [
        Anchor("nll_per_step", "test", 8.54, "Chung et al. 2014, GRU", cell="GRU"),
        Anchor("nll_per_step", "test", 8.67, "Chung et al. 2014, LSTM", cell="LSTM"),
        Anchor("nll_per_step", "test", 9.19, "Chung et al. 2014, tanh RNN", cell="RNN"),
        Anchor("nll_per_step", "test", 8.540, "this project, LSTM with weight noise "
               "(RESULTS.md)", "project", cell="LSTM"),
    ],
}


def anchors_for(task: str) -> list[Anchor]:
    return ANCHORS.get(task, [])
