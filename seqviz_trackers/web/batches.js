// The training batches view, beside the probe view: one optimizer step's batch, its rows
// sorted by loss, a histogram of the row losses (this step against the run's typical
// step), and the captured rows' tokens coloured by their loss; a click on a token shows
// its top-k in the detail panel. Data: the `batches` and `batch` routes (docs/spikes.md),
// through the dashboard's source. The step shown lives in app.state.batch.

import { el, fmtNum, metricContext } from "./util.js";
import { canvasContext, themeColors } from "./chart.js";
import { TokenGrid, paintGrids } from "./tokens.js";

const BATCH_ROWS_SHOWN = 64;  // rows listed per step (the highest losses); captured rows are among them

/** The steps whose batch can be opened: those a page carries, else those with a per-token
 *  capture or a spike (every other step has its row losses only). */
function openableSteps(summary) {
  if (Array.isArray(summary.available)) return summary.available.slice().sort((a, b) => a - b);
  return (summary.steps || []).filter((s) => s.captured || s.spike).map((s) => s.step);
}

export class BatchView {
  /** @param {import("./app.js").Dashboard} app */
  constructor(app) {
    this.app = app;
    this.summary = null;
    this.steps = [];      // openable steps, ascending
    this.batch = null;    // the `batch` answer shown
    this.error = null;
    this.grids = [];      // [{grid, seq, label}]
    this.sel = { seq: -1, index: -1 };
    this.root = el("section", "batchview");
    this.root.setAttribute("aria-label", "training batch");
    this.root.hidden = true;
  }

  /** Whether the run has training batches at all. */
  get available() {
    return Boolean(this.summary && (this.summary.steps || []).length);
  }

  /** The `batches` answer of the run (null: none, or the route failed). */
  setSummary(summary) {
    this.summary = summary && (summary.steps || []).length ? summary : null;
    this.steps = this.summary ? openableSteps(this.summary) : [];
  }

  /** The step to open for a wish (null: the latest spike, else the latest openable step). */
  pick(step) {
    if (step !== null && step !== undefined) return step;
    const spikes = (this.summary && this.summary.spikes) || [];
    return spikes.length ? spikes[spikes.length - 1] : this.steps.length ? this.steps[this.steps.length - 1] : null;
  }

  /** Load and show the batch of `step`. */
  async show(step) {
    const app = this.app;
    const run = app.state.run;
    const token = (this.token = (this.token || 0) + 1);
    if (!this.batch || this.batch.step !== step) this.renderLoading(step);
    try {
      const batch = await app.source.get("batch", { run, step });
      if (token !== this.token || run !== app.state.run) return;
      this.batch = batch;
      this.error = null;
    } catch (err) {
      if (token !== this.token) return;
      this.batch = null;
      this.error = `The training batch of step ${step} cannot be shown: ${err.message}`;
    }
    this.sel = { seq: -1, index: -1 };
    this.render();
    this.showDetail();
  }

  renderLoading(step) {
    this.clearGrids();
    this.root.replaceChildren(this.head(step), el("p", "hint", "Loading\u2026"));
  }

  clearGrids() {
    for (const g of this.grids) g.grid.destroy();
    this.grids = [];
  }

  /** The head: title, spike verdict, loss, neighbouring openable steps, a step picker, close. */
  head(step) {
    const head = el("div", "changes-head batch-head");
    const left = el("div", "batch-title-box");
    left.append(el("span", "changes-title", `Training batch \u00b7 step ${step}`));
    const b = this.batch && this.batch.step === step ? this.batch : null;
    if (b && b.spike) left.append(el("span", "batch-badge spike", `loss spike${b.spike.z !== null && b.spike.z !== undefined ? ` \u00b7 z ${fmtNum(b.spike.z, 3)}` : ""}`));
    if (b && b.reason && b.reason !== "spike") left.append(el("span", "batch-badge", b.reason.replace("_", " ")));
    if (b) {
      const median = b.spike && b.spike.median !== undefined ? ` (typical ${fmtNum(b.spike.median, 4)})` : "";
      left.append(el("span", "batch-loss", `loss ${fmtNum(b.loss, 4)}${median} \u00b7 ${(b.rows || []).length} rows`));
    }
    const right = el("div", "batch-nav");
    const at = this.steps.indexOf(step);
    const before = this.steps.filter((s) => s < step).pop();
    const after = this.steps.find((s) => s > step);
    const prev = el("button", "btn icon", "\u25c0");
    prev.setAttribute("aria-label", "previous captured batch");
    prev.title = "previous captured batch";
    prev.disabled = before === undefined;
    prev.addEventListener("click", () => this.app.openBatch(before));
    const next = el("button", "btn icon", "\u25b6");
    next.setAttribute("aria-label", "next captured batch");
    next.title = "next captured batch";
    next.disabled = after === undefined;
    next.addEventListener("click", () => this.app.openBatch(after));
    const select = el("select", "batch-step");
    select.setAttribute("aria-label", "training batch of step");
    const spikes = new Set((this.summary && this.summary.spikes) || []);
    const options = at < 0 ? [...this.steps, step].sort((x, y) => x - y) : this.steps;
    select.replaceChildren(...options.map((s) => {
      const o = el("option", "", `step ${s}${spikes.has(s) ? " \u00b7 spike" : ""}`);
      o.value = String(s);
      return o;
    }));
    select.value = String(step);
    select.addEventListener("change", () => this.app.openBatch(Number(select.value)));
    const close = el("button", "btn icon changes-close", "\u2715");
    close.title = "back to the probe sequences";
    close.setAttribute("aria-label", "close the training batch");
    close.addEventListener("click", () => this.app.closeBatch());
    right.append(prev, select, next, close);
    head.append(left, right);
    return head;
  }

  render() {
    const b = this.batch;
    const step = b ? b.step : this.app.state.batch.step;
    this.clearGrids();
    const parts = [this.head(step)];
    if (!b) {
      parts.push(el("p", "hint", this.error || "Loading\u2026"));
      this.root.replaceChildren(...parts);
      return;
    }
    parts.push(this.histogram(b.histogram || {}), this.legend());
    const capture = b.capture || null;
    const seqs = (capture && capture.sequences) || [];
    const ctx = { metric: "loss", metricCtx: metricContext(capture), showIds: this.app.state.showIds };
    const list = el("div", "batch-rows");
    const ranks = new Set((b.rows || []).map((r) => r.rank));
    for (const r of (b.rows || []).slice(0, BATCH_ROWS_SHOWN)) {
      const row = el("div", "batch-row" + (r.seq !== null && r.seq !== undefined ? " captured" : ""));
      row.dataset.row = String(r.row);
      const line = el("div", "batch-row-head");
      line.append(el("span", "batch-row-name", `row ${r.row}`), el("span", "batch-row-loss", `loss ${fmtNum(r.loss, 4)}`));
      if (r.kind) line.append(el("span", "batch-badge " + r.kind, r.kind === "top" ? "highest loss" : "random"));
      if (r.index !== null && r.index !== undefined) line.append(el("span", "faint", `example ${r.index}`));
      if (ranks.size > 1 && r.rank !== null && r.rank !== undefined) line.append(el("span", "faint", `rank ${r.rank}`));
      if (r.tokens !== null && r.tokens !== undefined) line.append(el("span", "faint", `${r.tokens} tokens`));
      if (r.hash) { const h = el("span", "faint batch-hash", `#${String(r.hash).slice(0, 8)}`); h.title = `hash of the row's token ids: ${r.hash}`; line.append(h); }
      row.append(line);
      const seq = r.seq !== null && r.seq !== undefined ? seqs[r.seq] : null;
      if (seq) {
        const label = `row ${r.row} (step ${b.step})`;
        const seqIndex = r.seq;
        const grid = new TokenGrid({ label, onSelect: (i) => this.select(seqIndex, i) });
        grid.render(seq, ctx);
        this.grids.push({ grid, seq: seqIndex, label });
        row.append(grid.root);
      } else {
        line.append(el("span", "faint", "\u00b7 loss only (not captured at this step)"));
      }
      list.append(row);
    }
    if ((b.rows || []).length > BATCH_ROWS_SHOWN) list.append(el("p", "hint small", `${b.rows.length - BATCH_ROWS_SHOWN} more rows with lower losses`));
    if (!seqs.length) parts.push(el("p", "hint small", "No tokens were captured at this step: only each row's loss is kept. Captured steps are in the step list above."));
    parts.push(list);
    this.root.replaceChildren(...parts);
    paintGrids(this.grids.map((g) => g.grid));
  }

  /** The histogram of row losses: this step (filled) against the typical step (outline). */
  histogram(hist) {
    const box = el("div", "batch-hist");
    const canvas = el("canvas", "batch-hist-canvas");
    canvas.setAttribute("role", "img");
    const edges = hist.edges || [];
    canvas.setAttribute("aria-label", `row losses of this step against ${hist.typical_steps || 0} typical steps`);
    const key = el("div", "batch-hist-key small");
    key.append(el("span", "k-this", "\u25a0 this step"), el("span", "k-typical", `\u25a1 typical step (${hist.typical_steps || 0} steps)`),
      el("span", "faint", edges.length ? `row loss ${fmtNum(edges[0], 3)} \u2013 ${fmtNum(edges[edges.length - 1], 3)}` : "no rows"));
    box.append(canvas, key);
    const draw = () => {
      const view = canvasContext(canvas);
      if (!view || edges.length < 2) return;
      const { g, w, h } = view;
      const { cyan, muted, grid } = themeColors(this.root);
      const a = hist.step || [], t = hist.typical || [];
      const n = Math.max(a.length, t.length);
      const top = Math.max(1e-9, ...a, ...t);
      const pad = { l: 4, r: 4, t: 4, b: 14 };
      const bw = (w - pad.l - pad.r) / n;
      const y = (v) => pad.t + (1 - v / top) * (h - pad.t - pad.b);
      g.strokeStyle = grid;
      g.beginPath(); g.moveTo(pad.l, h - pad.b + 0.5); g.lineTo(w - pad.r, h - pad.b + 0.5); g.stroke();
      for (let i = 0; i < n; i++) {
        const x = pad.l + i * bw;
        if (a[i]) { g.fillStyle = cyan; g.globalAlpha = 0.65; g.fillRect(x + 1, y(a[i]), Math.max(1, bw - 2), h - pad.b - y(a[i])); g.globalAlpha = 1; }
        if (t[i]) { g.strokeStyle = muted; g.strokeRect(x + 1.5, y(t[i]) + 0.5, Math.max(1, bw - 3), h - pad.b - y(t[i])); }
      }
      g.fillStyle = muted;
      g.font = "10px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
      g.fillText(fmtNum(edges[0], 3), pad.l, h - 2);
      const last = fmtNum(edges[edges.length - 1], 3);
      g.fillText(last, w - pad.r - g.measureText(last).width, h - 2);
    };
    requestAnimationFrame(draw);
    if (typeof ResizeObserver !== "undefined") new ResizeObserver(draw).observe(canvas);
    return box;
  }

  legend() {
    const legend = el("div", "legend");
    legend.append(el("span", "legend-title", "colour: loss"));
    const scale = el("span", "legend-scale");
    const swatches = el("span", "swatches");
    for (let i = 0; i < 10; i++) swatches.append(el("span", "sw m" + i));
    scale.append(el("span", "legend-end", "\u2265 10"), swatches, el("span", "legend-end", "0"));
    legend.append(scale, el("span", "legend-note", `rows sorted by loss, highest first \u00b7 click a token for its top-k`));
    return legend;
  }

  /** A click on token `index` of captured sequence `seq`. */
  select(seq, index) {
    this.sel = { seq, index };
    for (const g of this.grids) g.grid.select(g.seq === seq ? index : -1);
    this.showDetail();
  }

  /** The selected token into the detail panel (the hint when none). */
  showDetail() {
    const detail = this.app.detail;
    const b = this.batch;
    const seqs = (b && b.capture && b.capture.sequences) || [];
    const seq = seqs[this.sel.seq];
    const j = this.sel.index;
    if (!seq || j < 0 || j >= (seq.tokens || []).length) { detail.show(null); return; }
    const entry = this.grids.find((g) => g.seq === this.sel.seq);
    detail.show({
      step: b.step, seqLabel: entry ? entry.label : seq.name || "training row", index: j,
      token: seq.tokens[j], tokenId: seq.token_ids ? seq.token_ids[j] : undefined,
      prevToken: j > 0 ? seq.tokens[j - 1] : "",
      pred: (seq.predictions || []).find((p) => p.position === j - 1) || null,
    });
    detail.showHistory({ error: "A row of a training batch: seen at this step only, so it has no history over the run." });
  }
}
