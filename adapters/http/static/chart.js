// The raid chart: completion % on the left scale, raiders on their own right scale, and a time axis whose
// ticks fall on round clock times, so a 31-second raid and a 6-hour raid both get distinct labels.
(() => {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const SECOND = 1000, MINUTE = 60 * SECOND, HOUR = 60 * MINUTE;
  const TIME_STEPS = [1, 2, 5, 10, 15, 30].map((n) => n * SECOND)
    .concat([1, 2, 5, 10, 15, 30].map((n) => n * MINUTE), [1, 2, 3, 6, 12, 24].map((n) => n * HOUR));

  function el(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text != null) node.textContent = text;
    return node;
  }

  // The smallest round step that puts at most `most` ticks on the span.
  function timeStep(span, most) {
    return TIME_STEPS.find((step) => span / step <= most) || 24 * HOUR * Math.ceil(span / (24 * HOUR * most));
  }

  function timeTicks(t0, t1, most) {
    const step = timeStep(t1 - t0, most);
    const ticks = [];
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) ticks.push(t);
    const fmt = { hour: "2-digit", minute: "2-digit" };
    if (step < MINUTE) fmt.second = "2-digit";
    return ticks.map((t) => ({ t, label: new Date(t).toLocaleTimeString([], fmt) }));
  }

  // Whole-number raider ticks from 0 to a round top at or above the largest count.
  function countTicks(max) {
    const raw = Math.max(1, max) / 4;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = Math.max(1, [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw));
    const top = Math.max(step, Math.ceil(Math.max(1, max) / step) * step);
    const ticks = [];
    for (let v = 0; v <= top; v += step) ticks.push(v);
    return { top, ticks };
  }

  function draw(svg, points, t0, t1) {
    const W = Math.max(240, Math.round(svg.getBoundingClientRect().width) || 600), H = 220;
    const L = 40, R = 40, T = 22, B = 26;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const span = Math.max(1, t1 - t0);
    const raiders = countTicks(Math.max(0, ...points.map((p) => p.raiders)));
    const x = (t) => L + ((Math.min(Math.max(t, t0), t1) - t0) / span) * (W - L - R);
    const yPct = (v) => T + (1 - v / 100) * (H - T - B);
    const yRaiders = (v) => T + (1 - v / raiders.top) * (H - T - B);
    const parts = [];
    for (const g of [0, 25, 50, 75, 100]) {
      parts.push(el("line", { x1: L, x2: W - R, y1: yPct(g), y2: yPct(g), stroke: "#e3e7ef", "stroke-width": 1 }));
      parts.push(el("text", { x: L - 6, y: yPct(g) + 4, "text-anchor": "end", class: "pct-tick" }, `${g}%`));
    }
    for (const v of raiders.ticks) {
      parts.push(el("line", { x1: W - R, x2: W - R + 4, y1: yRaiders(v), y2: yRaiders(v), stroke: "#0b6e62" }));
      parts.push(el("text", { x: W - R + 7, y: yRaiders(v) + 4, "text-anchor": "start", class: "raider-tick" }, String(v)));
    }
    parts.push(el("text", { x: W - 4, y: 12, "text-anchor": "end", class: "axis-title" }, "raiders"));
    parts.push(el("text", { x: 4, y: 12, "text-anchor": "start", class: "axis-title" }, "done"));
    for (const { t, label } of timeTicks(t0, t1, Math.max(2, Math.floor((W - L - R) / 90)))) {
      parts.push(el("line", { x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4, stroke: "#8a93a6" }));
      parts.push(el("text", { x: x(t), y: H - 8, "text-anchor": "middle", class: "time-tick" }, label));
    }
    if (points.length) {
      const line = (y, key) => points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
      const last = points[points.length - 1];
      parts.push(el("path", { d: `${line(yPct, "pct")} L${x(last.t).toFixed(1)},${yPct(0)} L${x(points[0].t).toFixed(1)},${yPct(0)} Z`, fill: "rgba(74,74,199,.10)" }));
      parts.push(el("path", { d: line(yRaiders, "raiders"), fill: "none", stroke: "#0b6e62", "stroke-width": 2, "stroke-dasharray": "5 4" }));
      parts.push(el("path", { d: line(yPct, "pct"), fill: "none", stroke: "#4a4ac7", "stroke-width": 2.5, "stroke-linejoin": "round" }));
      parts.push(el("circle", { cx: x(last.t), cy: yPct(last.pct), r: 4, fill: "#4a4ac7" }));
    }
    svg.replaceChildren(...parts);
  }

  window.nubiChart = { draw, timeTicks, countTicks };
})();
