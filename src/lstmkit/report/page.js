// lstmkit report: draws the charts and the "Inside the network" views from the data embedded
// in the page (script#report-data). Plain SVG and one canvas per heatmap; no library, no network.
"use strict";
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                 "#17becf", "#7f7f7f", "#bcbd22"];

function svg(tag, attrs, parent, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function html(tag, attrs, parent, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return String(+v.toPrecision(4));
}

// ------------------------------------------------------------------ tooltip
const tip = html("div", {class: "tip", id: "tip"}, document.body);
function showTip(ev, text) {
  tip.textContent = text;
  tip.style.display = "block";
  const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = ev.clientY + 16 + tip.offsetHeight > window.innerHeight ?
    ev.clientY - tip.offsetHeight - 10 : ev.clientY + 16;
  tip.style.left = x + "px";
  tip.style.top = y + "px";
}
function hideTip() { tip.style.display = "none"; }

// ------------------------------------------------------------------ scales and colours
function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { const d = Math.abs(lo) || 1; lo -= d / 2; hi += d / 2; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(f => f * mag).find(s => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push(Math.abs(t) < step * 1e-9 ? 0 : +t.toPrecision(12));
  }
  return ticks;
}
function logTicks(lo, hi) {
  const a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
  const every = Math.max(1, Math.ceil((b - a) / 7));
  const ticks = [];
  for (let e = a; e <= b; e += every) ticks.push(Math.pow(10, e));
  return ticks;
}
function mix(c1, c2, t) {
  return c1.map((v, i) => Math.round(v + (c2[i] - v) * t));
}
const WHITE = [255, 255, 255], RED = [178, 24, 43], BLUE = [33, 102, 172], GREEN = [0, 90, 50];
// a quantity's colour: diverging (blue - white - red, symmetric about 0) or sequential [0, 1]
function colour(v, scale) {
  if (scale.kind === "sequential") {
    const t = Math.max(0, Math.min(1, v));
    return mix(WHITE, GREEN, t);
  }
  const t = Math.max(-1, Math.min(1, v / (scale.max || 1)));
  return t < 0 ? mix(WHITE, BLUE, -t) : mix(WHITE, RED, t);
}
function rgb(c) { return `rgb(${c[0]},${c[1]},${c[2]})`; }
function dark(c) { return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 140; }
function scaleRange(scale) {
  return scale.kind === "sequential" ? [0, 1] : [-(scale.max || 1), scale.max || 1];
}

// ------------------------------------------------------------------ axes
function axes(g, o) {
  // o: {x, y, w, h, xTicks: [[pos, label]], yTicks: [[pos, label]], xLabel, yLabel, title}
  svg("rect", {x: o.x, y: o.y, width: o.w, height: o.h, fill: "none", stroke: "#999"}, g);
  for (const [p, label] of o.yTicks) {
    if (o.grid) svg("line", {x1: o.x, x2: o.x + o.w, y1: p, y2: p, stroke: "#eee"}, g);
    svg("line", {x1: o.x - 4, x2: o.x, y1: p, y2: p, stroke: "#666"}, g);
    svg("text", {x: o.x - 7, y: p + 4, "text-anchor": "end", "font-size": 11}, g, label);
  }
  for (const [p, label] of o.xTicks) {
    if (o.grid) svg("line", {x1: p, x2: p, y1: o.y, y2: o.y + o.h, stroke: "#eee"}, g);
    svg("line", {x1: p, x2: p, y1: o.y + o.h, y2: o.y + o.h + 4, stroke: "#666"}, g);
    svg("text", {x: p, y: o.y + o.h + 16, "text-anchor": "middle", "font-size": 11}, g, label);
  }
  svg("text", {x: o.x + o.w / 2, y: o.y + o.h + 36, "text-anchor": "middle",
               "font-size": 12.5, class: "xlabel"}, g, o.xLabel);
  svg("text", {transform: `translate(${o.x - o.yPad},${o.y + o.h / 2}) rotate(-90)`,
               "text-anchor": "middle", "font-size": 12.5, class: "ylabel"}, g, o.yLabel);
  svg("text", {x: o.x, y: o.y - 12, class: "title"}, g, o.title);
}
function categoricalTicks(labels, width, toX) {
  const longest = Math.max(...labels.map(s => String(s).length));
  const room = longest * 7 + 14;
  const step = [1, 2, 3, 4, 6, 12, 24, 36, 48, 60, 120, 240, 600, 1200]
    .find(s => Math.ceil(labels.length / s) * room <= width) || Math.ceil(labels.length / 10);
  const ticks = [];
  for (let i = 0; i < labels.length; i += step) ticks.push([toX(i), String(labels[i])]);
  return ticks;
}
function legend(box, items) {
  const div = html("div", {class: "legend"}, box);
  for (const it of items) {
    const s = html("span", {}, div);
    const sw = html("span", {class: "sw " + (it.style || "")}, s);
    if (it.style === "box" || it.style === "dot") sw.style.background = it.colour;
    else sw.style.borderTopColor = it.colour;
    s.appendChild(document.createTextNode(it.name));
  }
}

// ------------------------------------------------------------------ line charts
function lineChart(box, spec) {
  const W = 700, H = 290, m = {l: 70, r: 18, t: 34, b: 50};
  const pw = W - m.l - m.r, ph = H - m.t - m.b, log = !!spec.y.log;
  const ok = v => v !== null && v !== undefined && Number.isFinite(v) && (!log || v > 0);
  const xs = [], ys = [];
  for (const s of spec.series) {
    if (s.kind === "hline") { if (ok(s.y)) ys.push(s.y); continue; }
    if (s.kind === "vline") { xs.push(s.x0); continue; }
    const vals = s.kind === "band" ? s.lo.concat(s.hi) : s.y;
    s.x.forEach((x, i) => { if (ok(vals[i])) xs.push(x); });
    vals.forEach(v => { if (ok(v)) ys.push(v); });
  }
  const root = html("div", {class: "chart"}, box);
  const g = svg("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`}, root);
  if (!xs.length || !ys.length) {
    axes(g, {x: m.l, y: m.t, w: pw, h: ph, xTicks: [], yTicks: [], xLabel: spec.x.label,
             yLabel: spec.y.label, title: spec.title, yPad: 50});
    svg("text", {x: m.l + pw / 2, y: m.t + ph / 2, "text-anchor": "middle", "font-size": 13,
                 fill: "#777"}, g, "no values recorded yet");
    if (spec.note) html("p", {class: "note"}, root, spec.note);
    return root;
  }
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (spec.x.labels) { x0 = 0; x1 = spec.x.labels.length - 1; }
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  let yTicks;
  if (log) {
    yTicks = logTicks(y0, y1); y0 = Math.min(y0, yTicks[0]); y1 = Math.max(y1, yTicks.at(-1));
  } else {
    const pad = (y1 - y0) * 0.06 || Math.abs(y0) * 0.1 || 1;
    yTicks = niceTicks(y0 - pad, y1 + pad, 5);
    y0 = Math.min(y0 - pad, yTicks[0]); y1 = Math.max(y1 + pad, yTicks.at(-1));
    yTicks = yTicks.filter(t => t >= y0 && t <= y1);
  }
  const X = x => m.l + (x - x0) / (x1 - x0) * pw;
  const Y = log ? v => m.t + ph - (Math.log10(v) - Math.log10(y0)) /
                       (Math.log10(y1) - Math.log10(y0)) * ph
                : v => m.t + ph - (v - y0) / (y1 - y0) * ph;
  const whole = xs.every(Number.isInteger);       // steps: no tick at 17.5
  const xTicks = spec.x.labels ? categoricalTicks(spec.x.labels, pw, X)
                               : niceTicks(x0, x1, 6)
                                   .filter(t => t >= x0 && t <= x1 && (!whole || t % 1 === 0))
                                   .map(t => [X(t), fmt(t)]);
  axes(g, {x: m.l, y: m.t, w: pw, h: ph, grid: true, xTicks,
           yTicks: yTicks.map(t => [Y(t), log ? t.toExponential(0).replace("e+", "e") : fmt(t)]),
           xLabel: spec.x.label, yLabel: spec.y.label, title: spec.title, yPad: 54});
  const items = [];
  let k = 0;
  const lines = [];
  spec.series.forEach(s => {
    const c = s.colour || PALETTE[k++ % PALETTE.length];
    if (s.kind === "band") {
      const pts = s.x.map((x, i) => [X(x), Y(s.hi[i])])
        .concat(s.x.map((x, i) => [X(x), Y(s.lo[i])]).reverse());
      svg("polygon", {points: pts.map(p => p.join(",")).join(" "), fill: c,
                      "fill-opacity": 0.2, stroke: "none"}, g);
      items.push({name: s.name, colour: c, style: "box"});
    } else if (s.kind === "hline") {
      if (!ok(s.y)) return;
      svg("line", {x1: m.l, x2: m.l + pw, y1: Y(s.y), y2: Y(s.y), stroke: c,
                   "stroke-dasharray": "6 4", "stroke-width": 1.5}, g);
      items.push({name: s.name, colour: c, style: "dash"});
    } else if (s.kind === "vline") {
      svg("line", {x1: X(s.x0), x2: X(s.x0), y1: m.t, y2: m.t + ph, stroke: c,
                   "stroke-dasharray": "2 3", "stroke-width": 1.5}, g);
      items.push({name: s.name, colour: c, style: "dash"});
    } else {
      let d = "", pen = false;
      s.x.forEach((x, i) => {
        if (!ok(s.y[i])) { pen = false; return; }
        d += (pen ? "L" : "M") + X(x).toFixed(1) + "," + Y(s.y[i]).toFixed(1);
        pen = true;
      });
      svg("path", {d, fill: "none", stroke: c, "stroke-width": 1.8}, g);
      const none = !s.y.some(ok);
      if (s.points || s.x.length === 1) {
        s.x.forEach((x, i) => {
          if (ok(s.y[i])) svg("circle", {cx: X(x), cy: Y(s.y[i]), r: 2.6, fill: c}, g);
        });
      }
      lines.push({s, c});
      items.push({name: s.name + (none ? " (none recorded)" : ""), colour: c});
    }
  });
  legend(root, items);
  if (spec.note) html("p", {class: "note"}, root, spec.note);
  // hover: the values of every line at the nearest x
  const guide = svg("line", {y1: m.t, y2: m.t + ph, stroke: "#444", "stroke-width": 0.8,
                             visibility: "hidden"}, g);
  const hit = svg("rect", {x: m.l, y: m.t, width: pw, height: ph, fill: "transparent"}, g);
  hit.addEventListener("mousemove", ev => {
    const r = g.getBoundingClientRect();
    const x = x0 + (ev.clientX - r.left - m.l) / pw * (x1 - x0);
    let best = null;
    for (const {s} of lines) {
      s.x.forEach((xi, i) => {
        if (ok(s.y[i]) && (best === null || Math.abs(xi - x) < Math.abs(best - x))) best = xi;
      });
    }
    if (best === null) return;
    guide.setAttribute("x1", X(best)); guide.setAttribute("x2", X(best));
    guide.setAttribute("visibility", "visible");
    const head = spec.x.labels ? spec.x.labels[best] : `${spec.x.label} ${fmt(best)}`;
    const extra = spec.x.hover ? " " + spec.x.hover[best] : "";
    const rows = lines.map(({s}) => {
      const i = s.x.indexOf(best);
      return i >= 0 && ok(s.y[i]) ? `${s.name}: ${fmt(s.y[i])}` : null;
    }).filter(Boolean);
    showTip(ev, [head + extra, ...rows].join("\n"));
  });
  hit.addEventListener("mouseleave", () => { guide.setAttribute("visibility", "hidden");
                                             hideTip(); });
  return root;
}

// ------------------------------------------------------------------ heatmaps
function colourBar(g, x, y, h, scale, label) {
  const [lo, hi] = scaleRange(scale), n = 40;
  for (let i = 0; i < n; i++) {
    const v = hi - (hi - lo) * (i + 0.5) / n;
    svg("rect", {x, y: y + h * i / n, width: 14, height: h / n + 0.5,
                 fill: rgb(colour(v, scale))}, g);
  }
  svg("rect", {x, y, width: 14, height: h, fill: "none", stroke: "#999"}, g);
  for (const v of [hi, (hi + lo) / 2, lo]) {
    const py = y + (hi - v) / (hi - lo) * h;
    svg("line", {x1: x + 14, x2: x + 18, y1: py, y2: py, stroke: "#666"}, g);
    svg("text", {x: x + 21, y: py + 4, "font-size": 11}, g, fmt(v));
  }
  svg("text", {transform: `translate(${x + 66},${y + h / 2}) rotate(90)`, "text-anchor": "middle",
               "font-size": 12}, g, label);
}
// rows x cols cells; o: {title, rows, cols, value(r, c), scale, rowLabel, colLabels (or
// null), xLabel, yLabel, barLabel, describe(r, c, v) for the tooltip, cell (px, optional)}
function heatmap(box, o) {
  const m = {l: 70, r: 90, t: 34, b: 56};
  const pw = o.cell ? o.cols * o.cell : Math.min(820, Math.max(300, o.cols * 9));
  const ph = o.cell ? o.rows * o.cell : Math.min(560, Math.max(140, o.rows * 5));
  const W = pw + m.l + m.r, H = ph + m.t + m.b + (o.extraBottom || 0);
  const root = html("div", {class: "chart heat", style: `width:${W}px;height:${H}px`}, box);
  const g = svg("svg", {width: W, height: H}, root);
  const cw = pw / o.cols, rh = ph / o.rows;
  let xTicks;
  const widest = o.colLabels ? Math.max(...o.colLabels.map(s => String(s).length)) : 0;
  if (o.colLabels && (o.rotateX || cw >= widest * 7.5 + 3)) {
    xTicks = o.colLabels.map((s, c) => [m.l + (c + 0.5) * cw, s]);
  } else {
    xTicks = niceTicks(0, o.cols - 1, 8).filter(t => t >= 0 && t < o.cols && t % 1 === 0)
      .map(t => [m.l + (t + 0.5) * cw, String(t)]);
  }
  const yTicks = (o.rowLabels && rh >= 11 ? o.rowLabels.map((s, r) => [r, s])
    : niceTicks(0, o.rows - 1, 6).filter(t => t >= 0 && t < o.rows && t % 1 === 0)
      .map(t => [t, String(t)])).map(([r, s]) => [m.t + (r + 0.5) * rh, s]);
  axes(g, {x: m.l, y: m.t, w: pw, h: ph, xTicks, yTicks, xLabel: o.xLabel, yLabel: o.yLabel,
           title: o.title, yPad: o.yPad || 50});
  if (o.rotateX) {
    for (const t of g.querySelectorAll("text")) {
      if (+t.getAttribute("y") === m.t + ph + 16) {
        const x = +t.getAttribute("x");                    // vertical: one label a column
        t.setAttribute("text-anchor", "end");
        t.setAttribute("transform", `rotate(-90 ${x} ${m.t + ph})`);
        t.setAttribute("x", x - 9);                        // ends 9 px below the axis ...
        t.setAttribute("y", m.t + ph + 4);                 // ... centred on its column
      }
    }
  }
  colourBar(g, m.l + pw + 14, m.t, ph, o.scale, o.barLabel);
  const canvas = html("canvas", {width: o.cols, height: o.rows}, root);
  Object.assign(canvas.style, {left: m.l + "px", top: m.t + "px", width: pw + "px",
                               height: ph + "px"});
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(o.cols, o.rows);
  for (let r = 0; r < o.rows; r++) {
    for (let c = 0; c < o.cols; c++) {
      const col = colour(o.value(r, c), o.scale), p = 4 * (r * o.cols + c);
      img.data[p] = col[0]; img.data[p + 1] = col[1]; img.data[p + 2] = col[2];
      img.data[p + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  canvas.addEventListener("mousemove", ev => {
    const b = canvas.getBoundingClientRect();
    const c = Math.min(o.cols - 1, Math.floor((ev.clientX - b.left) / b.width * o.cols));
    const r = Math.min(o.rows - 1, Math.floor((ev.clientY - b.top) / b.height * o.rows));
    if (r >= 0 && c >= 0) showTip(ev, o.describe(r, c, o.value(r, c)));
  });
  canvas.addEventListener("mouseleave", hideTip);
  return root;
}

// ------------------------------------------------------------------ scatter
function scatter(box, spec) {
  const W = 540, H = 440, m = {l: 70, r: 20, t: 34, b: 50};
  const pw = W - m.l - m.r, ph = H - m.t - m.b;
  const root = html("div", {class: "chart"}, box);
  const g = svg("svg", {width: W, height: H}, root);
  const X = v => m.l + v * pw, Y = v => m.t + ph - v * ph;
  const ticks = [0, 0.2, 0.4, 0.6, 0.8, 1];
  axes(g, {x: m.l, y: m.t, w: pw, h: ph, grid: true, xTicks: ticks.map(t => [X(t), fmt(t)]),
           yTicks: ticks.map(t => [Y(t), fmt(t)]), xLabel: spec.xLabel, yLabel: spec.yLabel,
           title: spec.title, yPad: 48});
  svg("line", {x1: X(0), y1: Y(1), x2: X(1), y2: Y(0), stroke: "#bbb",
               "stroke-dasharray": "4 4"}, g);
  const items = [];
  spec.groups.forEach((grp, k) => {
    const c = PALETTE[k % PALETTE.length];
    grp.x.forEach((x, u) => {
      const dot = svg("circle", {cx: X(x), cy: Y(grp.y[u]), r: 3.2, fill: c,
                                 "fill-opacity": 0.65}, g);
      dot.addEventListener("mousemove", ev => showTip(ev,
        `${grp.name}, unit ${u}\nfraction of steps below ${spec.low}: ${fmt(x)}\n` +
        `fraction of steps above ${spec.high}: ${fmt(grp.y[u])}`));
      dot.addEventListener("mouseleave", hideTip);
    });
    items.push({name: grp.name, colour: c, style: "dot"});
  });
  legend(root, items);
  return root;
}

// ------------------------------------------------------------------ static charts
function drawCharts() {
  for (const [id, spec] of Object.entries(DATA.charts)) {
    const box = document.getElementById(id);
    if (box) guarded(box, () => lineChart(box, spec));
  }
  const cm = DATA.confusion;
  if (cm) {
    const box = document.getElementById("confusion");
    guarded(box, () => {
      const n = cm.classes.length;
      const totals = cm.counts.map(row => row.reduce((a, b) => a + b, 0));
      heatmap(box, {
        title: `Confusion matrix on the ${cm.total.toLocaleString("en")} test names (each ` +
               "row sums to 1)",
        rows: n, cols: n, cell: 24, value: (r, c) => totals[r] ? cm.counts[r][c] / totals[r] : 0,
        scale: {kind: "sequential"}, rowLabels: cm.classes, colLabels: cm.classes,
        rotateX: true, extraBottom: 64, yPad: 84,
        xLabel: "", yLabel: "true language", barLabel: "fraction of the row's names",
        describe: (r, c, v) => `true ${cm.classes[r]}, predicted ${cm.classes[c]}\n` +
          `${cm.counts[r][c]} of ${totals[r]} names (${fmt(v)})`});
      const lab = box.querySelector("text.xlabel");
      lab.setAttribute("y", +lab.getAttribute("y") + 62);
      lab.textContent = "predicted language";
    });
  }
}
function guarded(box, draw) {
  try {
    draw();
  } catch (e) {
    html("p", {class: "err"}, box, "This chart could not be drawn: " + e);
    console.error(e);
  }
}

// ------------------------------------------------------------------ inside the network
function decode(b64) {
  const bytes = Uint8Array.from(atob(b64), ch => ch.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}
const INSIDE = DATA.inside;
const state = {view: 0, quantity: null, unit: 0};

function quantity(view, key) {
  const q = view.quantities.find(q => q.key === key);
  if (!q.values) q.values = decode(q.data);
  return q;
}
function scaleOf(q) {
  return {kind: q.scale, max: q.scale === "sequential" ? 1 : (q.max || 1)};
}
function shown(sym) {
  if (sym === "\n") return "\u21b5";
  if (sym === " ") return "\u00a0";
  return sym;
}
function insideSetup() {
  const views = INSIDE.views;
  const vs = document.getElementById("view-select"), qs = document.getElementById("q-select");
  const us = document.getElementById("unit-input");
  views.forEach((v, i) => html("option", {value: i}, vs, v.title));
  function fillQuantities() {
    const v = views[state.view];
    qs.innerHTML = "";
    for (const q of v.quantities) html("option", {value: q.key}, qs, `${q.key}: ${q.name}`);
    if (!v.quantities.some(q => q.key === state.quantity)) state.quantity = v.quantities[0].key;
    qs.value = state.quantity;
    us.max = v.units - 1;
    state.unit = Math.min(state.unit, v.units - 1);
    us.value = state.unit;
    document.getElementById("unit-count").textContent = `of 0 .. ${v.units - 1}`;
  }
  vs.addEventListener("change", () => { state.view = +vs.value; fillQuantities(); drawView(); });
  qs.addEventListener("change", () => { state.quantity = qs.value; colourText(); });
  us.addEventListener("input", () => {
    const u = Math.round(+us.value);
    if (Number.isFinite(u) && u >= 0 && u < views[state.view].units) {
      state.unit = u; colourText();
    }
  });
  for (const [id, d] of [["unit-prev", -1], ["unit-next", 1]]) {
    document.getElementById(id).addEventListener("click", () => {
      const n = views[state.view].units;
      state.unit = (state.unit + d + n) % n; us.value = state.unit; colourText();
    });
  }
  fillQuantities();
  buildText();
  drawView();
}
function pick(view, qkey, unit) {
  state.quantity = qkey; state.unit = unit;
  document.getElementById("q-select").value = qkey;
  document.getElementById("unit-input").value = unit;
  colourText();
  document.getElementById("text-view").scrollIntoView({block: "nearest"});
}
let spans = [];
function buildText() {
  const box = document.getElementById("text-view");
  box.className = INSIDE.kind === "symbol" ? "" : INSIDE.kind + "s";
  box.innerHTML = "";
  spans = [];
  for (const [start, end, caption] of INSIDE.segments) {
    const seg = html("span", {class: "seg"}, box);
    for (let t = start; t < end; t++) {
      const sym = INSIDE.symbols[t];
      const s = html("span", {class: "s", "data-step": t}, seg, shown(sym));
      if (sym === "\n" || sym === "<eos>") seg.appendChild(document.createElement("br"));
      else if (INSIDE.kind !== "symbol") seg.appendChild(document.createTextNode(" "));
      s.addEventListener("mousemove", ev => {
        const v = INSIDE.views[state.view], q = quantity(v, state.quantity);
        showTip(ev, `${INSIDE.hover[t]}\n${state.quantity}[unit ${state.unit}] at step ${t} ` +
                    `= ${fmt(q.values[t * v.units + state.unit])}`);
      });
      s.addEventListener("mouseleave", hideTip);
      spans.push(s);
    }
    if (caption) html("span", {class: "cap"}, seg, caption);
  }
  colourText();
}
function scaleBar(box, scale, label) {
  box.innerHTML = "";
  const [lo, hi] = scaleRange(scale);
  html("span", {}, box, label + ":");
  html("span", {}, box, fmt(lo));
  const bar = html("span", {class: "bar"}, box);
  const stops = [0, 0.25, 0.5, 0.75, 1].map(f => rgb(colour(lo + (hi - lo) * f, scale)));
  bar.style.background = `linear-gradient(to right, ${stops.join(",")})`;
  html("span", {}, box, fmt(hi));
}
function colourText() {
  const v = INSIDE.views[state.view], q = quantity(v, state.quantity);
  const u = state.unit;
  let m = 0;
  for (let t = 0; t < v.steps; t++) m = Math.max(m, Math.abs(q.values[t * v.units + u]));
  // the text is coloured on the chosen unit's own range (diverging), or [0, 1] (gates)
  const scale = q.scale === "sequential" ? {kind: "sequential"} : {kind: "diverging", max: m || 1};
  spans.forEach((s, t) => {
    const val = q.values[t * v.units + u], c = colour(val, scale);
    s.style.background = rgb(c);
    s.style.color = dark(c) ? "#fff" : "#111";
    s.dataset.value = val;
  });
  scaleBar(document.getElementById("text-scale"), scale,
           `${q.key}_t of unit ${u} (${q.name}), ${v.title}`);
}
function drawView() {
  const v = INSIDE.views[state.view];
  const syms = INSIDE.symbols.map(shown);
  const heat = document.getElementById("heatmaps");
  heat.innerHTML = "";
  for (const q of v.quantities) {
    quantity(v, q.key);
    guarded(heat, () => heatmap(heat, {
      title: `${q.name}: units x steps (${v.title})`, rows: v.units, cols: v.steps,
      value: (r, c) => q.values[c * v.units + r], scale: scaleOf(q),
      colLabels: syms, xLabel: "step t (the input symbols when there is room)",
      yLabel: "unit", barLabel: `${q.key}_t`,
      describe: (r, c, val) => `${q.key}_t, unit ${r}, step ${c}\n${INSIDE.hover[c]}\n` +
                               `value ${fmt(val)}`}));
  }
  const sat = document.getElementById("saturation");
  sat.innerHTML = "";
  const groups = Object.entries(v.saturation).map(([k, s]) => ({name: `gate ${k}`, x: s.left,
                                                                  y: s.right}));
  if (groups.length) {
    guarded(sat, () => scatter(sat, {
      title: `Gate saturation, ${v.title}: one point per unit and gate`, groups,
      low: 0.1, high: 0.9,
      xLabel: "fraction of steps with the gate below 0.1 (left-saturated)",
      yLabel: "fraction above 0.9 (right-saturated)"}));
  } else {
    html("p", {class: "note"}, sat, "This cell has no sigmoid gates.");
  }
  drawGradient(v);
  drawSelective(v);
  colourText();
}
function drawGradient(v) {
  const box = document.getElementById("gradient");
  box.innerHTML = "";
  const series = [];
  for (const [key, g] of Object.entries(v.grad)) {
    const name = `|dL/d${key}_t|`;
    const x = [], y = [];
    for (const [start, end] of INSIDE.segments) {
      for (let t = start; t < end; t++) { x.push(t); y.push(g[t]); }
      x.push(end - 0.5); y.push(null);              // no line between sequences
    }
    series.push({name, x, y});
  }
  const hover = INSIDE.symbols.map((s, t) => `(${JSON.stringify(s)})`);
  guarded(box, () => lineChart(box, {
    title: `Gradient through time, ${v.title}`, series,
    x: {label: "step t", hover}, y: {label: "2-norm over the units (log scale)", log: true},
    note: INSIDE.loss_text + ". Steps whose gradient is exactly 0 are left out of the log " +
          "scale."}));
}
function drawSelective(v) {
  const box = document.getElementById("selective");
  box.innerHTML = "";
  if (!v.selective.length) {
    html("p", {class: "note"}, box, "No class of steps both occurs and is absent in this input.");
    return;
  }
  const table = html("table", {class: "sel"}, box);
  const head = html("tr", {}, table);
  for (const t of ["steps that are ...", "how many", "units that follow them most closely " +
                   "(click one to colour the text by it)"]) html("th", {}, head, t);
  for (const row of v.selective) {
    const tr = html("tr", {}, table);
    html("td", {}, tr, row.feature);
    html("td", {class: "num"}, tr, row.steps === null ? "(a value)" : String(row.steps));
    const td = html("td", {}, tr);
    for (const e of row.units) {
      const b = html("button", {type: "button", "data-unit": e.unit, "data-q": e.quantity}, td,
                     `${e.quantity} unit ${e.unit} (r = ${e.r.toFixed(2)})`);
      b.addEventListener("click", () => pick(v, e.quantity, e.unit));
    }
  }
}

drawCharts();
if (INSIDE && INSIDE.views.length) guarded(document.getElementById("inside-body"), insideSetup);
document.body.dataset.ready = "1";
