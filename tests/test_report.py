"""`lstmkit report` (and RUN/report.html written by `lstmkit train`): the page's sections for
every task, its numbers read back and compared with `layer.trace` run here, its size, and one
line (exit 2) for a damaged run folder or an unusable --input. The page in a real browser:
tests/test_report_browser.py."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_harness import assert_one_line_error, run_cli
from report_runs import TEXT, page_data, train_run
from test_cli import needs_data

from lstmkit.cli import load_run
from lstmkit.config import defaults_for
from lstmkit.data import ALPHABET, transliterate
from lstmkit.report.inside import decode
from lstmkit.tasks.models import final_hidden

TASKS = ["chars", "chars-gru", "adding", "copy", "forecast",
         pytest.param("names", marks=needs_data), pytest.param("ptb", marks=needs_data),
         pytest.param("jsb", marks=needs_data)]
LSTM = {"c", "h", "i", "f", "g", "o"}
QUANTITIES = {"chars": LSTM, "chars-gru": {"h", "r", "z", "n"}, "adding": LSTM, "copy": LSTM,
              "forecast": LSTM, "names": LSTM, "ptb": LSTM, "jsb": {"h"}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    made = {}

    def get(task):
        if task not in made:
            made[task] = train_run(task, tmp_path_factory.mktemp(task))
        return made[task]
    return get


def views_of(data) -> list[dict]:
    """Each view's quantities decoded to (steps, units) arrays."""
    out = []
    for v in data["inside"]["views"]:
        arrays = {q["key"]: decode(q["data"], (v["steps"], v["units"])) for q in v["quantities"]}
        out.append({**v, "arrays": arrays})
    return out


@pytest.mark.parametrize("task", TASKS)
def test_train_writes_a_report_with_every_section(runs, task):
    run = runs(task)
    page = (run / "report.html").read_text(encoding="utf-8")
    assert len(page) < 1_000_000                        # tiny model: well under the budget
    for heading in ("What was trained", "Training", "Final metrics", "Inside the network"):
        assert f"<h2>{heading}</h2>" in page
    outside = page.replace('"http://www.w3.org/2000/svg"', "")      # the SVG namespace
    for fetch in ("http://", "https://", "<script src", "<link rel=\"stylesheet", "<img"):
        assert fetch not in outside                    # nothing fetched: all inline
    data = page_data(run / "report.html")
    inside = data["inside"]
    steps = len(inside["symbols"])
    assert steps > 1 and len(inside["hover"]) == steps
    for v in views_of(data):
        assert set(v["arrays"]) == QUANTITIES[task]
        assert all(a.shape == (steps, v["units"]) for a in v["arrays"].values())
        assert len(v["grad"]["h"]) == steps
        assert ("c" in v["grad"]) == ("c" in v["arrays"])
        for gate, sat in v["saturation"].items():
            g = v["arrays"][gate]
            assert sat["left"] == pytest.approx((g < 0.1).mean(0).tolist())
            assert sat["right"] == pytest.approx((g > 0.9).mean(0).tolist())
    assert data["charts"], "no training curves"
    for chart in data["charts"].values():
        assert chart["title"] and chart["x"]["label"] and chart["y"]["label"]


@needs_data
def test_names_page_has_confusion_precision_recall_and_anchors(runs):
    run = runs("names")
    data = page_data(run / "report.html")
    cm = data["confusion"]
    assert len(cm["classes"]) == 18 and sum(map(sum, cm["counts"])) == cm["total"] == 2007
    page = (run / "report.html").read_text()
    for text in ("precision", "recall", "Vietnamese", "0.837", "true language"):
        assert text in page
    assert [s[2].split(":")[0] for s in data["inside"]["segments"]] == \
        ["".join(data["inside"]["symbols"][a:b]) for a, b, _ in data["inside"]["segments"]]


def test_forecast_page_has_dates_and_an_interval(runs):
    data = page_data(runs("forecast") / "report.html")
    chart = data["charts"]["chart-forecast"]
    assert chart["x"]["label"] == "month" and chart["x"]["labels"][0] == "2001-01"
    band = next(s for s in chart["series"] if s.get("kind") == "band")
    assert all(lo < hi for lo, hi in zip(band["lo"], band["hi"])) and len(band["lo"]) == 6
    assert "2005-01" in data["inside"]["source"]     # the window's dates


def test_adding_and_copy_pages_show_the_baseline(runs):
    adding = page_data(runs("adding") / "report.html")["charts"]["chart-task-0"]
    assert any(s.get("kind") == "hline" and s["y"] == pytest.approx(1 / 6)
               for s in adding["series"]) and adding["y"]["log"]
    copy = page_data(runs("copy") / "report.html")["charts"]
    assert any("memoryless" in s["name"] for c in copy.values() for s in c["series"])


def chars_page_and_trace(run, text: str, out):
    """The page of a chars run for --input text, and a trace of the run's model on that text
    after the backward pass of the loss the page uses."""
    assert run_cli("report", run, "--out", out, "--input", text).code == 0
    data = page_data(out)
    assert data["inside"]["symbols"] == list(text)
    cfg, task, model = load_run(str(run))
    x = torch.tensor([task.stoi[ch] for ch in text])[:, None]
    trace = model.rnn.trace(model.embed(x))
    logits = model.decoder(trace.output)
    torch.testing.assert_close(logits, model(x)[0])        # the model's own forward pass
    F.cross_entropy(logits[:-1, 0], x[1:, 0]).backward()
    return data, trace


def test_numbers_in_the_page_equal_the_trace_chars_gru(runs, tmp_path):
    data, trace = chars_page_and_trace(runs("chars-gru"), 'To be, "or" not', tmp_path / "r.html")
    (view,) = views_of(data)
    step = trace.steps[0][0]
    expected = {"h": step.h, **step.gates}
    assert set(view["arrays"]) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(view["arrays"][key], value[:, 0].numpy())
    np.testing.assert_allclose(view["grad"]["h"], step.grad_h[:, 0].norm(dim=-1).numpy(),
                               rtol=1e-6)


@needs_data
def test_numbers_in_the_page_equal_the_trace_names(runs, tmp_path):
    """Each name traced on its own here, batched in the page: the same numbers; the replaced
    symbols are named."""
    run = runs("names")
    names = ["Nguyen", "Ślusàrski", "O'Neill"]
    out = tmp_path / "names.html"
    assert run_cli("report", run, "--out", out, "--input", "\n".join(names)).code == 0
    data = page_data(out)
    assert "Ś -> S" in " ".join(data["inside"]["notes"])
    cfg, task, model = load_run(str(run))
    ascii_names = [transliterate(n) for n in names]
    assert "".join(data["inside"]["symbols"]) == "".join(ascii_names)
    views = views_of(data)
    assert [v["title"] for v in views] == ["layer 1, forward", "layer 1, backward",
                                           "layer 2, forward", "layer 2, backward"]
    start = 0
    for name in ascii_names:
        x = torch.tensor([ALPHABET.index(ch) for ch in name])[:, None]
        trace = model.rnn.trace(model.embed(x))
        logits = model.out(final_hidden(trace.h_n, model.layers, model.directions))
        torch.testing.assert_close(logits, model(x, torch.tensor([len(name)])))
        F.cross_entropy(logits, logits.argmax(-1), reduction="sum").backward()
        for k, view in enumerate(views):
            step = trace.steps[k // 2][k % 2]
            expected = {"c": step.c, "h": step.h, **step.gates}
            for key, value in expected.items():
                np.testing.assert_allclose(view["arrays"][key][start:start + len(name)],
                                           value[:, 0].numpy(), rtol=1e-5, atol=1e-6)
            for key, grad in (("h", step.grad_h), ("c", step.grad_c)):
                np.testing.assert_allclose(view["grad"][key][start:start + len(name)],
                                           grad[:, 0].norm(dim=-1).numpy(), rtol=1e-4,
                                           atol=1e-8)
        start += len(name)


def test_selective_units_find_a_unit_that_follows_spaces(runs, tmp_path):
    out = tmp_path / "r.html"
    assert run_cli("report", runs("chars"), "--out", out, "--input", TEXT[:200]).code == 0
    data = page_data(out)
    for view in views_of(data):
        rows = {r["feature"]: r for r in view["selective"]}
        assert {"spaces", "vowels", "quotes", "line breaks"} <= set(rows)
        symbols = data["inside"]["symbols"]
        spaces = np.array([s == " " for s in symbols], dtype=float)
        best = rows["spaces"]["units"][0]
        series = view["arrays"][best["quantity"]][:, best["unit"]]
        assert np.corrcoef(series, spaces)[0, 1] == pytest.approx(best["r"], abs=1e-3)
        every = [abs(np.corrcoef(view["arrays"][q][:, u], spaces)[0, 1])
                 for q in ("c", "h") for u in range(view["units"])]
        assert abs(best["r"]) == pytest.approx(max(every), abs=1e-3)


# ---------------------------------------------------------------------- bad input
def copy_of(run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def test_a_run_without_a_model(runs, tmp_path):
    run = copy_of(runs("adding"), tmp_path)
    (run / "model.safetensors").unlink()
    before = (run / "report.html").read_bytes()
    assert_one_line_error(run_cli("report", run), "model.safetensors")
    assert (run / "report.html").read_bytes() == before       # the old page is kept whole


@pytest.mark.parametrize("damage, fragment", [
    ('{"step": 1, "train_loss": 0.5}\nnot json at all\n{"step": 2}\n', "line 2: not JSON"),
    ('{"step": "three"}\n{"step": 2}\n', "line 1: expected a step"),
    ('{"step": 1, "valid": {"loss": "low"}}\n{"step": 2}\n', "valid is not an object of numbers"),
    ('[1, 2]\n{"step": 2}\n', "expected a JSON object"),
    ("\udcff", "not UTF-8"),
])
def test_a_corrupt_metrics_file(runs, tmp_path, damage, fragment):
    run = copy_of(runs("adding"), tmp_path)
    (run / "metrics.jsonl").write_bytes(damage.encode("utf-8", "surrogateescape"))
    assert_one_line_error(run_cli("report", run), "metrics.jsonl", fragment)
    assert not list(run.glob(".report.html.*"))                # no temporary file left


@pytest.mark.parametrize("damage, fragment", [
    ('{"valid": {"loss": "low"}}', "valid is not an object of numbers"),
    ('{"steps": "many"}', "steps is str"), ("[]", "expected a JSON object"),
    ('{"test": ', "not readable JSON"),
])
def test_a_corrupt_results_file(runs, tmp_path, damage, fragment):
    run = copy_of(runs("adding"), tmp_path)
    (run / "results.json").write_text(damage)
    assert_one_line_error(run_cli("report", run), "results.json", fragment)


def test_an_unfinished_run_has_a_report(runs, tmp_path):
    run = copy_of(runs("chars"), tmp_path)
    (run / "results.json").unlink()
    assert run_cli("report", run).code == 0
    assert "has not finished" in (run / "report.html").read_text()


def test_a_torn_last_metrics_line_is_dropped(runs, tmp_path):
    run = copy_of(runs("adding"), tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "tra')                            # a kill while writing
    assert run_cli("report", run).code == 0


@pytest.mark.parametrize("value, fragment", [
    ("", "--input is empty"), ("  \n ", "--input is empty"),
    ("x" * 20_001, "at most 20,000"),
])
def test_empty_or_enormous_input(runs, tmp_path, value, fragment):
    assert_one_line_error(run_cli("report", runs("chars"), "--out", tmp_path / "r.html",
                                  "--input", value), fragment)
    assert not (tmp_path / "r.html").exists()


def test_input_from_a_file_and_an_enormous_file(runs, tmp_path):
    small = tmp_path / "snippet.txt"
    small.write_text("To be or not")
    out = tmp_path / "r.html"
    assert run_cli("report", runs("chars"), "--out", out, "--input", small).code == 0
    assert "".join(page_data(out)["inside"]["symbols"]) == "To be or not"
    big = tmp_path / "big.txt"
    big.write_text("to be " * 50_000)
    assert_one_line_error(run_cli("report", runs("chars"), "--out", out, "--input", big),
                          "big.txt", "bytes")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert_one_line_error(run_cli("report", runs("chars"), "--out", out, "--input", binary),
                          "not UTF-8")


def test_input_of_one_step_and_a_folder(runs, tmp_path):
    out = tmp_path / "r.html"
    assert run_cli("report", runs("chars"), "--out", out, "--input", "T").code == 0
    data = page_data(out)
    assert data["inside"]["loss"] is None and data["inside"]["views"][0]["grad"] == {}
    assert "no next symbol" in " ".join(data["inside"]["notes"])
    assert_one_line_error(run_cli("report", runs("chars"), "--out", out, "--input", tmp_path),
                          "is a folder")


def test_unknown_characters_are_replaced_and_named(runs, tmp_path):
    out = tmp_path / "r.html"
    assert run_cli("report", runs("chars"), "--out", out, "--input", "Zürich € to be").code == 0
    data = page_data(out)
    note = " ".join(data["inside"]["notes"])
    assert "'ü'" in note and "'€'" in note and "replaced" in note
    assert len(data["inside"]["symbols"]) == len("Zürich € to be")
    assert "replaced" in out.read_text()                       # shown in the page itself


@needs_data
def test_unknown_words_become_unk_and_are_named(runs, tmp_path):
    out = tmp_path / "r.html"
    text = "The zyzzyva company said\nit would"
    assert run_cli("report", runs("ptb"), "--out", out, "--input", text).code == 0
    data = page_data(out)
    note = " ".join(data["inside"]["notes"])
    assert "The -> the" in note and "zyzzyva -> <unk>" in note
    assert data["inside"]["symbols"] == ["the", "<unk>", "company", "said", "<eos>", "it",
                                         "would"]


@needs_data
def test_a_name_without_letters(runs, tmp_path):
    assert_one_line_error(run_cli("report", runs("names"), "--out", tmp_path / "r.html",
                                  "--input", "Smith\n1234"), "'1234'", "no letters")


def test_input_is_refused_where_the_input_is_not_text(runs, tmp_path):
    assert_one_line_error(run_cli("report", runs("adding"), "--input", "0.5 0.3"),
                          "--input is for names, ptb and chars runs")


def test_out_must_be_a_file(runs, tmp_path):
    assert_one_line_error(run_cli("report", runs("adding"), "--out", tmp_path),
                          "is a folder")


def test_not_a_run_folder(tmp_path):
    assert_one_line_error(run_cli("report", tmp_path / "nothing"), "is not a folder")
    assert_one_line_error(run_cli("report", tmp_path), "config.json")



def test_a_report_that_fails_after_training_is_a_warning(tmp_path, monkeypatch):
    import lstmkit.report

    def broken(*args, **kwargs):
        raise ValueError("the data moved")
    monkeypatch.setattr(lstmkit.report, "write_report", broken)
    result = run_cli("train", "adding", "--out", tmp_path / "run", "--length", 5,
                     "--steps-per-epoch", 2, "--batch-size", 4, "--hidden", 4, "--epochs", 1)
    assert result.code == 0 and (tmp_path / "run" / "results.json").is_file()
    assert "lstmkit: warning: the report was not written: the data moved" in result.err


def test_the_chars_metrics_note_says_where_validation_and_test_come_from():
    from lstmkit.report.sections import final_metrics

    results = {"valid": {"loss": 1.34, "bits_per_token": 1.93, "perplexity": 3.8},
               "test": {"loss": 1.48, "bits_per_token": 2.13, "perplexity": 4.4}}
    cfg = defaults_for("chars")
    table = final_metrics(cfg, results, [])
    assert table["note"].startswith("Validation is the 5% of the text after the training text")
    assert "The Tempest" in table["note"] and "no test text" not in table["note"]
    assert [r["test"] for r in table["rows"]][:2] == ["1.4800", "2.130"]
    own = final_metrics(dataclasses.replace(cfg, path="my.txt"), results, [])
    assert "Tempest" not in own["note"] and own["note"].endswith("test the last 5%.")
