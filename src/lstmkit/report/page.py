"""The report as one HTML file: static tables written here, charts and the "Inside the network"
views drawn in the browser by page.js from the data embedded as JSON (script#report-data).
Scripts and styles are inline; the page makes no request."""

from __future__ import annotations

import html
import json
from importlib import resources

from .._version import __version__

DATA_ID = "report-data"


def asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def embed_json(data) -> str:
    """JSON safe inside <script>: no "<" (so no "</script>" or "<!--") and no NaN."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def esc(value) -> str:
    return html.escape(str(value))


def table(rows: list[list], head: list[str] | None = None, cls: str = "",
          numeric: tuple[int, ...] = ()) -> str:
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head:
        out.append("<tr>" + "".join(f'<th class="num">{esc(h)}</th>' if i in numeric else
                                    f"<th>{esc(h)}</th>" for i, h in enumerate(head)) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    return "\n".join(out + ["</table>"])


def trained_html(rows) -> str:
    return table([[f"<b>{esc(k)}</b>", esc(v)] for k, v in rows], cls="kv")


def metrics_html(metrics: dict) -> str:
    rows = [[esc(r["metric"]), esc(r["valid"]), esc(r["test"]),
             '<ul class="refs">' + "".join(f"<li>{esc(x)}</li>" for x in r["refs"]) + "</ul>"
             if r["refs"] else ""] for r in metrics["rows"]]
    note = "" if metrics["finished"] else \
        '<p class="warn">The run has not finished (no results.json): no test metrics yet.</p>'
    after = f'<p class="note">{esc(metrics["note"])}</p>' if metrics.get("note") else ""
    return note + table(rows, ["metric", "validation (best model)", "test (best model)",
                               "set beside (source: split: value)"], numeric=(1, 2)) + after


def _p(x):
    return "-" if x is None else f"{x:.3f}"


def task_html(section: dict | None, charts: dict) -> str:
    if section is None:
        return ""
    kind = section["kind"]
    if kind == "names":
        rows = [[esc(r["class"]), _p(r["precision"]), _p(r["recall"]), str(r["support"]),
                 str(r["predicted"])] for r in section["per_class"]]
        return ('<h2>Languages: confusion, precision and recall</h2>'
                '<p class="note">On the test names, with the best model by validation accuracy. '
                'Hover over a cell for its count.</p><div id="confusion"></div>'
                '<h3>Per language</h3>' +
                table(rows, ["language", "precision", "recall", "test names",
                             "predicted as this"], numeric=(1, 2, 3, 4)))
    if kind == "samples":
        parts = ['<h2>Samples</h2><p class="note">Text the model writes after a prime taken '
                 f'from the validation data (<code>{esc(section["command"])}</code>).</p>']
        for s in section["samples"]:
            parts.append(f'<h3>temperature {s["temperature"]:g}, prime {esc(repr(s["prime"]))}'
                         f'</h3><pre class="sample">{esc(s["text"])}</pre>')
        return "".join(parts)
    if kind == "forecast":
        charts["chart-forecast"] = section["chart"]
        return ('<h2>Forecast</h2><p class="note">The model forecasts the test period from the '
                'points before it, each prediction fed back in; the interval is z &plusmn; 1.96 '
                '&sigma; &radic;h of the one-step errors on the training windows, mapped back '
                '(model-based, not calibrated).</p><div id="chart-forecast"></div>')
    out = ['<h2>Against the baseline</h2>']
    for k, chart in enumerate(section["charts"]):
        charts[f"chart-task-{k}"] = chart
        out.append(f'<div id="chart-task-{k}"></div>')
    return "".join(out)


INSIDE_HTML = """
<section id="inside"><h2>Inside the network</h2>
<div id="inside-body">
<p>Input: {source}. {loss_text} (L = {loss}).</p>
{notes}
<div class="controls">
  <span><label for="view-select">layer</label> <select id="view-select"></select></span>
  <span><label for="q-select">colour by</label> <select id="q-select"></select></span>
  <span><label for="unit-input">unit</label> <button id="unit-prev" type="button">&minus;</button>
    <input id="unit-input" type="number" min="0" value="0" step="1">
    <button id="unit-next" type="button">+</button> <span id="unit-count"></span></span>
</div>
<div id="text-scale" class="scalebar"></div>
<div id="text-view"></div>
<p class="note">Each {what} is coloured by the chosen unit's value at that step; hover for the
value. States and candidate gates use blue (negative) to red (positive), scaled to the unit's
largest magnitude over this input; sigmoid gates use white (0) to green (1).</p>
<h3>Most input-selective units</h3>
<p class="note">For each class of steps, the units whose cell state c_t or hidden state h_t
correlate most with it (Pearson r over the steps shown), so that interpretable cells are found
without scanning every unit.</p>
<div id="selective"></div>
<h3>Gradient through time</h3>
<div id="gradient"></div>
<h3>Gate saturation</h3>
<p class="note">Per unit, the fraction of steps at which a sigmoid gate is below 0.1
(left-saturated: shut) and above 0.9 (right-saturated: open), as Karpathy, Johnson and Fei-Fei
(2015) plot it; points near the dashed diagonal are saturated nearly always.</p>
<div id="saturation"></div>
<h3>Units x time</h3>
<p class="note">Every unit's value at every step; hover for the value, the step and the input
symbol.</p>
<div id="heatmaps"></div>
</div>
</section>
"""


def inside_html(inside: dict) -> str:
    notes = "".join(f'<p class="warn">{esc(n)}</p>' for n in inside["notes"])
    what = {"symbol": "character", "word": "word", "value": "step"}[inside["kind"]]
    loss = "-" if inside["loss"] is None else f"{inside['loss']:.4g}"
    return INSIDE_HTML.format(source=esc(inside["source"]), loss_text=esc(inside["loss_text"]),
                              loss=loss, notes=notes, what=what)


def render(title: str, subtitle: str, trained_rows, charts: dict, metrics: dict,
           section: dict | None, inside: dict) -> str:
    """The whole page."""
    charts = dict(charts)
    task_part = task_html(section, charts)
    curve_divs = "".join(f'<div id="{k}"></div>' for k in charts if k.startswith("chart-curve"))
    data = {"charts": charts, "inside": inside,
            "confusion": ({"classes": section["classes"], "counts": section["counts"],
                           "total": section["test_names"]}
                          if section and section["kind"] == "names" else None)}
    nav = "".join(f'<a href="#{k}">{v}</a>' for k, v in (
        ("trained", "What was trained"), ("curves", "Training"), ("metrics", "Final metrics"),
        ("task", "Task"), ("inside", "Inside the network")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{esc(title)}</title>
<style>
{asset("page.css")}
</style></head>
<body>
<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>
<main>
<nav>{nav}</nav>
<section id="trained"><h2>What was trained</h2>
{trained_html(trained_rows)}
</section>
<section id="curves"><h2>Training</h2>
{curve_divs}
</section>
<section id="metrics"><h2>Final metrics</h2>
{metrics_html(metrics)}
</section>
<section id="task">
{task_part}
</section>
{inside_html(inside)}
<p class="note">Written by lstmkit {esc(__version__)} (<code>lstmkit report</code>). One file,
no network: every script, style and number is in it.</p>
</main>
<script type="application/json" id="{DATA_ID}">{embed_json(data)}</script>
<script>
{asset("page.js")}
</script>
</body></html>
"""
