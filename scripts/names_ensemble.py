"""Several `lstmkit train names` runs, alone and averaged: how far more models move accuracy.

For each run (same split, e.g. the default trained with different ``--seed``) and for their
ensemble, p(c | name) = (1/K) sum_k p_k(c | name), prints validation and test accuracy and
macro-averaged accuracy, then the ensemble with post-hoc logit adjustment (Menon et al. 2021):
the class chosen is argmax_c log p(c | name) - tau log pi_c, pi_c the share of training names in
class c (tau 0: the plain ensemble; larger tau favours rare languages). Last, test accuracy
split by whether the surname also occurs among the training names.

    python scripts/names_ensemble.py RUN [RUN ...] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

TAUS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders of `lstmkit train names`")
    ap.add_argument("--data-dir", help="folder holding names/ (else $LSTMKIT_DATA)")
    args = ap.parse_args()

    from lstmkit.cli import load_run
    from lstmkit.tasks import make_task
    from lstmkit.tasks.classify import accuracies

    loaded = [load_run(r) for r in args.runs]
    cfg = loaded[0][0]
    for run, (c, _, _) in zip(args.runs, loaded):
        if c.task != "names":
            sys.exit(f"{run}: a {c.task} run; give runs of `lstmkit train names`")
        if c.split != cfg.split or c.train_size != cfg.train_size:
            sys.exit(f"{run}: split {c.split}, train size {c.train_size}; every run must have "
                     f"the split of {args.runs[0]} ({cfg.split}, train size {cfg.train_size})")
    cfg.data_dir = args.data_dir
    task = make_task(cfg, for_training=True)          # the split the runs trained on
    train_labels = task.splits["train"][1]
    prior = torch.bincount(train_labels, minlength=len(task.languages)).float()
    log_prior = (prior.clamp(min=1) / prior.sum()).log()

    ensemble = {}
    print("| model | valid accuracy | valid macro | test accuracy | test macro |")
    print("|---|---:|---:|---:|---:|")
    per_split = {s: [task.scores(m, task.splits[s][0]) for _, _, m in loaded]
                 for s in ("valid", "test")}
    for k, run in enumerate(args.runs):
        row = [accuracies(per_split[s][k], task.splits[s][1]) for s in ("valid", "test")]
        print(f"| {run} | {row[0][0]:.4f} | {row[0][1]:.4f} | {row[1][0]:.4f} | {row[1][1]:.4f} |")
    for s in ("valid", "test"):
        ensemble[s] = torch.logsumexp(torch.stack(per_split[s]), 0) - math.log(len(args.runs))
    for tau in TAUS:
        row = [accuracies(ensemble[s] - tau * log_prior, task.splits[s][1])
               for s in ("valid", "test")]
        print(f"| average of {len(args.runs)}, tau {tau:g} | {row[0][0]:.4f} | {row[0][1]:.4f} | "
              f"{row[1][0]:.4f} | {row[1][1]:.4f} |")

    train_names = {bytes(n.tolist()) for n in task.splits["train"][0]}
    seen = torch.tensor([bytes(n.tolist()) in train_names for n in task.splits["test"][0]])
    right = ensemble["test"].argmax(-1) == task.splits["test"][1]
    for label, mask in (("also among the training names", seen), ("not", ~seen)):
        if mask.any():
            print(f"test names {label}: {int(mask.sum()):,}, the average of "
                  f"{len(args.runs)} right on {right[mask].float().mean().item():.3f}")


if __name__ == "__main__":
    main()
