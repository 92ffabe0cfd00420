// Training dynamics views: the diverging "change" colours (Δ log p(target) between two
// steps), the sparkline of one token's target probability and rank over the run, and the
// list of what changed between two steps. Their data comes from the routes `series` and
// `diff` (see docs/dynamics.md), through the same source as everything else.

import { el, fmtNum, fmtPct, visibleToken, visibleName } from "./util.js";
import { canvasContext, themeColors } from "./chart.js";
import { boundText } from "./entry.js";

/** A diff row's p(target) and rank at one step: "< 0.8%" / "> 20" when the target is
 *  outside the logged candidates (the route's p_lt_* / rank_gt_*). */
function rowP(p, pLt) {
  return p === null && pLt !== null && pLt !== undefined ? `< ${fmtPct(pLt)}` : fmtPct(p);
}
function rowRank(rank, rankGt) {
  return rank ?? (rankGt ? `> ${rankGt}` : "\u2013");
}

// Δ log p(target) (nats) -> diverging bucket: 0 = much worse ... 4 = about the same ... 8 = much better
const CHANGE_EDGES = [-2, -1, -0.4, -0.1, 0.1, 0.4, 1, 2];
export const CHANGE_CLASS = ["tok d0", "tok d1", "tok d2", "tok d3", "tok d4", "tok d5", "tok d6", "tok d7", "tok d8"];

/** The colour bucket of a change in log p(target); -1 when unknown. */
export function changeBucket(delta) {
  if (delta === undefined || delta === null || Number.isNaN(delta)) return -1;
  let b = 0;
  while (b < CHANGE_EDGES.length && delta >= CHANGE_EDGES[b]) b++;
  return b;
}

/** Per sequence index of the entry shown (`part[indexKey]`: step B of a diff, run A's entry
 *  of a run comparison): an array indexed by token (the box of token j shows the prediction
 *  made at position j - 1), holding Δ log p or undefined. */
export function changesByToken(diff, indexKey = "index_b") {
  const out = new Map();
  for (const part of (diff && diff.per_token) || []) {
    const arr = [];
    part.positions.forEach((pos, k) => { arr[pos + 1] = part.delta_logp[k]; });
    out.set(part[indexKey], arr);
  }
  return out;
}

export function signed(x, digits = 2) {
  if (x === undefined || x === null) return "\u2013";
  return (x > 0 ? "+" : "") + fmtNum(x, digits);
}

// -- the sparkline ------------------------------------------------------------------------

/** Per step of a `series` answer: the bound of p(target) (p_lt) where p is unknown, and of
 *  the rank (rank_gt) where the rank is unknown (the target is not among the logged
 *  candidates), else null. */
function seriesBounds(s) {
  const pLt = s.p_lt || [], rankGt = s.rank_gt || [];
  return {
    p: s.steps.map((_, i) => (s.target_prob[i] === null && pLt[i] !== null && pLt[i] !== undefined ? pLt[i] : null)),
    rank: s.steps.map((_, i) => (s.target_rank[i] === null && rankGt[i] ? rankGt[i] : null)),
  };
}

/** One token's target probability (top band) and rank (bottom band, log scale, rank 1 on
 *  top) over the logged steps; learned-at step and forgetting steps marked. Where the
 *  target is not among the logged candidates, the bound (p < p_n, rank > n) is drawn as a
 *  hatched strip with a dashed edge, labelled, never as a value. Click: go there. */
export class Sparkline {
  /** @param {{onPick:(step:number)=>void}} opts */
  constructor(opts) {
    this.opts = opts;
    this.series = null;
    this.current = null;
    this.root = el("div", "spark");
    this.canvas = el("canvas", "spark-canvas");
    this.canvas.setAttribute("role", "img");
    this.tip = el("div", "chart-tip");
    this.tip.hidden = true;
    const body = el("div", "spark-body");
    body.append(this.canvas, this.tip);
    this.facts = el("div", "spark-facts small");
    this.root.append(body, this.facts);
    this.canvas.addEventListener("click", (ev) => { const i = this.nearest(ev); if (i >= 0) this.opts.onPick(this.series.steps[i]); });
    this.canvas.addEventListener("mousemove", (ev) => this.hover(ev));
    this.canvas.addEventListener("mouseleave", () => { this.hoverIndex = -1; this.tip.hidden = true; this.draw(); });
    if (typeof ResizeObserver !== "undefined") new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  /** series: the `series` route's answer; current: the step shown; overlay (optional):
   *  {series, label, own} the same token in another run, drawn over it (own: this run's label). */
  show(series, current, overlay = null) {
    this.series = series;
    this.current = current;
    this.overlay = overlay && overlay.series && overlay.series.steps && overlay.series.steps.length ? overlay : null;
    this.hoverIndex = -1;
    const s = series;
    this.bounds = seriesBounds(s);
    const nBound = this.bounds.rank.filter((r) => r !== null).length;
    const n = this.bounds.rank.find((r) => r !== null);
    this.boundLabel = n ? boundText(n) : "";
    this.root.dataset.bound = String(nBound);
    this.canvas.setAttribute("aria-label", `target probability and rank over ${s.steps.length} steps`
      + (nBound ? `; below the top ${n} at ${nBound} of them (${this.boundLabel})` : ""));
    this.root.dataset.learnedAt = s.learned_at === null ? "" : String(s.learned_at);
    const facts = [];
    const learned = el("div", "spark-learned");
    if (s.learned_at !== null && s.learned_at !== undefined) {
      learned.append(el("span", "k-learned", "learned at step " + s.learned_at));
      learned.append(el("span", "faint", " \u00b7 top-1 from then on"));
    } else {
      learned.append(el("span", "faint", "not learned (not top-1 through the last step)"));
    }
    facts.push(learned);
    if (s.learned_at_top5 !== null && s.learned_at_top5 !== undefined) facts.push(el("div", "faint", `in the top 5 from step ${s.learned_at_top5}`));
    if (nBound) {
      const pKnown = this.bounds.p.every((p) => p === null);
      facts.push(el("div", "spark-bound", `below the top ${n} at ${nBound} of ${s.steps.length} steps drawn: hatched = only a bound, `
        + (pKnown ? `rank > ${n}` : this.boundLabel)));
    }
    if (this.overlay) {
      const o = this.overlay, at = o.series.learned_at;
      learned.prepend(el("span", "spark-run-a", `${o.own}: `));
      const line = el("div", "spark-learned-b");
      line.append(el("span", "spark-run-b", `${o.label}: `),
        el("span", at === null || at === undefined ? "faint" : "k-learned-b", at === null || at === undefined ? "not learned" : `learned at step ${at}`));
      facts.splice(1, 0, line);
    }
    const times = s.times_forgotten ?? (s.forgotten || []).length;  // a page may hold only the latest events
    if (times) {
      const list = (s.forgotten || []).slice(-3).map((f) => `step ${f.step} (top-1 since ${f.since})`).join(", ");
      facts.push(el("div", "k-forgot", `forgotten ${times}\u00d7` + (list ? `: ${list}` : "")));
    }
    const shown = s.steps.length, all = s.num_steps ?? shown;
    const range = shown > 1 ? ` (${s.steps[0]}\u2013${s.steps[shown - 1]})` : "";
    facts.push(el("div", "faint", (shown < all ? `${shown} of ${all} steps drawn` : `${all} step${all === 1 ? "" : "s"}`) + `${range} \u00b7 click to go to a step`));
    this.facts.replaceChildren(...facts);
    this.draw();
  }

  frame() {
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    const all = this.overlay ? [this.series, this.overlay.series] : [this.series];
    let x0 = Math.min(...all.map((s) => s.steps[0])), x1 = Math.max(...all.map((s) => s.steps[s.steps.length - 1]));
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    const pad = { l: 30, r: 8 };
    const pTop = 6, pBot = Math.round(h * 0.58), rTop = pBot + 10, rBot = h - 6;
    let maxRank = 10;
    for (const s of all) for (const r of s.target_rank) if (r && r > maxRank) maxRank = r;
    for (const r of this.bounds.rank) if (r && 5 * r > maxRank) maxRank = 5 * r;  // room below "rank > n"
    const logMax = Math.log10(maxRank);
    return {
      w, h, pad, pTop, pBot, rTop, rBot, maxRank,
      x: (s) => pad.l + ((s - x0) / (x1 - x0)) * (w - pad.l - pad.r),
      yp: (p) => pBot - p * (pBot - pTop),
      yr: (r) => rTop + (Math.log10(Math.max(1, r)) / logMax) * (rBot - rTop),
    };
  }

  nearest(ev) {
    if (!this.series || !this.series.steps.length) return -1;
    const f = this.frame();
    const mx = ev.clientX - this.canvas.getBoundingClientRect().left;
    let best = -1, bestD = Infinity;
    this.series.steps.forEach((s, i) => { const d = Math.abs(f.x(s) - mx); if (d < bestD) { bestD = d; best = i; } });
    return best;
  }

  hover(ev) {
    const i = this.nearest(ev);
    if (i < 0) return;
    this.hoverIndex = i;
    const s = this.series;
    const f = this.frame();
    this.tip.hidden = false;
    const rank = s.target_rank[i], pLt = this.bounds.p[i], rankGt = this.bounds.rank[i];
    const p = pLt !== null ? `< ${fmtPct(pLt)}` : fmtPct(s.target_prob[i]);
    this.tip.textContent = `step ${s.steps[i]} \u00b7 p ${p} \u00b7 rank ${rank ?? (rankGt ? `> ${rankGt}` : "\u2013")}`;
    this.tip.style.left = `${Math.min(Math.max(0, f.x(s.steps[i]) - 60), f.w - 170)}px`;
    this.draw();
  }

  draw() {
    const s = this.series;
    const view = s ? canvasContext(this.canvas) : null;
    if (!view) return;
    const { g, w, h } = view;
    const { grid, muted, cyan, accent, green, red, yellow, below } = themeColors(this.root);
    const f = this.frame();
    g.font = "9px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
    g.lineWidth = 1;
    g.strokeStyle = grid;
    for (const y of [f.pTop, f.pBot, f.rTop, f.rBot]) { g.beginPath(); g.moveTo(f.pad.l, y + 0.5); g.lineTo(w - f.pad.r, y + 0.5); g.stroke(); }
    g.fillStyle = muted;
    g.fillText("p 1", 2, f.pTop + 7);
    g.fillText("0", 2, f.pBot);
    g.fillText("#1", 2, f.rTop + 7);
    g.fillText(f.maxRank >= 1000 ? "#" + fmtNum(f.maxRank, 2) : "#" + f.maxRank, 2, f.rBot);
    // marks: forgetting steps (red), the learned-at step (green), the current step (yellow)
    const vline = (step, color, dash) => {
      const x = Math.round(f.x(step)) + 0.5;
      g.strokeStyle = color; g.setLineDash(dash); g.beginPath(); g.moveTo(x, f.pTop); g.lineTo(x, f.rBot); g.stroke(); g.setLineDash([]);
    };
    for (const ev of s.forgotten || []) vline(ev.step, red, [2, 2]);
    const o = this.overlay;
    const learnedMark = (at, color, dash, label, y) => {
      if (at === null || at === undefined) return;
      vline(at, color, dash);
      const x = f.x(at);
      const tw = g.measureText(label).width;
      g.fillStyle = color;
      g.fillText(label, Math.min(Math.max(f.pad.l, x + 3), w - f.pad.r - tw), y);
    };
    learnedMark(s.learned_at, green, [], (o ? o.own + " " : "") + "learned " + s.learned_at, f.rTop - 2);
    if (o) learnedMark(o.series.learned_at, yellow, [4, 3], `${o.label} learned ${o.series.learned_at}`, f.pTop + 16);
    const line = (values, y, color, steps = s.steps, dash = []) => {
      g.strokeStyle = color; g.lineWidth = 1.5; g.shadowColor = color; g.shadowBlur = 4; g.setLineDash(dash);
      g.beginPath();
      let drawing = false;
      values.forEach((val, i) => {
        if (val === null || val === undefined) { drawing = false; return; }
        const px = f.x(steps[i]), py = y(val);
        if (drawing) g.lineTo(px, py); else g.moveTo(px, py);
        drawing = true;
      });
      g.stroke(); g.shadowBlur = 0; g.lineWidth = 1; g.setLineDash([]);
      if (values.length <= 60) {
        g.fillStyle = color;
        values.forEach((val, i) => { if (val !== null && val !== undefined) g.fillRect(f.x(steps[i]) - 1, y(val) - 1, 2, 2); });
      }
    };
    if (o) {  // the other run under this one, dashed
      line(o.series.target_prob, f.yp, yellow, o.series.steps, [4, 3]);
      line(o.series.target_rank, f.yr, yellow, o.series.steps, [1, 3]);
    }
    const bp = this.bounds.p, br = this.bounds.rank;
    this.drawBound(g, f, bp, f.yp, f.pBot, below, this.boundLabel.replace(/^rank > \d+, /, ""));
    this.drawBound(g, f, br, f.yr, f.rBot, below, this.boundLabel.replace(/, p < .*/, ""));
    line(s.target_prob, f.yp, cyan);
    line(s.target_rank, f.yr, accent);
    for (const [i, color] of [[this.hoverIndex, muted], [s.steps.indexOf(this.current), yellow]]) {
      if (i === undefined || i < 0) continue;
      const x = f.x(s.steps[i]);
      g.fillStyle = color;
      const p = s.target_prob[i] ?? bp[i], r = s.target_rank[i] ?? br[i];
      if (p !== null) { g.beginPath(); g.arc(x, f.yp(p), 3, 0, Math.PI * 2); g.fill(); }
      if (r !== null) { g.beginPath(); g.arc(x, f.yr(r), 3, 0, Math.PI * 2); g.fill(); }
    }
  }

  /** The bound `values` (per step, null where there is none) in one band: per run of
   *  consecutive bounded steps, a hatched strip from the bound (`y(value)`, at least 4 px
   *  tall) to the band's `floor`, its edge dashed; `label` once, above the first run. */
  drawBound(g, f, values, y, floor, color, label) {
    const s = this.series;
    let labelled = false;
    for (let i = 0; i < values.length; i++) {
      if (values[i] === null) continue;
      let j = i;
      while (j + 1 < values.length && values[j + 1] !== null) j++;
      const x0 = f.x(s.steps[i]) - 3, x1 = f.x(s.steps[j]) + 3;
      const ys = values.slice(i, j + 1).map((v) => Math.min(y(v), floor - 4));
      const top = Math.min(...ys);
      g.save();
      g.beginPath(); g.rect(x0, top, x1 - x0, floor - top); g.clip();
      g.globalAlpha = 0.18; g.fillStyle = color; g.fillRect(x0, top, x1 - x0, floor - top);
      g.globalAlpha = 0.7; g.strokeStyle = color; g.lineWidth = 1;
      g.beginPath();
      for (let k = x0 - (floor - top); k < x1; k += 4) { g.moveTo(k, floor); g.lineTo(k + (floor - top), top); }
      g.stroke();
      g.restore();
      g.strokeStyle = color; g.lineWidth = 1.5; g.setLineDash([3, 2]);
      g.beginPath();
      ys.forEach((yy, k) => { const px = k === 0 ? x0 : k === ys.length - 1 ? x1 : f.x(s.steps[i + k]); if (k) g.lineTo(px, yy); else g.moveTo(px, yy); });
      if (ys.length === 1) g.lineTo(x1, ys[0]);
      g.stroke(); g.setLineDash([]); g.lineWidth = 1;
      if (!labelled && label) {
        const tw = g.measureText(label).width;
        g.fillStyle = color;
        g.fillText(label, Math.min(Math.max(f.pad.l, x0), f.w - f.pad.r - tw), top - 3);
        labelled = true;
      }
      i = j;
    }
  }
}

// -- the list of changes between two steps --------------------------------------------------
const TABS = [
  { key: "worsened", label: "most worsened", sort: ["delta_logp", 1] },
  { key: "learned", label: "learned", sort: ["delta_logp", -1] },
  { key: "forgotten", label: "forgotten", sort: ["delta_logp", 1] },
  { key: "improved", label: "most improved", sort: ["delta_logp", -1] },
];
export const CHANGE_TABS = TABS.map((t) => t.key);
const COLUMNS = [
  { key: "where", label: "token", sort: "where" },
  { key: "p", label: "p(target) A\u2192B", sort: "p_b" },
  { key: "rank", label: "rank A\u2192B", sort: "rank_b" },
  { key: "delta_logp", label: "\u0394 log p", sort: "delta_logp" },
  { key: "divergence", label: "JS", sort: "divergence" },
];

function sortValue(row, key) {
  if (key === "where") return row.index * 1e6 + row.pos;
  return row[key];
}

/** `rows` sorted by `value(row, key)` in direction `dir` (1 ascending); unknown values last. */
export function sortRows(rows, key, dir, value = sortValue) {
  return rows.slice().sort((a, b) => {
    const x = value(a, key), y = value(b, key);
    if (x === y) return 0;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * dir;
  });
}

/** A table head whose columns ({label, sort}) sort on click or Enter: onSort({key, dir});
 *  a column sorted already flips, another starts in `firstDir(column)`. */
export function sortableHead(columns, key, dir, firstDir, onSort) {
  const thead = el("thead");
  const hr = el("tr");
  for (const c of columns) {
    const th = el("th", "sortable" + (c.sort === key ? " sorted" : ""), c.label + (c.sort === key ? (dir > 0 ? " \u25b4" : " \u25be") : ""));
    th.tabIndex = 0;
    th.dataset.sort = c.sort;
    th.setAttribute("aria-sort", c.sort === key ? (dir > 0 ? "ascending" : "descending") : "none");
    const flip = () => onSort({ key: c.sort, dir: c.sort === key ? -dir : firstDir(c) });
    th.addEventListener("click", flip);
    th.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); flip(); } });
    hr.append(th);
  }
  thead.append(hr);
  return thead;
}

/** The "token" cell of a row: its sequence, token number, context and the target after it. */
export function whereCell(seqLabel, pos, context, target) {
  const where = el("td", "c-where");
  const seq = el("span", "c-seq", visibleName(seqLabel));
  seq.title = seqLabel;
  where.append(seq, el("span", "faint", ` #${pos + 1} `));
  where.append(el("span", "chip c-ctx", visibleToken(context)), el("span", "faint", " \u2192 "), el("span", "chip c-target", visibleToken(target)));
  return where;
}

/** A table row that calls `pick` on click or Enter. */
export function pickableRow(title, pick) {
  const tr = el("tr", "change-row");
  tr.tabIndex = 0;
  tr.title = title;
  tr.addEventListener("click", pick);
  tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); pick(); } });
  return tr;
}

/** What changed from step A to step B: learned / forgotten / most worsened / most improved
 *  tokens, sortable; a row jumps to its token (at step B). */
export class ChangeList {
  /** @param {{onPick:(row:object)=>void, onTab:(tab:string)=>void, onSort:(sort:{key:string,dir:number})=>void, onClose:()=>void}} opts */
  constructor(opts) {
    this.opts = opts;
    this.root = el("section", "changes");
    this.root.setAttribute("aria-label", "what changed between two steps");
  }

  /** view: {diff, error, loading, tab, sort:{key,dir}|null, title} */
  show(view) {
    const root = this.root;
    root.replaceChildren();
    const head = el("div", "changes-head");
    head.append(el("span", "changes-title", view.title || "What changed"));
    const close = el("button", "btn icon changes-close", "\u2715");
    close.title = "close the list";
    close.setAttribute("aria-label", "close the list of changes");
    close.addEventListener("click", () => this.opts.onClose());
    head.append(close);
    root.append(head);
    const d = view.diff;
    if (!d) {
      root.append(el("p", "hint", view.error || (view.loading ? "Loading\u2026" : "")));
      return;
    }
    const s = d.summary || {};
    const sum = el("div", "changes-summary");
    const fact = (text, cls) => sum.append(el("span", cls || "", text));
    fact(`step ${d.a} \u2192 ${d.b}`, "cmp-summary");
    if (d.loss_a !== null && d.loss_b !== null && d.loss_a !== undefined && d.loss_b !== undefined) fact(`loss ${fmtNum(d.loss_a, 4)} \u2192 ${fmtNum(d.loss_b, 4)}`);
    fact(`${s.compared ?? 0} tokens compared`);
    fact(`${s.improved ?? 0} better \u00b7 ${s.worsened ?? 0} worse`);
    fact(`${s.wrong_to_right ?? 0} wrong\u2192right \u00b7 ${s.right_to_wrong ?? 0} right\u2192wrong`);
    fact(`mean \u0394 log p ${signed(s.mean_delta_logp, 3)}`);
    root.append(sum);
    const div = d.divergence || {};
    const note = el("div", "changes-note faint small",
      `JS = ${div.label || div.name || "divergence"} (${div.name || "?"}): an approximation from the logged top-k, not the full distributions. \u0394 log p = log p_B \u2212 log p_A of the token that came next (negative: its loss went up).`);
    if (div.description) note.title = div.description;
    root.append(note);

    const tabs = el("div", "changes-tabs");
    tabs.setAttribute("role", "tablist");
    for (const t of TABS) {
      const rows = d[t.key] || [];
      const b = el("button", "btn tab" + (t.key === view.tab ? " on" : ""), `${t.label} (${rows.length})`);
      b.setAttribute("role", "tab");
      b.setAttribute("aria-selected", String(t.key === view.tab));
      b.dataset.tab = t.key;
      b.addEventListener("click", () => this.opts.onTab(t.key));
      tabs.append(b);
    }
    root.append(tabs);

    const tab = TABS.find((t) => t.key === view.tab) || TABS[0];
    const [key, dir] = view.sort ? [view.sort.key, view.sort.dir] : tab.sort;
    const rows = sortRows(d[tab.key] || [], key, dir);
    if (!rows.length) {
      root.append(el("p", "hint", `No ${tab.label} tokens between step ${d.a} and step ${d.b}.`));
      return;
    }
    const table = el("table", "changes-table");
    const thead = sortableHead(COLUMNS, key, dir,
      (c) => (c.sort === "delta_logp" ? tab.sort[1] : c.sort === "where" || c.sort === "rank_b" ? 1 : -1), (sort) => this.opts.onSort(sort));
    const tbody = el("tbody");
    for (const r of rows) {
      const tr = pickableRow(`${r.name || "sequence " + r.index}, position ${r.pos}: go to this token at step ${d.b}`, () => this.opts.onPick(r));
      const where = whereCell(r.name || `seq ${r.index}`, r.pos, r.context, r.target);
      const guess = r.top1_b !== null && r.top1_b !== undefined && r.flip !== 1 && r.rank_b !== 1;
      if (guess) where.append(el("span", "faint c-guess", " guessed "), el("span", "chip", visibleToken(r.top1_b)));
      const num = (text, cls) => el("td", "num" + (cls ? " " + cls : ""), text);
      const dl = r.delta_logp;
      tr.append(where,
        num(`${rowP(r.p_a, r.p_lt_a)} \u2192 ${rowP(r.p_b, r.p_lt_b)}`),
        num(`${rowRank(r.rank_a, r.rank_gt_a)} \u2192 ${rowRank(r.rank_b, r.rank_gt_b)}`),
        num(signed(dl), dl === null || dl === undefined ? "" : dl < 0 ? "worse" : "better"),
        num(fmtNum(r.divergence, 2)));
      tbody.append(tr);
    }
    table.append(thead, tbody);
    const scroll = el("div", "changes-body-scroll");
    scroll.append(table);
    root.append(scroll);
  }
}
