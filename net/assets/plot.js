// The live view's plots, shared by the aggregator's and the node's page: no library, an inline
// SVG drawn from the numbers of /api/status.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Draws `series` ([{name, points: [[x, y], ...]}]) in `svg`: a line each, a circle (class
// "point") at each point, x from 1 to the last x (at least `opts.xMax`), y from `opts.min` (0)
// to `opts.max` (the largest y when absent); `opts.format` prints a y value.
function plot(svg, series, opts) {
  const W = 480, H = 220, L = 58, R = 12, T = 14, B = 30;
  const fmt = opts.format || ((v) => String(Math.round(v * 100) / 100));
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const xMax = Math.max(opts.xMax || 1, ...xs, 1);
  const yMin = opts.min !== undefined ? opts.min : 0;
  let yMax = opts.max !== undefined ? opts.max : Math.max(...ys, yMin + 1e-9);
  if (!(yMax > yMin)) yMax = yMin + 1;
  const px = (x) => L + (xMax <= 1 ? (W - L - R) / 2 : ((x - 1) / (xMax - 1)) * (W - L - R));
  const py = (y) => T + (1 - (y - yMin) / (yMax - yMin)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    svg.appendChild(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: py(v), y2: py(v) }));
    svg.appendChild(svgEl("text", { x: L - 6, y: py(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  svg.appendChild(svgEl("path", { class: "axis", d: `M${L},${T} V${H - B} H${W - R}` }));
  const step = Math.max(1, Math.ceil(xMax / 10));
  for (let x = 1; x <= xMax; x += step) {
    svg.appendChild(svgEl("text", { x: px(x), y: H - B + 16, "text-anchor": "middle" }, String(x)));
  }
  svg.appendChild(svgEl("text", { x: W - R, y: H - 2, "text-anchor": "end" }, opts.xLabel || "round"));
  let points = 0;
  series.forEach((s, i) => {
    const cls = `s${i % 3}`;
    if (s.points.length > 1) {
      const d = s.points.map((p, j) => `${j ? "L" : "M"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ");
      svg.appendChild(svgEl("path", { class: `line ${cls}`, d }));
    }
    for (const [x, y] of s.points) {
      const c = svgEl("circle", { class: `point ${cls}`, cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: 3 });
      c.appendChild(svgEl("title", {}, `${s.name}, round ${x}: ${fmt(y)}`));
      svg.appendChild(c);
      points++;
    }
    svg.appendChild(svgEl("text", { class: cls, x: L + 8 + i * 120, y: T + 10 }, s.name));
  });
  svg.setAttribute("data-points", String(points));
}

// Formats a byte count (B, kB, MB, GB).
function bytes(n) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

// How long ago a Unix time in milliseconds was, in words.
function ago(ms, now) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

// Sets the text of the element whose id is `id`.
function setText(id, text) {
  const e = document.getElementById(id);
  if (e) e.textContent = text;
}

// Fetches /api/status every `ms` milliseconds and hands it to `render`; says so on the page
// when the endpoint does not answer.
function poll(render, ms) {
  const tick = async () => {
    try {
      const r = await fetch("/api/status", { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      render(await r.json());
      setText("error", "");
    } catch (e) {
      setText("error", `the endpoint does not answer (${e.message}); the process may have stopped`);
    }
    setTimeout(tick, ms);
  };
  tick();
}
