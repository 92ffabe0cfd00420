// Two runs compared token by token: the "compare with run" control, the colours by
// Δ log p(target) between the runs at the aligned step, the lists of tokens learned earlier
// in one run than the other (or only in one), and the other run's history of the selected
// token drawn over its sparkline. Data: the `compare_runs` route (docs/dynamics.md) and
// `series` of the other run, through the dashboard's source. State stays in app.state.

import { el, fmtPct, visibleName } from "./util.js";
import { changesByToken, signed, sortRows, sortableHead, whereCell, pickableRow } from "./dynamics.js";

const RUN_ROWS = 50;           // rows per list
const RUN_SERIES_POINTS = 160;
const RUN_TABS = [
  { key: "earlier_in_a", label: "learned earlier in A", sort: ["lead", -1] },
  { key: "earlier_in_b", label: "learned earlier in B", sort: ["lead", 1] },
  { key: "only_in_a", label: "only in A", sort: ["learned_a", 1] },
  { key: "only_in_b", label: "only in B", sort: ["learned_b", 1] },
  { key: "biggest_gap", label: "biggest gap at this step", sort: ["gap_size", -1] },
];
export const RUN_COMPARE_TABS = RUN_TABS.map((t) => t.key);
const RUN_COLUMNS = [
  { label: "token", sort: "where" },
  { label: "learned in A", sort: "learned_a" },
  { label: "learned in B", sort: "learned_b" },
  { label: "A ahead by", sort: "lead" },
  { label: "p(target) A / B", sort: "p_b" },
  { label: "\u0394 log p (B \u2212 A)", sort: "delta_logp" },
];

function runSortValue(row, key) {
  if (key === "where") return (row.index_a ?? 999) * 1e6 + row.pos;
  if (key === "gap_size") return row.delta_logp === null || row.delta_logp === undefined ? null : Math.abs(row.delta_logp);
  return row[key];
}

function stepText(x) {
  return x === null || x === undefined ? "\u2013" : String(x);
}

/** What the address says of the run comparison: {vs, open, tab}. */
export function runCompareHash(h) {
  return { vs: h.vs || null, open: h.rc !== "none", tab: RUN_COMPARE_TABS.includes(h.rc) ? h.rc : "earlier_in_b", sort: null };
}

export class RunCompare {
  /** @param {import("./app.js").Dashboard} app */
  constructor(app) {
    this.app = app;
    this.cache = new Map();
    this.answer = null;
    this.error = null;
    this.select = el("select", "vs-select");
    this.select.setAttribute("aria-label", "compare with run");
    this.select.addEventListener("change", () => this.choose(this.select.value || null));
    this.control = el("label", "control vs-control");
    this.control.append(el("span", "control-l", "compare with run"), this.select);
    this.control.hidden = true;
    this.list = el("section", "runcmp");
    this.list.setAttribute("aria-label", "tokens learned earlier, later or only in one of two runs");
    this.list.hidden = true;
    this.follow();
  }

  /** Ask the source for "runs" events while another run is compared (to see it grow). */
  follow() {
    const source = this.app.source;
    if (source.followRuns) source.followRuns(Boolean(this.view.vs));
  }

  /** Take the comparison from the address (read by runCompareHash). */
  applyHash(h) {
    const st = this.app.state;
    st.runCmp = runCompareHash(h);
    this.follow();
    this.setRuns(st.runs);
  }

  get view() { return this.app.state.runCmp; }

  /** The runs one can compare with: every run but the one shown. */
  setRuns(runs) {
    const st = this.app.state;
    const names = runs.map((r) => r.run).filter((n) => n !== st.run);
    if (this.view.vs && runs.length && !names.includes(this.view.vs)) {  // the address named a run not here
      this.app.showBanner(`There is no other run \u201c${visibleName(this.view.vs)}\u201d to compare with.`, "info", 10000);
      this.view.vs = null;
      if (st.metric === "vs") { st.metric = "prob"; this.app.metricSelect.value = "prob"; }
      this.follow();
    }
    const none = el("option", "", "\u2013 none \u2013");
    none.value = "";
    const want = ["", ...names].join("\u0000");
    if ([...this.select.options].map((o) => o.value).join("\u0000") !== want) {
      this.select.replaceChildren(none, ...names.map((n) => { const o = el("option", "", visibleName(n)); o.value = n; o.title = n; return o; }));
    }
    this.select.value = this.view.vs || "";
    this.control.hidden = !names.length;
  }

  /** The number of steps run `name` had when last listed ("" when unknown): joins cache keys,
   *  so a comparison is asked again when either run grew. */
  version(name) {
    const r = this.app.state.runs.find((x) => x.run === name);
    return r ? `${r.num_steps}:${r.last_step}` : "";
  }

  /** Whether the other run grew since the comparison shown was made. */
  stale() {
    return Boolean(this.view.vs && this.answer && this.answerVersion !== this.version(this.view.vs));
  }

  choose(vs) {
    const st = this.app.state;
    this.view.vs = vs;
    if (vs && st.metric !== "vs") st.metric = "vs";
    if (!vs && st.metric === "vs") st.metric = "prob";
    this.app.metricSelect.value = st.metric;
    this.view.open = true;
    this.follow();
    this.app.saveHash();
    return this.app.refresh();
  }

  /** The comparison at run A's step `step`: {answer, error, version}; never throws. */
  async fetch(step) {
    const st = this.app.state;
    if (!this.view.vs) return { answer: null, error: null, version: "" };
    const version = this.version(this.view.vs);
    const key = `${st.run}\u0000${this.view.vs}\u0000${step}\u0000${version}\u0000${st.steps.length}`;
    let hit = this.cache.get(key);
    if (!hit) {
      hit = this.app.source.get("compare_runs", { a: st.run, b: this.view.vs, step, tokens: 1, limit: RUN_ROWS });
      hit.catch(() => this.cache.delete(key));
      this.cache.set(key, hit);
      if (this.cache.size > 32) this.cache.delete(this.cache.keys().next().value);
    }
    try {
      const answer = await hit;
      if (!answer.__byToken) answer.__byToken = changesByToken(answer, "index_a");
      return { answer, error: null, version };
    } catch (err) {
      let error = err.message || String(err);
      if (/unknown route/.test(error)) error = "Comparing runs is not available here (a back end from an older seqviz, or a page made without it).";
      return { answer: null, error, version };
    }
  }

  /** Take a fetched comparison (after the dashboard checked it is still wanted). */
  set(result) {
    this.answer = result.answer;
    this.error = result.error;
    this.answerVersion = result.version;
  }

  /** Δ log p per token of each sequence of the entry shown (see changesByToken), or null. */
  byToken(step) {
    const a = this.answer;
    return a && a.a && a.a.step === step ? a.__byToken : null;
  }

  /** The legend of the colours by Δ log p between the runs. */
  renderLegend(legend) {
    legend.append(el("span", "legend-title", "colour: \u0394 log p(target), run B \u2212 run A"));
    const scale = el("span", "legend-scale");
    const swatches = el("span", "swatches");
    for (let b = 0; b < 9; b++) swatches.append(el("span", "sw d" + b));
    scale.append(el("span", "legend-end worse", "A better \u2264 \u22122"), swatches, el("span", "legend-end better", "+2 \u2264 B better"));
    legend.append(scale);
    const a = this.answer;
    if (!this.view.vs) legend.append(el("span", "legend-note", "choose a run under \u201ccompare with run\u201d"));
    else if (a) legend.append(el("span", "legend-note", `A = ${visibleName(a.run)} at step ${a.a.step} \u00b7 B = ${visibleName(a.vs)} at step ${a.b.step}${a.b.exact ? "" : " (its nearest logged step at or before)"} \u00b7 grey: not compared`));
    else if (this.error) legend.append(el("span", "legend-note legend-error", this.error));
  }

  /** The lists, with the aligned steps and a verdict per probe on top. */
  render() {
    const st = this.app.state;
    const root = this.list;
    root.hidden = !this.view.vs || !this.view.open;
    if (root.hidden) return;
    root.replaceChildren();
    const head = el("div", "changes-head");
    head.append(el("span", "changes-title", `Run ${visibleName(st.run)} (A) vs run ${visibleName(this.view.vs)} (B)`));
    const close = el("button", "btn icon changes-close", "\u2715");
    close.title = "close the list";
    close.setAttribute("aria-label", "close the run comparison list");
    close.addEventListener("click", () => { this.view.open = false; this.render(); this.app.saveHash(); });
    head.append(close);
    root.append(head);
    const a = this.answer;
    if (!a) {
      root.append(el("p", "hint", this.error || "Loading\u2026"));
      return;
    }
    const aligned = el("div", "changes-summary");
    aligned.append(el("span", "cmp-summary", `step ${a.step}`),
      el("span", "", `A at step ${a.a.step}${a.a.exact ? "" : " (nearest at or before)"}`),
      el("span", "runcmp-b-step", `B at step ${a.b.step}${a.b.exact ? "" : " (nearest logged at or before)"}`));
    root.append(aligned);
    const probes = el("div", "runcmp-probes");
    for (const p of a.probes || []) {
      const line = el("div", "runcmp-probe " + p.status);
      line.append(el("span", "c-seq", visibleName(p.name || p.label || `seq ${p.seq_a ?? p.seq_b}`)), el("span", "faint", ": "));
      if (p.status === "matched") line.append(el("span", "runcmp-verdict", p.verdict));
      else if (p.status === "different_text") line.append(el("span", "runcmp-mismatch", `not compared: ${p.reason}`));
      else line.append(el("span", "faint", `only in ${p.status === "only_a" ? "A" : "B"}`));
      probes.append(line);
    }
    root.append(probes);

    const tabs = el("div", "changes-tabs");
    tabs.setAttribute("role", "tablist");
    for (const t of RUN_TABS) {
      const b = el("button", "btn tab" + (t.key === this.view.tab ? " on" : ""), `${t.label} (${(a[t.key] || []).length})`);
      b.setAttribute("role", "tab");
      b.setAttribute("aria-selected", String(t.key === this.view.tab));
      b.dataset.tab = t.key;
      b.addEventListener("click", () => { this.view.tab = t.key; this.view.sort = null; this.render(); this.app.saveHash(); });
      tabs.append(b);
    }
    root.append(tabs);
    const tab = RUN_TABS.find((t) => t.key === this.view.tab) || RUN_TABS[0];
    const [key, dir] = this.view.sort ? [this.view.sort.key, this.view.sort.dir] : tab.sort;
    const rows = sortRows(a[tab.key] || [], key, dir, runSortValue);
    if (!rows.length) {
      root.append(el("p", "hint", `No tokens ${tab.label}.`));
      return;
    }
    const table = el("table", "changes-table");
    const thead = sortableHead(RUN_COLUMNS, key, dir, (c) => (c.sort === "where" || c.sort.startsWith("learned") ? 1 : -1),
      (sort) => { this.view.sort = sort; this.render(); });
    const tbody = el("tbody");
    const num = (text, cls) => el("td", "num" + (cls ? " " + cls : ""), text);
    for (const r of rows) {
      const tr = pickableRow(r.index_a === null ? "this sequence is not logged at this step of run A" : `go to this token (step ${a.a.step} of run A)`,
        () => { if (r.index_a !== null) this.app.jumpToToken(r.index_a, r.pos + 1); });
      const dl = r.delta_logp;
      tr.append(whereCell(r.name || `seq ${r.seq_a}`, r.pos, r.context, r.target),
        num(stepText(r.learned_a)), num(stepText(r.learned_b)),
        num(r.lead === null || r.lead === undefined ? "\u2013" : signed(r.lead, 6), r.lead > 0 ? "better" : r.lead < 0 ? "worse" : ""),
        num(`${fmtPct(r.p_a)} / ${fmtPct(r.p_b)}`),
        num(signed(dl), dl === null || dl === undefined ? "" : dl < 0 ? "worse" : "better"));
      tbody.append(tr);
    }
    table.append(thead, tbody);
    const scroll = el("div", "changes-body-scroll");
    scroll.append(table);
    root.append(scroll);
  }

  /** The same token in run B, to draw over the sparkline: {series, label, own} or null.
   *  `seq` is run A's tracked number of the sequence; never throws. */
  async overlay(seq, pos) {
    const a = this.answer;
    const probe = a && this.view.vs && (a.probes || []).find((p) => p.seq_a === seq && p.status === "matched");
    if (!probe) return null;
    try {
      const series = await this.app.source.get("series", { run: this.view.vs, seq: probe.seq_b, pos, points: RUN_SERIES_POINTS });
      return { series, label: "B", own: "A" };
    } catch (err) {
      return null;
    }
  }

  /** The address parts: vs, and the list's tab ("none": closed). */
  hash() {
    if (!this.view.vs) return {};
    return { vs: this.view.vs, rc: this.view.open ? (this.view.tab !== "earlier_in_b" ? this.view.tab : undefined) : "none" };
  }
}
