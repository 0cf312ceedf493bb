"""The report's "Inside the network" for the whole-sequence layers (mLSTM, xLSTM stacks,
minGRU, minLSTM): the quantities their traces keep, each number in the page equal to a trace run
here, per-head values spread over their heads' units, and padded batches (names) read per
sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_harness import run_cli
from report_runs import page_data, write_text
from test_cli import needs_data
from test_report import chars_page_and_trace, views_of

from lstmkit.cli import load_run
from lstmkit.data import ALPHABET
from lstmkit.report.inside import shown

MLSTM = {"h", "i", "f", "o", "n", "m"}
SLSTM = {"c", "h", "i", "f", "z", "o", "n", "m"}
KEPT = {  # cell: (each layer's quantities, each layer's gradients)
    "mlstm": ([MLSTM, MLSTM], [{"h", "C", "n"}] * 2),
    "xlstm": ([MLSTM, SLSTM], [{"h", "C", "n"}, {"h", "c"}]),
    "mingru": ([{"h", "z", "g"}] * 2, [{"h"}] * 2),
    "minlstm": ([{"h", "f", "i", "g"}] * 2, [{"h"}] * 2),
}


def chars_run(tmp_path, cell):
    heads = ["--heads", "2"] if cell in ("mlstm", "xlstm") else []
    run = tmp_path / "run"
    result = run_cli("train", "chars", "--out", run, "--path", write_text(tmp_path), "--embed",
                     8, "--hidden", 8, "--layers", 2, "--bptt", 20, "--batch-size", 4,
                     "--epochs", 1, "--threads", 1, "--cell", cell, *heads)
    assert result.code == 0, result.err[-3000:]
    return run


@pytest.mark.parametrize("cell", list(KEPT))
def test_page_shows_the_cells_trace_number_for_number(tmp_path, cell):
    run = chars_run(tmp_path, cell)
    data, trace = chars_page_and_trace(run, 'To be, "or" not', tmp_path / "r.html")
    assert "records no" not in " ".join(data["inside"]["notes"])
    views = views_of(data)
    quantities, grads = KEPT[cell]
    assert [set(v["arrays"]) for v in views] == quantities
    assert [set(v["grad"]) for v in views] == grads
    for view, row in zip(views, trace.steps):
        step = row[0]
        for key, value in shown(step, 8).items():
            np.testing.assert_array_equal(view["arrays"][key], value[:, 0].float().numpy())
        carried = {"h": step.grad_h, "c": step.grad_c, **getattr(step, "grad_states", {})}
        for key in view["grad"]:
            np.testing.assert_allclose(view["grad"][key],
                                       carried[key][:, 0].flatten(1).norm(dim=-1).numpy(),
                                       rtol=1e-5)
        scales = {q["key"]: q["scale"] for q in view["quantities"]}
        sat = set(view["saturation"])
        assert sat == {k for k, s in scales.items() if s == "sequential"}
        assert sat <= {"i", "f", "o", "z"} and "h" not in sat
    if cell in ("mlstm", "xlstm"):          # one gate per head, shown on each of its units
        i = views[0]["arrays"]["i"]
        assert (i[:, :4] == i[:, :1]).all() and (i[:, 4:] == i[:, 4:5]).all()
        np.testing.assert_array_equal(i[:, ::4], trace.steps[0][0].gates["i"][:, 0].numpy())
        names = {q["key"]: q["name"] for q in data["inside"]["views"][0]["quantities"]}
        assert names["n"].startswith("normaliser") and "one per head" in names["m"]


@needs_data
@pytest.mark.parametrize("cell", ["mlstm", "mingru"])
def test_names_page_reads_each_name_of_a_padded_batch(tmp_path, cell):
    """Names of different lengths in one padded batch (lengths=), bidirectional: each name's
    numbers in the page equal a trace of that name alone."""
    run = tmp_path / "run"
    result = run_cli("train", "names", "--out", run, "--train-size", 200, "--hidden", 8,
                     "--embed", 8, "--batch-size", 32, "--epochs", 1, "--cell", cell,
                     "--layers", 1, "--bidirectional", "--threads", 1)
    assert result.code == 0, result.err[-3000:]
    names = ["Nguyen", "Li", "Schwarzenegger"]
    out = tmp_path / "names.html"
    assert run_cli("report", run, "--out", out, "--input", "\n".join(names)).code == 0
    data = page_data(out)
    views = views_of(data)
    assert [v["title"] for v in views] == ["layer 1, forward", "layer 1, backward"]
    cfg, task, model = load_run(str(run))
    start = 0
    for name in names:
        x = torch.tensor([ALPHABET.index(ch) for ch in name])[:, None]
        trace = model.rnn.trace(model.embed(x))
        logits = model.out(model.final(trace.output, trace.h_n, torch.tensor([len(name)])))
        torch.testing.assert_close(logits, model(x, torch.tensor([len(name)])))
        F.cross_entropy(logits, logits.argmax(-1), reduction="sum").backward()
        for d, view in enumerate(views):
            step = trace.steps[0][d]
            for key, value in shown(step, 8).items():
                np.testing.assert_allclose(view["arrays"][key][start:start + len(name)],
                                           value[:, 0].numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(view["grad"]["h"][start:start + len(name)],
                                       step.grad_h[:, 0].norm(dim=-1).numpy(), rtol=1e-4,
                                       atol=1e-8)
        start += len(name)
