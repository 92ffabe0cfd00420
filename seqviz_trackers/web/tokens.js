// The token grid of one sequence: a box per token (text, faint id, and under it the
// model's top-1 guess for that token, made at the previous position: the visual shift).
// Box widths are computed here (canvas text metrics), so the grid lays itself out and
// only the boxes near the visible part of the page exist in the DOM; they are reused
// and only changed fields are written. Long sequences (thousands of tokens) stay fast.

import { el, visibleToken, METRICS, BELOW_TOP, own } from "./util.js";
import { predictionFacts } from "./entry.js";
import { CHANGE_CLASS, changeBucket } from "./dynamics.js";

const TOKEN_FONT = 13;
const PRED_FONT = 11;
const MAX_WIDTH = 140;
const MIN_WIDTH = 30;
const PADDING = 10;
const MIN_SCALE = 0.6;
const BOX_HEIGHT = 50;
const GAP = 3;
const OVERSCAN = 240;  // px drawn above and below the visible part
// Boxes live in blocks of this many rows, each painted on its own: a scroll repaints the
// blocks it brings boxes into, not a whole grid (a grid of 4,096 tokens was 11 ms a frame).
const BLOCK_ROWS = 16;
const FONT_FAMILY = 'ui-monospace, "JetBrains Mono", "Fira Code", SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace';

let measureCtx = null;
const widthCaches = new Map();  // font size -> (text -> px)

/** Width in px of `text` at `size` px in the token font (cached). */
function textWidth(text, size) {
  let cache = widthCaches.get(size);
  if (!cache) widthCaches.set(size, (cache = new Map()));
  let w = cache.get(text);
  if (w === undefined) {
    if (!measureCtx) measureCtx = document.createElement("canvas").getContext("2d");
    measureCtx.font = `${size}px ${FONT_FAMILY}`;
    w = measureCtx.measureText(text).width;
    if (cache.size > 50000) cache.clear();
    cache.set(text, w);
  }
  return w;
}

const shownCache = new Map();
function shownOf(raw) {
  let shown = shownCache.get(raw);
  if (shown === undefined) {
    if (shownCache.size > 50000) shownCache.clear();
    shown = visibleToken(raw);
    shownCache.set(raw, shown);
  }
  return shown;
}

/** Box width and font scales for one token string and its predicted string:
 *  boxes grow with their text up to 140 px, then the text shrinks down to 60 %. */
function fitToken(shown, predShown, into = {}) {
  const tw = textWidth(shown, TOKEN_FONT);
  const pw = predShown ? textWidth(predShown, PRED_FONT) : 0;
  const room = MAX_WIDTH - PADDING;
  into.width = Math.max(MIN_WIDTH, Math.min(MAX_WIDTH, Math.ceil(Math.max(tw, pw)) + PADDING));
  into.tokenScale = tw > room ? Math.max(MIN_SCALE, room / tw) : 1;
  into.predScale = pw > room ? Math.max(MIN_SCALE, room / pw) : 1;
  return into;
}

const BUCKET_CLASS = ["tok m0", "tok m1", "tok m2", "tok m3", "tok m4", "tok m5", "tok m6", "tok m7", "tok m8", "tok m9"];

const gridsAlive = new Set();
let scrollQueued = false;
function onAnyScroll() {
  if (scrollQueued) return;
  scrollQueued = true;
  requestAnimationFrame(() => {
    scrollQueued = false;
    paintGrids([...gridsAlive]);
  });
}

export class TokenGrid {
  /** @param {{onSelect:(index:number)=>void, label?:string}} opts */
  constructor(opts) {
    this.opts = opts;
    this.root = el("div", "grid");
    this.root.tabIndex = 0;
    this.root.setAttribute("role", "listbox");
    this.root.setAttribute("aria-label", opts.label || "tokens");
    this.live = new Map();   // token index -> its box, for the tokens near the screen
    this.blocks = [];        // block k holds the boxes of rows k * BLOCK_ROWS ... (made when needed)
    this.free = [];          // boxes not in use (hidden), reused
    this.items = [];         // per token: what its box shows
    this.selected = -1;
    this.width = 0;
    this.windowSize = 0;     // > 0: only a window of that many tokens around the selected one
    this.span = null;        // that window {lo, hi} (null: every token)
    this.root.addEventListener("mousedown", (ev) => { if (ev.target.closest(".tok")) ev.preventDefault(); });
    this.root.addEventListener("click", (ev) => {
      const cell = ev.target.closest(".tok");
      if (cell && cell._index >= 0) this.opts.onSelect(cell._index);
    });
    this.root.addEventListener("keydown", (ev) => this.onKey(ev));
    if (!gridsAlive.size) {
      document.addEventListener("scroll", onAnyScroll, { capture: true, passive: true });
      window.addEventListener("resize", onAnyScroll);
    }
    gridsAlive.add(this);
    if (typeof ResizeObserver !== "undefined") {
      new ResizeObserver(() => { if (this.root.clientWidth !== this.width) this.paint(); }).observe(this.root);
    }
  }

  onKey(ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    let next = null;
    const at = this.selected < 0 ? 0 : this.selected;
    if (ev.key === "ArrowRight") next = at + 1;
    else if (ev.key === "ArrowLeft") next = at - 1;
    else if (ev.key === "Home") next = 0;
    else if (ev.key === "End") next = this.items.length - 1;
    else if (ev.key === "Escape") { this.root.blur(); ev.preventDefault(); return; }
    else return;
    ev.preventDefault();
    ev.stopPropagation();
    next = Math.max(0, Math.min(this.items.length - 1, next));
    this.opts.onSelect(next);
    this.reveal(next);
  }

  /** Scroll the page so token `index` is on screen. */
  reveal(index) {
    const it = this.items[index];
    if (!it) return;
    const rect = this.root.getBoundingClientRect();
    const top = rect.top + it.y, bottom = top + BOX_HEIGHT;
    const view = window.innerHeight;
    if (top < 80) window.scrollBy(0, top - 80);
    else if (bottom > view - 10) window.scrollBy(0, bottom - view + 10);
    this.paint();
  }

  makeCell() {
    const cell = el("div", "tok");
    cell.setAttribute("role", "option");
    const t = el("span", "tt");
    const i = el("span", "ti");
    const p = el("span", "tp");
    cell.append(t, i, p);
    cell._t = t; cell._i = i; cell._p = p;
    cell._index = -1;
    cell._v = { text: null, id: null, pred: null, cls: null, pcls: null, width: 0, ts: 1, ps: 1, title: null, x: -1, y: -1 };
    return cell;
  }

  /**
   * Set the sequence to show; it is drawn by the next paint() (or paintGrids() of several).
   * ctx: {metric, metricCtx, showIds, change?}; with metric "change", `change` holds
   * Δ log p(target) per token (undefined: not compared).
   * Returns per-sequence figures {meanP, meanPMax, below, belowK, accuracy, count}: meanP is the mean
   * p(target) over the predictions, counting a target outside the logged candidates as 0;
   * with `below` such targets (outside a top-`belowK`), the true mean lies between meanP and meanPMax (each counted
   * at its bound p < p_n instead).
   */
  render(seq, ctx) {
    const tokens = seq.tokens || [];
    const ids = seq.token_ids || [];
    const n = tokens.length;
    const predFor = new Array(n);
    for (const pred of seq.predictions || []) {
      const j = pred.position + 1;
      if (j >= 0 && j < n) predFor[j] = pred;
    }
    const byChange = ctx.metric === "change";
    const change = byChange ? ctx.change || [] : null;
    const metric = own(METRICS, ctx.metric) || METRICS.prob;
    let sumP = 0, nP = 0, hits = 0, nHit = 0, below = 0, sumBound = 0, belowK = 0;
    const items = this.items.length >= n ? this.items : this.items.concat(new Array(n - this.items.length).fill(null));
    const f = {};  // scratch, refilled for every token
    for (let j = 0; j < n; j++) {
      const has = predictionFacts(predFor[j], false, f) !== null;
      if (has) {
        if (f.p !== undefined && f.p !== null) { sumP += f.p; nP++; }
        else if (f.pLt !== undefined) { below++; sumBound += f.pLt; belowK = Math.max(belowK, f.rankGt); }  // p(target) unknown, below the last candidate's p
        if (f.correct !== undefined) { nHit++; if (f.correct) hits++; }
      }
      const it = items[j] || (items[j] = { fit: {}, x: 0, y: 0 });
      it.raw = tokens[j];
      it.text = shownOf(tokens[j]);
      it.pred = has && f.top1 ? shownOf(f.top1.token) : "";
      it.id = ids[j] === undefined ? "" : String(ids[j]);
      const bucket = !has ? -1 : byChange ? changeBucket(change[j]) : metric.bucket(f, ctx.metricCtx);
      it.cls = has ? (bucket === BELOW_TOP ? "tok mbelow" : bucket < 0 ? "tok mna" : byChange ? CHANGE_CLASS[bucket] : BUCKET_CLASS[bucket]) : "tok first";
      it.pcls = has && f.top1 ? (f.correct ? "tp ok" : "tp no") : "tp";
      fitToken(it.text, it.pred, it.fit);
    }
    items.length = n;
    this.items = items;
    if (this.selected >= n) this.selected = -1;
    this.root.classList.toggle("hide-ids", !ctx.showIds);
    this.width = 0;  // lay out again at the next paint
    const nMean = nP + below;
    return { meanP: nMean ? sumP / nMean : null, meanPMax: nMean ? (sumP + sumBound) / nMean : null, below, belowK,
      accuracy: nHit ? hits / nHit : null, count: n };
  }

  /** Collapse to a window of `size` tokens around the selected one (0: show every token). */
  setWindow(size) {
    this.windowSize = Math.max(0, size | 0);
    this.ensureSpan();
    this.paint();
  }

  /** The tokens laid out: [lo, hi). A window follows the selected token when it leaves it. */
  ensureSpan() {
    const n = this.items.length;
    let span = null;
    if (this.windowSize && n > this.windowSize) {
      span = this.span;
      const sel = this.selected;
      if (!span || span.hi > n || (sel >= 0 && (sel < span.lo || sel >= span.hi))) {
        const centre = sel >= 0 ? sel : 0;
        const hi = Math.min(n, Math.max(0, centre - (this.windowSize >> 1)) + this.windowSize);
        span = { lo: hi - this.windowSize, hi };
      }
    }
    const old = this.span;
    if (old === span || (old && span && old.lo === span.lo && old.hi === span.hi)) return;
    this.span = span;
    this.width = 0;  // lay out again
    if (this.opts.onWindow) this.opts.onWindow(span, n);
  }

  /** Place the boxes of the tokens shown (positions only), wrapping at the grid's width. */
  layout(width) {
    this.width = width;
    let x = 0, y = 0;
    const lo = this.span ? this.span.lo : 0, hi = this.span ? this.span.hi : this.items.length;
    const rowStarts = [lo];
    for (let j = lo; j < hi; j++) {
      const it = this.items[j];
      const w = it.fit.width;
      if (x > 0 && x + w > width) { x = 0; y += BOX_HEIGHT + GAP; rowStarts.push(j); }
      it.x = x; it.y = y;
      x += w + GAP;
    }
    this.rowStarts = rowStarts;
    this.end = hi;
    this.root.style.height = hi > lo ? `${y + BOX_HEIGHT}px` : "0px";
  }

  /** Draw the boxes near the visible part of the page. `measured` ({width, rect}), when
   *  given, was read beforehand so that several grids cost one layout, not one each. */
  paint(measured) {
    const width = measured ? measured.width : this.root.clientWidth;
    if (!this.root.isConnected || !width) { this.width = 0; return; }
    this.ensureSpan();
    if (width !== this.width) this.layout(width);
    const rect = measured ? measured.rect : this.root.getBoundingClientRect();
    const view = window.innerHeight || 800;
    const lo = -rect.top - OVERSCAN, hi = view - rect.top + OVERSCAN;
    const rows = this.rowStarts || [0];
    const rowH = BOX_HEIGHT + GAP;
    let first = 0, last = -1;
    if (this.end > rows[0] && hi > 0 && lo < rect.height) {
      const r0 = Math.max(0, Math.floor(lo / rowH));
      const r1 = Math.min(rows.length - 1, Math.floor(hi / rowH));
      first = rows[r0];
      last = r1 + 1 < rows.length ? rows[r1 + 1] - 1 : this.end - 1;
    }
    // a box stays with its token while that token is near the screen: a scroll writes only
    // the boxes of the rows it brings in, never every box (work ~ rows scrolled in)
    const live = this.live;
    for (const [j, cell] of live) {
      if (j < first || j > last) { live.delete(j); cell._index = -1; this.free.push(cell); }
    }
    for (let j = first; j <= last; j++) {
      let cell = live.get(j);
      if (!cell) {
        cell = this.free.pop() || this.makeCell();
        live.set(j, cell);
        cell._index = j;
      }
      this.drawCell(cell, j);
    }
    for (const cell of this.free) if (cell.isConnected) cell.remove();  // kept for reuse
  }

  /** The block holding the boxes of the row at `y` (px from the grid's top). */
  blockAt(y) {
    const k = Math.floor(y / (BLOCK_ROWS * (BOX_HEIGHT + GAP)));
    let block = this.blocks[k];
    if (!block) {
      block = this.blocks[k] = el("div", "grid-block");
      block._top = k * BLOCK_ROWS * (BOX_HEIGHT + GAP);
      block.style.top = block._top + "px";
      block.style.height = BLOCK_ROWS * (BOX_HEIGHT + GAP) + "px";
      this.root.append(block);
    }
    return block;
  }

  /** Write into box `cell` what token j shows (only the fields that differ). */
  drawCell(cell, j) {
    const it = this.items[j];
    const v = cell._v;
    const block = this.blockAt(it.y);
    if (cell.parentNode !== block) { block.append(cell); v.y = -1; }
    const fit = it.fit;
    if (fit.width !== v.width) { cell.style.width = fit.width + "px"; v.width = fit.width; }
    if (it.x !== v.x) { cell.style.left = it.x + "px"; v.x = it.x; }
    const y = it.y - block._top;
    if (y !== v.y) { cell.style.top = y + "px"; v.y = y; }
    if (fit.tokenScale !== v.ts) { cell._t.style.fontSize = fit.tokenScale === 1 ? "" : (TOKEN_FONT * fit.tokenScale).toFixed(1) + "px"; v.ts = fit.tokenScale; }
    if (fit.predScale !== v.ps) { cell._p.style.fontSize = fit.predScale === 1 ? "" : (PRED_FONT * fit.predScale).toFixed(1) + "px"; v.ps = fit.predScale; }
    if (it.text !== v.text) { cell._t.textContent = it.text; v.text = it.text; }
    if (it.id !== v.id) { cell._i.textContent = it.id; v.id = it.id; }
    if (it.pred !== v.pred) { cell._p.textContent = it.pred; v.pred = it.pred; }
    const cls = j === this.selected ? it.cls + " sel" : it.cls;
    if (cls !== v.cls) { cell.className = cls; v.cls = cls; }
    if (it.pcls !== v.pcls) { cell._p.className = it.pcls; v.pcls = it.pcls; }
    const title = it.id ? `${it.raw}  (id ${it.id})` : it.raw;
    if (title !== v.title) { cell.title = title; v.title = title; }
    const sel = j === this.selected ? "true" : null;
    if (sel !== v.sel) { if (sel) cell.setAttribute("aria-selected", sel); else cell.removeAttribute("aria-selected"); v.sel = sel; }
  }

  select(index) {
    if (index === this.selected) return;
    this.selected = index;
    this.paint();
  }

  destroy() {
    gridsAlive.delete(this);
  }
}

/** Paint several grids with two layouts in all, not two each: read, write, read, write. */
export function paintGrids(grids) {
  const widths = grids.map((g) => (g.root.isConnected ? g.root.clientWidth : 0));
  grids.forEach((g, i) => { if (widths[i]) g.ensureSpan(); if (widths[i] && widths[i] !== g.width) g.layout(widths[i]); });
  const rects = grids.map((g, i) => (widths[i] ? g.root.getBoundingClientRect() : null));
  grids.forEach((g, i) => g.paint({ width: widths[i], rect: rects[i] }));
}
