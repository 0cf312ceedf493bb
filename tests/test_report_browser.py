"""A report page in a real browser: headless Chromium (the Debian package `chromium`, driven by
playwright with executable_path set, so that playwright never downloads a browser) opens the
file with no network, and the page must render without a console error or any request, have
titled charts with named axes and no overlapping text, and answer the controls: another unit,
another gate, another layer recolour the text, with the values the trace gives. Screenshots go
to the test's folder, and to $LSTMKIT_SCREENSHOTS when set.

Where chromium is absent (scripts/setup.sh installs it when run as root) the tests skip and
say so."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_harness import run_cli
from report_runs import TEXT, train_run
from test_cli import DATA

from lstmkit.cli import load_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:                     # the test extra: pip install -e '.[test]'
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright (Python) is not installed; "
                       "pip install -e '.[test]'"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (the Debian "
                       "package `chromium`; scripts/setup.sh installs it when run as root)"),
]
INPUT = TEXT[:160]

# every pair of <text> in one chart whose boxes overlap by more than a pixel
OVERLAPS = """() => {
  const found = [];
  for (const chart of document.querySelectorAll(".chart svg")) {
    const boxes = [...chart.querySelectorAll("text")].filter(t => t.textContent.trim())
      .map(t => [t.textContent, t.getBoundingClientRect()]);
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const [a, p] = boxes[i], [b, q] = boxes[j];
      const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
      const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (w > 1 && h > 1) found.push(`${a} / ${b}`);
    }
  }
  return found;
}"""


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def chars_page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    run = train_run("chars", root)
    page = root / "chars.html"
    assert run_cli("report", run, "--out", page, "--input", INPUT).code == 0
    return run, page


def shots_dir(tmp_path: Path) -> list[Path]:
    folders = [tmp_path]
    if os.environ.get("LSTMKIT_SCREENSHOTS"):
        folders.append(Path(os.environ["LSTMKIT_SCREENSHOTS"]))
        folders[-1].mkdir(parents=True, exist_ok=True)
    return folders


def open_page(browser, path: Path):
    """The page, loaded and drawn; the problems it logged and every request it made."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page, problems, requests


def check_page(page, problems, requests, path: Path):
    assert problems == []
    assert requests == [path.resolve().as_uri()]       # the file itself, nothing else
    assert page.evaluate(OVERLAPS) == []
    titles = page.eval_on_selector_all(".chart svg text.title", "ts => ts.map(t => t.textContent)")
    xlabels = page.eval_on_selector_all(".chart svg text.xlabel",
                                        "ts => ts.map(t => t.textContent)")
    ylabels = page.eval_on_selector_all(".chart svg text.ylabel",
                                        "ts => ts.map(t => t.textContent)")
    assert titles and all(titles) and len(xlabels) == len(ylabels) == len(titles)
    assert all(ylabels)
    assert page.locator(".chart .err").count() == 0


def colours(page) -> list[str]:
    return page.eval_on_selector_all("#text-view span.s", "ss => ss.map(s => s.style.background)")


def values(page) -> np.ndarray:
    return np.array(page.eval_on_selector_all("#text-view span.s",
                                              "ss => ss.map(s => +s.dataset.value)"))


def test_the_page_renders_and_answers_its_controls(browser, chars_page, tmp_path):
    run, path = chars_page
    page, problems, requests = open_page(browser, path)
    check_page(page, problems, requests, path)
    folders = shots_dir(tmp_path)
    for f in folders:
        page.screenshot(path=str(f / "report-chars-full.png"), full_page=True)

    # the numbers the page shows are the trace's: c_t of unit 0, layer 1, for this input
    cfg, task, model = load_run(str(run))
    x = torch.tensor([task.stoi[ch] for ch in INPUT])[:, None]
    trace = model.rnn.trace(model.embed(x))
    assert page.input_value("#q-select") == "c"
    np.testing.assert_array_equal(values(page), trace.steps[0][0].c[:, 0, 0].numpy())
    assert page.locator("#text-view span.s").count() == len(INPUT)

    before = colours(page)
    page.click("#unit-next")                                  # another unit
    assert page.input_value("#unit-input") == "1"
    after_unit = colours(page)
    assert after_unit != before
    np.testing.assert_array_equal(values(page), trace.steps[0][0].c[:, 0, 1].numpy())

    page.select_option("#q-select", "f")                      # another gate
    assert colours(page) != after_unit
    np.testing.assert_array_equal(values(page), trace.steps[0][0].gates["f"][:, 0, 1].numpy())
    assert "f_t of unit 1" in page.inner_text("#text-scale")

    page.select_option("#view-select", "1")                   # the second layer
    np.testing.assert_array_equal(values(page), trace.steps[1][0].gates["f"][:, 0, 1].numpy())
    assert page.evaluate(OVERLAPS) == []

    button = page.locator("#selective button").first           # a selective unit
    unit, quantity = button.get_attribute("data-unit"), button.get_attribute("data-q")
    button.click()
    assert page.input_value("#unit-input") == unit and page.input_value("#q-select") == quantity

    canvas = page.locator("#heatmaps canvas").first            # hover: value, step, symbol
    box = canvas.bounding_box()
    canvas.hover(position={"x": box["width"] * 0.3, "y": box["height"] * 0.5})
    tip = page.inner_text("#tip")
    assert page.is_visible("#tip") and "step" in tip and "value" in tip
    page.locator("#text-view span.s").nth(3).hover()
    assert "step 3" in page.inner_text("#tip")
    for f in folders:
        page.locator("#inside").screenshot(path=str(f / "report-chars-inside.png"))
    assert problems == []


@pytest.mark.parametrize("task", ["forecast", "adding",
                                  pytest.param("names", marks=pytest.mark.skipif(
                                      not DATA, reason="needs LSTMKIT_DATA"))])
def test_other_tasks_render(browser, tmp_path, task):
    run = train_run(task, tmp_path)
    path = run / "report.html"
    page, problems, requests = open_page(browser, path)
    check_page(page, problems, requests, path)
    before = colours(page)
    page.click("#unit-next")
    assert colours(page) != before
    for f in shots_dir(tmp_path):
        page.screenshot(path=str(f / f"report-{task}-full.png"), full_page=True)


def test_xlstm_page_renders_its_layers_own_quantities(browser, tmp_path):
    """An xLSTM stack (mLSTM, then sLSTM): the mLSTM layer's per-head gates and the gradient
    through its matrix memory, then the sLSTM layer's c_t."""
    from report_runs import write_text

    run = tmp_path / "run"
    result = run_cli("train", "chars", "--out", run, "--path", write_text(tmp_path), "--embed",
                     8, "--hidden", 8, "--layers", 2, "--heads", 2, "--bptt", 20,
                     "--batch-size", 4, "--epochs", 1, "--cell", "xlstm")
    assert result.code == 0, result.err[-3000:]
    path = run / "report.html"
    page, problems, requests = open_page(browser, path)
    check_page(page, problems, requests, path)
    assert page.input_value("#q-select") == "h"               # no c_t in an mLSTM
    assert "|dL/dC_t|" in page.inner_text("#gradient")
    page.select_option("#q-select", "i")
    shown = values(page)
    assert ((shown >= 0) & (shown <= 1)).all()
    page.select_option("#view-select", "1")                   # the sLSTM layer
    assert "|dL/dc_t|" in page.inner_text("#gradient")
    assert "normaliser n_t" in page.inner_text("#q-select")
    assert page.evaluate(OVERLAPS) == []
    for f in shots_dir(tmp_path):
        page.screenshot(path=str(f / "report-xlstm-full.png"), full_page=True)
    assert problems == []
