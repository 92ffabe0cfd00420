// The detail panel for the selected token: target probability, rank, entropy, loss,
// its history over the run (a sparkline of p(target) and rank, learned-at step marked),
// the top-5 as labelled bars and the top-20 as a mini bar chart, the target in green.

import { el, visibleToken, visibleName, fmtNum, fmtPct } from "./util.js";
import { predictionFacts, rankBound } from "./entry.js";
import { Sparkline } from "./dynamics.js";

export class DetailPanel {
  /** @param {{onPickStep?:(step:number)=>void}} opts */
  constructor(opts = {}) {
    this.spark = new Sparkline({ onPick: opts.onPickStep || (() => {}) });
    this.history = el("div", "history");
    this.root = el("aside", "detail");
    this.root.setAttribute("aria-live", "polite");
    this.show(null);
  }

  /** info: {step, seqLabel, index, token, tokenId, prevToken, pred, candidates?} or null;
   *  `candidates`: {error} while the prediction's candidates are still to come (error: why not). */
  show(info) {
    const root = this.root;
    root.replaceChildren();
    root.append(el("div", "panel-title", "Selected token"));
    if (!info) {
      root.append(el("p", "hint", "Click a token to see what the model predicted for it. Keyboard: Tab into a sequence, then \u2190/\u2192."));
      return;
    }
    const head = el("div", "sel-head");
    const chip = el("span", "chip big", visibleToken(info.token));
    head.append(chip);
    if (info.tokenId !== undefined && info.tokenId !== null) head.append(el("span", "faint", `id ${info.tokenId}`));
    root.append(head);
    const where = el("div", "faint small sel-where", `${visibleName(info.seqLabel)} \u00b7 position ${info.index} \u00b7 step ${info.step}`);
    where.title = info.seqLabel;
    root.append(where);
    const f = predictionFacts(info.pred);
    if (!f) {
      root.append(el("p", "hint", "The first token has no prediction: nothing comes before it."));
      return;
    }
    const after = el("div", "small after");
    after.append(el("span", "faint", "predicted after "), el("span", "chip", visibleToken(info.prevToken)));
    root.append(after);

    const stats = el("div", "stats");
    const stat = (label, value, cls) => {
      const box = el("div", "stat" + (cls ? " " + cls : ""));
      box.append(el("div", "stat-v", value), el("div", "stat-l", label));
      stats.append(box);
    };
    const bounded = f.rankGt !== undefined;
    stat("p(target)", f.p === undefined && bounded ? `< ${fmtPct(f.pLt)}` : fmtPct(f.p), "p");
    stat("rank", bounded ? `> ${f.rankGt}` : f.rank === undefined ? "\u2013" : "#" + f.rank);
    stat("entropy", fmtNum(f.entropy, 3));
    stat("loss", fmtNum(f.loss, 3));
    stat("top-1", f.correct === undefined ? "\u2013" : f.correct ? "\u2713 hit" : "\u2717 miss", f.correct ? "good" : "bad");
    root.append(stats);
    root.append(el("div", "panel-sub", "Over the run"), this.history);

    const target = info.pred.target_token_id;
    const top = f.top;
    if (!top) {
      const wait = info.candidates && info.candidates.error;
      root.append(el("div", "panel-sub", "Top candidates"), el("p", "hint small candidates-wait", wait || "Loading the top candidates\u2026"));
      return;
    }
    root.append(el("div", "panel-sub", "Top 5"));
    const bars = el("div", "bars");
    const maxP = top.length ? Math.max(top[0].p, 1e-9) : 1;
    top.slice(0, 5).forEach((c, i) => {
      const row = el("div", "bar-row" + (c.id === target ? " hit" : ""));
      const label = el("span", "bar-label");
      label.append(el("span", "bar-rank", String(i + 1)), el("span", "chip", visibleToken(c.token)));
      const track = el("span", "bar-track");
      const fill = el("span", "bar-fill");
      fill.style.width = `${Math.max(0.5, (c.p / maxP) * 100)}%`;
      track.append(fill);
      row.append(label, track, el("span", "bar-p", fmtPct(c.p)));
      row.title = `${c.token} (id ${c.id}): ` + (info.pred.p_step ? `p \u2248 ${fmtPct(c.p)}` : `p = ${c.p}`);
      bars.append(row);
    });
    root.append(bars);
    if (!top.some((c) => c.id === target)) {
      const miss = el("div", "small miss");
      miss.append(el("span", "faint", "target "), el("span", "chip", visibleToken(info.pred.target_token_str)),
        el("span", "faint", ` not in the top ${top.length}: ` + (f.rank ? `rank ${f.rank}` : rankBound(f, fmtPct))));
      root.append(miss);
    }

    root.append(el("div", "panel-sub", `Top ${Math.min(20, top.length)} distribution`));
    const mini = el("div", "mini");
    for (const c of top.slice(0, 20)) {
      const col = el("div", "mini-col" + (c.id === target ? " hit" : ""));
      const bar = el("div", "mini-bar");
      bar.style.height = `${Math.max(2, (c.p / maxP) * 100)}%`;
      col.append(bar);
      col.title = `${visibleToken(c.token)}  ${fmtPct(c.p)}`;
      mini.append(col);
    }
    root.append(mini);
    root.append(el("div", "legend-line faint small", "green = the token that actually came next"));
  }

  /** The selected token's history: {series, overlay?} (the `series` route's answer, and the
   *  same token in a run compared with, see Sparkline.show), {loading}, or {error}; `step`
   *  is the step shown (marked on the sparkline). */
  showHistory(view, step) {
    const box = this.history;
    if (view.series && view.series.steps && view.series.steps.length) {
      if (box.firstChild !== this.spark.root || box.childNodes.length !== 1) box.replaceChildren(this.spark.root);
      this.spark.show(view.series, step, view.overlay);
      return;
    }
    box.replaceChildren(el("p", "hint small", view.error || (view.loading ? "Loading its history\u2026" : "No history for this token.")));
  }
}
