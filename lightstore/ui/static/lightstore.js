// lightstore ui: the stage page's chart, parallel coordinates, run selection and
// constant-column toggle; the curves of the compare and run pages. Drawn with Plotly,
// served by the lightstore server itself (nothing loads from the internet).
// Every text handed to Plotly is escaped (Plotly reads a few HTML tags in labels);
// every text put into the page goes through textContent.
"use strict";

(function () {
  function esc(value) {
    return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function readJSON(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  const CONFIG = { displaylogo: false, responsive: true };
  const PALETTE = ["#3b6fb6", "#d9822b", "#3a9a5b", "#c0392b", "#8e5ea2", "#8c6d31",
    "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"];

  // -- the stage page ----------------------------------------------------------------------

  function stagePage() {
    const chart = readJSON("ls-chart-data");
    setUpSelection();
    setUpConstants();
    if (!chart || typeof Plotly === "undefined") return;
    const state = chart.state;
    const fields = new Map(chart.fields.map((f) => [f.key, f]));
    const controls = {
      x: document.getElementById("chart-x"),
      y: document.getElementById("chart-y"),
      color: document.getElementById("chart-color"),
      logx: document.getElementById("chart-logx"),
      logy: document.getElementById("chart-logy"),
    };

    function why(value, field, log) {
      if (value === undefined) return "no value";
      if (value !== null && typeof value === "object") return value.nf;
      if (field.numeric && typeof value !== "number") return "not a number";
      if (log && typeof value === "number" && value <= 0) return "≤ 0 on a log axis";
      return null;
    }

    function show(value) {
      if (value === undefined) return "—";
      if (value !== null && typeof value === "object") return value.nf;
      return String(value);
    }

    function describe(field, value, reason) {
      if (value === undefined) return `${field.name}: no value`;
      if (value !== null && typeof value === "object") return `${field.name}: ${value.nf}`;
      return `${field.name} = ${show(value)}` + (reason ? ` (${reason})` : "");
    }

    function remember() {
      const url = new URL(window.location.href);
      for (const key of ["x", "y", "color"]) url.searchParams.set(key, state[key] || "");
      url.searchParams.set("logx", state.logx ? "1" : "0");
      url.searchParams.set("logy", state.logy ? "1" : "0");
      url.searchParams.set("view", state.view);
      window.history.replaceState(null, "", url.toString());
    }

    function listUnplotted(skipped, what) {
      const box = document.getElementById("not-plotted");
      box.replaceChildren();
      const rows = document.querySelectorAll("#runs tbody tr");
      const missing = new Set(skipped.map((s) => s[0].rref));
      for (const row of rows) row.classList.toggle("not-plotted", missing.has(row.dataset.rref));
      if (!skipped.length) return;
      const details = document.createElement("details");
      details.open = skipped.length <= 12;
      const summary = document.createElement("summary");
      summary.textContent = `${skipped.length} run${skipped.length === 1 ? "" : "s"} not ${what}`;
      details.appendChild(summary);
      const list = document.createElement("ul");
      for (const [run, reason] of skipped) {
        const item = document.createElement("li");
        const link = document.createElement("a");
        link.href = run.url;
        link.textContent = run.label;
        item.appendChild(link);
        item.appendChild(document.createTextNode(": " + reason));
        item.dataset.rref = run.rref;
        list.appendChild(item);
      }
      details.appendChild(list);
      box.appendChild(details);
    }

    function scatter() {
      const xf = fields.get(state.x), yf = fields.get(state.y), cf = fields.get(state.color);
      const plotted = [], skipped = [];
      for (const run of chart.runs) {
        const xv = run.v[state.x], yv = run.v[state.y];
        const xwhy = why(xv, xf, state.logx), ywhy = why(yv, yf, state.logy);
        if (xwhy) skipped.push([run, describe(xf, xv, xwhy)]);
        else if (ywhy) skipped.push([run, describe(yf, yv, ywhy)]);
        else plotted.push(run);
      }
      const hover = (run) => esc(`${run.label}\n${xf.name} = ${show(run.v[state.x])}\n${yf.name} = ${show(run.v[state.y])}` +
        (cf ? `\n${cf.name} = ${show(run.v[state.color])}` : "")).replace(/\n/g, "<br>");
      const xOf = (run) => (xf.numeric ? run.v[state.x] : esc(run.v[state.x]));
      const traces = [];
      const base = { type: "scatter", mode: "markers", hoverinfo: "text", marker: { size: 10, opacity: 0.85 } };
      if (cf && cf.numeric) {
        const colours = plotted.map((r) => (typeof r.v[state.color] === "number" ? r.v[state.color] : null));
        traces.push({ ...base, x: plotted.map(xOf), y: plotted.map((r) => r.v[state.y]),
          text: plotted.map(hover), customdata: plotted.map((r) => r.url),
          marker: { ...base.marker, color: colours, colorscale: "Viridis", showscale: true,
            colorbar: { title: { text: esc(cf.name) } } } });
      } else if (cf) {
        const groups = new Map();
        for (const run of plotted) {
          const key = show(run.v[state.color]);
          if (!groups.has(key)) groups.set(key, []);
          groups.get(key).push(run);
        }
        let i = 0;
        for (const [key, runs] of [...groups.entries()].sort()) {
          traces.push({ ...base, name: esc(key), x: runs.map(xOf), y: runs.map((r) => r.v[state.y]),
            text: runs.map(hover), customdata: runs.map((r) => r.url),
            marker: { ...base.marker, color: PALETTE[i++ % PALETTE.length] } });
        }
      } else {
        traces.push({ ...base, x: plotted.map(xOf), y: plotted.map((r) => r.v[state.y]),
          text: plotted.map(hover), customdata: plotted.map((r) => r.url),
          marker: { ...base.marker, color: PALETTE[0] } });
      }
      const layout = {
        margin: { l: 70, r: 20, t: 20, b: 60 },
        height: 380,
        showlegend: Boolean(cf && !cf.numeric),
        legend: { title: { text: cf ? esc(cf.name) : "" } },
        xaxis: { title: { text: esc(xf.name) }, type: state.logx ? "log" : (xf.numeric ? "linear" : "category"), automargin: true },
        yaxis: { title: { text: esc(yf.name) }, type: state.logy ? "log" : "linear", automargin: true },
        hovermode: "closest",
      };
      const div = document.getElementById("chart");
      Plotly.react(div, traces, layout, CONFIG).then(() => {
        div.dataset.points = String(plotted.length);
        div.dataset.xaxis = layout.xaxis.type;
        div.dataset.yaxis = layout.yaxis.type;
      });
      if (!div.dataset.bound) {
        div.dataset.bound = "1";
        div.on("plotly_click", (event) => {
          const point = event.points && event.points[0];
          if (point && point.customdata) window.location.href = point.customdata;
        });
      }
      listUnplotted(skipped, "plotted");
    }

    function parcoords() {
      const dims = [], skipped = [], kept = [];
      const wanted = chart.fields.filter((f) => f.kind !== "run");
      // A field some runs lack is drawn only if most runs have it; runs without it are listed.
      const drawn = wanted.filter((f) => chart.runs.filter((r) => r.v[f.key] !== undefined).length * 2 > chart.runs.length);
      for (const run of chart.runs) {
        const bad = drawn.find((f) => run.v[f.key] === undefined || (run.v[f.key] !== null && typeof run.v[f.key] === "object"));
        if (bad) skipped.push([run, describe(bad, run.v[bad.key], null)]);
        else kept.push(run);
      }
      for (const f of drawn) {
        const values = kept.map((r) => r.v[f.key]);
        if (f.numeric && values.every((v) => typeof v === "number")) {
          const low = Math.min(...values), high = Math.max(...values);
          if (low > 0 && high / low >= 100) {
            // Plotly's parallel axes are linear: a log-spaced field is drawn as its log10.
            const ticks = [];
            for (let e = Math.ceil(Math.log10(low)); e <= Math.floor(Math.log10(high)); e++) ticks.push(e);
            dims.push({ label: esc(f.name + " (log)"), values: values.map(Math.log10),
              tickvals: ticks, ticktext: ticks.map((e) => esc(String(Number("1e" + e)))) });
          } else {
            dims.push({ label: esc(f.name), values });
          }
        } else {
          const categories = [...new Set(values.map(show))].sort();
          if (categories.length > 30) continue;
          dims.push({ label: esc(f.name), values: values.map((v) => categories.indexOf(show(v))),
            tickvals: categories.map((_, i) => i), ticktext: categories.map(esc) });
        }
      }
      const colour = kept.map((r) => (typeof r.v[state.y] === "number" ? r.v[state.y] : 0));
      const div = document.getElementById("parcoords");
      Plotly.react(div, [{ type: "parcoords", dimensions: dims,
        line: { color: colour, colorscale: "Viridis", showscale: true } }],
      { margin: { l: 70, r: 70, t: 50, b: 30 }, height: 380 }, CONFIG).then(() => {
        div.dataset.dimensions = String(dims.length);
      });
      listUnplotted(skipped, "drawn");
    }

    function draw() {
      const scatterView = state.view !== "parcoords";
      document.getElementById("chart").hidden = !scatterView;
      document.getElementById("parcoords").hidden = scatterView;
      for (const button of document.querySelectorAll(".ls-tabs button")) {
        button.classList.toggle("current", button.dataset.view === state.view);
      }
      for (const name of ["x", "color", "logx", "logy"]) {
        if (controls[name]) controls[name].disabled = !scatterView;
      }
      if (scatterView) scatter(); else parcoords();
      remember();
    }

    for (const name of ["x", "y", "color"]) {
      controls[name].addEventListener("change", () => {
        state[name] = controls[name].value;
        if (name === "x" || name === "y") {
          // A new axis starts linear, unless it is the one that started on a log scale.
          state["log" + name] = false;
          controls["log" + name].checked = false;
        }
        draw();
      });
    }
    for (const name of ["logx", "logy"]) {
      controls[name].addEventListener("change", () => {
        state[name] = controls[name].checked;
        draw();
      });
    }
    for (const button of document.querySelectorAll(".ls-tabs button")) {
      button.addEventListener("click", () => {
        state.view = button.dataset.view;
        draw();
      });
    }
    draw();
  }

  function setUpSelection() {
    const boxes = [...document.querySelectorAll("#runs input.select-run")];
    const count = document.getElementById("selected-count");
    const button = document.getElementById("compare-button");
    const all = document.getElementById("select-all");
    if (!button) return;
    function update() {
      const n = boxes.filter((b) => b.checked).length;
      for (const b of boxes) b.closest("tr").classList.toggle("selected", b.checked);
      button.disabled = n < 1;
      count.textContent = n ? `${n} selected` : "tick runs to compare them side by side";
    }
    for (const b of boxes) b.addEventListener("change", update);
    if (all) {
      all.addEventListener("change", () => {
        for (const b of boxes) b.checked = all.checked;
        update();
      });
    }
    update();
  }

  function setUpConstants() {
    const toggle = document.getElementById("show-constants");
    const table = document.getElementById("runs");
    if (!toggle || !table) return;
    toggle.addEventListener("change", () => {
      table.classList.toggle("show-constants", toggle.checked);
      const url = new URL(window.location.href);
      if (toggle.checked) url.searchParams.set("const", "1"); else url.searchParams.delete("const");
      window.history.replaceState(null, "", url.toString());
    });
  }

  // -- curves (compare and run pages) -------------------------------------------------------
  // A value that is not finite is a gap in its line (null), and the steps where it is so are
  // shaded and labelled (NaN, inf) in the line's colour: a diverged run shows as such.

  function curveFigure(lines, title, height, log) {
    const traces = [], shapes = [], annotations = [];
    lines.forEach((line, i) => {
      const colour = PALETTE[i % PALETTE.length];
      traces.push({
        type: "scatter", mode: line.steps.length > 1 ? "lines" : "markers",
        name: esc(line.label), x: line.steps, y: line.values, connectgaps: false,
        line: { color: colour, width: 2 }, marker: { color: colour },
        hovertemplate: esc(line.label) + "<br>step %{x}: %{y}<extra></extra>",
      });
      for (const [first, last, why, count] of line.nonfinite || []) {
        shapes.push({ type: "rect", xref: "x", yref: "paper", x0: first - 0.5, x1: last + 0.5,
          y0: 0, y1: 1, fillcolor: colour, opacity: 0.12, line: { width: 0 }, layer: "below" });
        annotations.push({ x: first - 0.5, xref: "x", xanchor: "left", y: 1 - 0.07 * (i % 8),
          yref: "paper", yanchor: "top", showarrow: false,
          text: esc(count > 1 ? `${why} ×${count}` : why), font: { color: colour, size: 11 } });
      }
    });
    const layout = {
      margin: { l: 70, r: 20, t: title ? 30 : 20, b: 45 }, height, showlegend: lines.length > 1,
      title: title ? { text: esc(title), font: { size: 14 }, x: 0.02 } : undefined,
      xaxis: { title: { text: "step" } },
      yaxis: { type: log ? "log" : "linear" },
      shapes, annotations,
    };
    return { traces, layout };
  }

  function listGaps(box, lines) {
    if (!box) return;
    box.replaceChildren();
    for (const line of lines) {
      if (!line.why) continue;
      const item = document.createElement("li");
      item.textContent = `${line.label}: ${line.why}`;
      item.dataset.rref = line.rref;
      box.appendChild(item);
    }
  }

  function curvesPage() {
    const data = readJSON("ls-curves-data");
    const box = document.getElementById("curves");
    if (!data || !box || typeof Plotly === "undefined") return;
    const select = document.getElementById("curve-name");
    const logy = document.getElementById("curve-logy");
    const names = Object.keys(data.curves);
    const height = Number(box.dataset.height) || 360;
    const charts = new Map();
    if (box.dataset.each === "1") {
      // One chart per series (a run's page).
      for (const name of names) {
        const div = document.createElement("div");
        div.className = "ls-plot";
        div.dataset.series = name;
        box.appendChild(div);
        charts.set(name, div);
      }
    } else {
      charts.set(null, box);
    }
    function draw() {
      const log = Boolean(logy && logy.checked);
      let drawn = 0;
      for (const [name, div] of charts) {
        const shown = name === null ? (select ? select.value : names[0]) : name;
        const lines = data.curves[shown] || [];
        const figure = curveFigure(lines, name === null ? "" : shown, height, log);
        figure.layout.yaxis.title = { text: esc(shown) };
        Plotly.react(div, figure.traces, figure.layout, CONFIG).then(() => {
          div.dataset.lines = String(figure.traces.length);
          div.dataset.shaded = String(figure.layout.shapes.length);
          drawn += 1;
          if (drawn === charts.size) box.dataset.drawn = String(drawn);
        });
        if (name === null) listGaps(document.getElementById("curve-gaps"), lines);
      }
    }
    if (select) select.addEventListener("change", draw);
    if (logy) logy.addEventListener("change", draw);
    draw();
  }

  function start() {
    if (document.getElementById("runs")) stagePage();
    if (document.getElementById("ls-curves-data")) curvesPage();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
