// A small canvas line chart of one metric over steps. Clicking picks the nearest
// point; the current step is marked. Canvas, not SVG: no namespace URLs in exports.
// Optionally a second, faint line (the training batches' loss) and marks at given steps
// (loss spikes): each mark is a button over the canvas that calls `onMark(step)`.
// Its canvas helpers are shared with the sparkline (dynamics.js).

import { el, fmtNum } from "./util.js";

/** The 2-d context of `canvas`, its backing store sized to its CSS box at the device pixel
 *  ratio, cleared, in CSS pixels: {g, w, h}; null while the canvas has no size. */
export function canvasContext(canvas) {
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return null;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  return { g, w, h };
}

/** The theme's colours (the CSS custom properties of dashboard.css) as seen from `node`. */
export function themeColors(node) {
  const css = getComputedStyle(node);
  const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  return {
    grid: v("--grid", "#1d2944"), muted: v("--muted", "#7f8bab"), cyan: v("--cyan", "#00e5ff"), accent: v("--accent", "#ff2bd6"),
    green: v("--green", "#3dffa2"), red: v("--red", "#ff5577"), yellow: v("--yellow", "#ffe45c"),
    below: v("--below", "#ff285a"),  // a target below the logged candidates (the tokens' hatched shade)
  };
}

export class LineChart {
  /** @param {{label:string, color:string, log?:boolean, onPick:(step:number)=>void,
   *            onMark?:(step:number)=>void}} opts */
  constructor(opts) {
    this.opts = opts;
    this.points = [];
    this.second = [];   // the faint line: [{step, value}]
    this.marks = [];    // [{step, title}]
    this.current = null;
    this.root = el("div", "chart");
    const head = el("div", "chart-head");
    this.title = el("span", "chart-title", opts.label);
    this.value = el("span", "chart-value", "");
    head.append(this.title, this.value);
    this.canvas = el("canvas", "chart-canvas");
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", `${opts.label} over steps; click to go to a step`);
    this.tip = el("div", "chart-tip");
    this.tip.hidden = true;
    this.secondLabel = el("span", "chart-second", "");
    this.secondLabel.hidden = true;
    this.title.append(this.secondLabel);
    this.markLayer = el("div", "chart-marks");
    const body = el("div", "chart-body");
    body.append(this.canvas, this.markLayer, this.tip);
    this.root.append(head, body);
    this.canvas.addEventListener("click", (ev) => {
      const hit = this.nearest(ev);
      if (hit) opts.onPick(hit.step);
    });
    this.canvas.addEventListener("mousemove", (ev) => this.hover(ev));
    this.canvas.addEventListener("mouseleave", () => { this.hoverStep = null; this.tip.hidden = true; this.draw(); });
    if (typeof ResizeObserver !== "undefined") new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  /** points: [{step, value}] sorted by step; values may be null (skipped). */
  setData(points, current) {
    this.points = points.filter((p) => p.value !== null && p.value !== undefined && Number.isFinite(p.value) && (!this.opts.log || p.value > 0));
    this.current = current;
    this.draw();
  }

  /** A second, faint line (label: its name in the chart's head); empty points remove it. */
  setSecond(points, label) {
    this.second = points.filter((p) => p.value !== null && p.value !== undefined && Number.isFinite(p.value) && (!this.opts.log || p.value > 0));
    this.secondLabel.textContent = label ? ` + ${label}` : "";
    this.secondLabel.hidden = !this.second.length;
    this.draw();
  }

  /** Marks at steps: [{step, title}] (a button each, calling opts.onMark). */
  setMarks(marks) {
    this.marks = marks.slice();
    this.draw();
  }

  setCurrent(step) {
    if (step === this.current) return;
    this.current = step;
    this.draw();
  }

  frame() {
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    const pad = { l: 46, r: 10, t: 8, b: 18 };
    const pts = this.points.concat(this.second);
    const xs = pts.map((p) => p.step).concat(this.marks.map((m) => m.step));
    const ys = pts.map((p) => (this.opts.log ? Math.log10(p.value) : p.value));
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const span = y1 - y0;
    y0 -= span * 0.06; y1 += span * 0.06;
    return {
      w, h, pad, y0, y1,
      x: (s) => pad.l + ((s - x0) / (x1 - x0)) * (w - pad.l - pad.r),
      y: (v) => pad.t + (1 - ((this.opts.log ? Math.log10(v) : v) - y0) / (y1 - y0)) * (h - pad.t - pad.b),
    };
  }

  nearest(ev) {
    if (!this.points.length) return null;
    const f = this.frame();
    const rect = this.canvas.getBoundingClientRect();
    const mx = ev.clientX - rect.left;
    let best = null, bestD = Infinity;
    for (const p of this.points) {
      const d = Math.abs(f.x(p.step) - mx);
      if (d < bestD) { bestD = d; best = p; }
    }
    return best;
  }

  hover(ev) {
    const hit = this.nearest(ev);
    if (!hit) return;
    this.hoverStep = hit.step;
    const f = this.frame();
    this.tip.hidden = false;
    this.tip.textContent = `step ${hit.step} \u00b7 ${this.opts.label} ${fmtNum(hit.value, 4)}`;
    const x = f.x(hit.step);
    this.tip.style.left = `${Math.min(Math.max(0, x - 60), f.w - 150)}px`;
    this.draw();
  }

  draw() {
    const view = canvasContext(this.canvas);
    if (!view) return;
    const { g, w, h } = view;
    const { grid, muted, accent, yellow, red } = themeColors(this.root);
    g.font = "10px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
    const cur = this.points.find((p) => p.step === this.current);
    this.value.textContent = cur ? fmtNum(cur.value, 4) : "";
    if (!this.points.length && !this.second.length) {
      g.fillStyle = muted;
      g.fillText("no data yet", 10, h / 2);
      this.placeMarks(null);
      return;
    }
    const f = this.frame();
    // horizontal grid lines with labels
    g.strokeStyle = grid;
    g.fillStyle = muted;
    g.lineWidth = 1;
    for (let i = 0; i <= 3; i++) {
      const v = f.y0 + ((f.y1 - f.y0) * i) / 3;
      const yy = f.pad.t + (1 - i / 3) * (h - f.pad.t - f.pad.b);
      g.beginPath(); g.moveTo(f.pad.l, Math.round(yy) + 0.5); g.lineTo(w - f.pad.r, Math.round(yy) + 0.5); g.stroke();
      g.fillText(fmtNum(this.opts.log ? Math.pow(10, v) : v, 3), 4, yy + 3);
    }
    const all = this.points.length ? this.points : this.second;
    const first = Math.min(all[0].step, this.second.length ? this.second[0].step : Infinity);
    const last = Math.max(all[all.length - 1].step, this.second.length ? this.second[this.second.length - 1].step : -Infinity);
    g.fillText(String(first), f.pad.l, h - 4);
    const lastLabel = String(last);
    g.fillText(lastLabel, w - f.pad.r - g.measureText(lastLabel).width, h - 4);
    // the second line, faint, under the main one
    if (this.second.length) {
      g.strokeStyle = yellow;
      g.globalAlpha = 0.45;
      g.lineWidth = 1;
      g.beginPath();
      this.second.forEach((p, i) => (i ? g.lineTo(f.x(p.step), f.y(p.value)) : g.moveTo(f.x(p.step), f.y(p.value))));
      g.stroke();
      g.globalAlpha = 1;
    }
    // the marks: a red line across the chart (their buttons are placed over it)
    g.strokeStyle = red;
    g.lineWidth = 1;
    for (const m of this.marks) {
      const x = Math.round(f.x(m.step)) + 0.5;
      g.beginPath(); g.moveTo(x, f.pad.t); g.lineTo(x, h - f.pad.b); g.stroke();
    }
    this.placeMarks(f);
    // the line, with a soft glow
    g.strokeStyle = this.opts.color;
    g.lineWidth = 1.6;
    g.shadowColor = this.opts.color;
    g.shadowBlur = 6;
    g.beginPath();
    this.points.forEach((p, i) => (i ? g.lineTo(f.x(p.step), f.y(p.value)) : g.moveTo(f.x(p.step), f.y(p.value))));
    if (this.points.length) g.stroke();
    g.shadowBlur = 0;
    if (this.points.length <= 200) {
      g.fillStyle = this.opts.color;
      for (const p of this.points) g.fillRect(f.x(p.step) - 1.5, f.y(p.value) - 1.5, 3, 3);
    }
    for (const [step, color] of [[this.hoverStep, muted], [this.current, accent]]) {
      const p = this.points.find((q) => q.step === step);
      if (!p) continue;
      const x = f.x(p.step);
      g.strokeStyle = color;
      g.setLineDash([3, 3]);
      g.beginPath(); g.moveTo(x + 0.5, f.pad.t); g.lineTo(x + 0.5, h - f.pad.b); g.stroke();
      g.setLineDash([]);
      g.fillStyle = color;
      g.beginPath(); g.arc(x, f.y(p.value), 3.5, 0, Math.PI * 2); g.fill();
    }
  }

  /** One button per mark over the canvas (frame `f`; null: none shown). */
  placeMarks(f) {
    const layer = this.markLayer;
    const want = f ? this.marks : [];
    while (layer.childNodes.length > want.length) layer.lastChild.remove();
    while (layer.childNodes.length < want.length) {
      const b = el("button", "chart-mark", "\u25bc");
      b.addEventListener("click", (ev) => { ev.stopPropagation(); if (this.opts.onMark) this.opts.onMark(Number(b.dataset.step)); });
      layer.append(b);
    }
    want.forEach((m, i) => {
      const b = layer.childNodes[i];
      b.dataset.step = String(m.step);
      b.title = m.title || `step ${m.step}`;
      b.setAttribute("aria-label", b.title);
      b.style.left = `${f.x(m.step)}px`;
    });
  }
}
