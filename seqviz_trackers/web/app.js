// The dashboard: one state object, the controls, and the views built from it.
// It talks to its data only through a source (see sources.js).

import { el, fmtNum, fmtPct, METRICS, metricContext, readHash, writeHash, stepInfo, own, hashInt, visibleName } from "./util.js";
import { LineChart } from "./chart.js";
import { TokenGrid, paintGrids } from "./tokens.js";
import { DetailPanel } from "./detail.js";
import { boundText, needsCandidates, attachCandidates } from "./entry.js";
import { getStep, getStepStart, InlineSource } from "./sources.js";
import { ChangeList, changesByToken, CHANGE_TABS } from "./dynamics.js";
import { RunCompare, runCompareHash } from "./runcompare.js";
import { BatchView } from "./batches.js";

const CACHE_SIZE = 24;
const CACHE_TOKENS = 40000;
const SERIES_POINTS = 160;  // a sparkline needs no more (the route keeps the learned-at and forgetting steps)
const DIFF_ROWS = 50;       // rows per list of the changes view
const NO_SEQUENCE = { tokens: [], predictions: [] };  // a side of the comparison without that sequence
const WINDOW_TOKENS = 512;  // a collapsed sequence shows this many tokens around the selected one

/** A number from the address or a picker, or null when it is absent or empty. */
function numberOrNull(value) {
  return value !== undefined && value !== "" ? Number(value) : null;
}

/** What the address says of the comparison and the changes, read alike at start and on
 *  every change of the hash. Values that are not what they should be count as absent. */
function hashView(h) {
  const tab = CHANGE_TABS.includes(h.changes) ? h.changes : null;
  return {
    compare: h.cmp !== undefined, compareStep: hashInt(h.cmp, null),
    changeFrom: hashInt(h.from, null),
    changes: { open: tab !== null, tab: tab || "worsened", sort: null },
  };
}

/** The colours when the address names none: by the other run (Δ log p) when it names one
 *  (`#run=A&vs=B`), else by p(target). */
function defaultMetric(h) {
  return h.vs ? "vs" : "prob";
}

/** Show a toggle button as on or off. */
function setPressed(button, on) {
  button.classList.toggle("on", on);
  button.setAttribute("aria-pressed", String(on));
}

/** One option per logged step, for the step pickers. */
function stepOptions(steps) {
  return steps.map((s) => { const o = el("option", "", `step ${s.step}`); o.value = String(s.step); return o; });
}

/** Changes when the logged steps do (the pickers hold thousands of options: rebuilt only then). */
function stepsKey(steps) {
  return `${steps.length}:${steps.length ? steps[0].step + ":" + steps[steps.length - 1].step : ""}`;
}

/** The metric the address names, when it is one (not "__proto__", "toString", ...). */
function hashMetric(h) {
  return own(METRICS, h.metric) ? h.metric : null;
}

/** The selected token the address names: {seq, index, side}. */
function hashSelection(h, seqDefault) {
  return { seq: hashInt(h.seq, seqDefault), index: hashInt(h.tok, -1), side: 0 };
}

/** A sequence's label: its name, or its place in the step. */
function sequenceLabel(seq, seqIndex) {
  return seq.name || `sequence ${seqIndex}`;
}

/** A sequence's mean p(target): a range when some targets are below the logged candidates
 *  (one number when both ends round to the same one). */
function meanPText(figures) {
  if (!figures.below || figures.meanP === null) return fmtPct(figures.meanP);
  const low = fmtPct(figures.meanP), high = fmtPct(figures.meanPMax);
  return `${low === high ? low : low + "\u2013" + high} (${figures.below} below top-${figures.belowK})`;
}

class SequenceView {
  constructor(app, side, seqIndex) {
    this.seqIndex = seqIndex;
    this.root = el("section", "seq");
    this.head = el("div", "seq-head");
    this.name = el("span", "seq-name");
    this.figures = el("span", "seq-figures");
    this.windowNote = el("span", "seq-window");
    this.winBtn = el("button", "btn win-btn", "window");
    this.winBtn.title = `collapse to ${WINDOW_TOKENS} tokens around the selected one`;
    setPressed(this.winBtn, false);
    this.winBtn.addEventListener("click", () => this.collapse(!this.grid.windowSize));
    this.head.append(this.name, this.windowNote, this.figures, this.winBtn);
    this.grid = new TokenGrid({
      label: `sequence ${seqIndex}`, onSelect: (i) => app.selectToken(side, this.seqIndex, i),
      onWindow: (span, n) => {
        this.windowNote.textContent = span ? `tokens ${span.lo + 1}\u2013${span.hi} of ${n}` : "";
      },
    });
    this.root.append(this.head, this.grid.root);
  }
  /** Show only a window of the sequence around its selected token, or all of it again. */
  collapse(on) {
    setPressed(this.winBtn, on);
    this.grid.setWindow(on ? WINDOW_TOKENS : 0);
    if (this.grid.selected >= 0) this.grid.reveal(this.grid.selected);
  }
  render(seq, seqIndex, ctx, headText) {
    this.seqIndex = seqIndex;
    const figures = this.grid.render(seq, ctx);
    this.winBtn.hidden = figures.count <= WINDOW_TOKENS && !this.grid.windowSize;
    const name = headText || sequenceLabel(seq, seqIndex);
    this.name.textContent = visibleName(name);
    this.name.title = name;
    this.figures.textContent = `${figures.count} tokens \u00b7 mean p(target) ${meanPText(figures)} \u00b7 top-1 ${fmtPct(figures.accuracy)}`;
    return figures;
  }
  destroy() {
    this.grid.destroy();
    this.root.remove();
  }
}

export class Dashboard {
  /** @param {HTMLElement} mount  @param {object} source  @param {{title?:string}} options */
  constructor(mount, source, options = {}) {
    this.mount = mount;
    this.source = source;
    this.options = options;
    const hash = readHash(location.hash.length > 1 ? location.hash : source.startHash || "");
    this.state = {
      runs: [], runProblems: [], run: hash.run || null,
      steps: [], history: null, problems: [],
      index: -1, entry: null,
      metric: hashMetric(hash) || defaultMetric(hash),
      showIds: hash.ids !== "0",
      sel: hashSelection(hash, null),
      follow: hashInt(hash.step, null) === null,
      wantStep: hashInt(hash.step, null),
      // compare, compareStep; training dynamics: colour by change from step `changeFrom`
      // (null: the previous logged step) to the step shown, and the list of what changed
      ...hashView(hash), compareEntry: null,
      diff: null, diffError: null,
      // another run compared token by token with this one (runcompare.js)
      runCmp: runCompareHash(hash),
      // the training batches view (batches.js): open, and the step shown (null: the latest spike)
      batch: { open: hash.batch !== undefined, step: numberOrNull(hash.batch) },
    };
    this.scrollToSeq = hash.seq !== undefined;
    this.askedRun = hash.run || null;  // the run the address named (said when it is not there)
    this.cache = new Map();
    this.inflight = new Map();
    this.dynCache = new Map();  // diff / sequences / series answers of the current run
    this.loadToken = 0;
    this.timings = [];
    this.views = [];
    this.compareViews = [];
    this.build();
    this.unsubscribe = source.subscribe((ev) => this.onEvent(ev));
    window.addEventListener("hashchange", () => this.applyHash());
    document.addEventListener("keydown", (ev) => this.onKey(ev));
    this.start();
  }

  // -- layout --------------------------------------------------------------------
  build() {
    const root = el("div", "seqviz");
    const bar = el("header", "bar");
    const brand = el("div", "brand");
    brand.append(el("span", "brand-seq", "SEQ"), el("span", "brand-slash", "//"), el("span", "brand-viz", "VIZ"));
    this.titleEl = el("span", "run-title", this.options.title || "");
    brand.append(this.titleEl);

    this.runSelect = el("select", "run-select");
    this.runSelect.setAttribute("aria-label", "run");
    this.runSelect.addEventListener("change", () => this.chooseRun(this.runSelect.value));

    const stepBox = el("div", "stepper");
    this.prevBtn = el("button", "btn icon", "\u25c0");
    this.prevBtn.title = "previous step (\u2190)";
    this.prevBtn.setAttribute("aria-label", "previous step");
    this.nextBtn = el("button", "btn icon", "\u25b6");
    this.nextBtn.title = "next step (\u2192)";
    this.nextBtn.setAttribute("aria-label", "next step");
    this.slider = el("input", "slider");
    this.slider.type = "range";
    this.slider.min = "0"; this.slider.max = "0"; this.slider.value = "0";
    this.slider.setAttribute("aria-label", "step");
    this.stepLabel = el("span", "step-label", "step \u2013");
    this.stepCount = el("span", "step-count", "");
    this.prevBtn.addEventListener("click", () => this.goIndex(this.state.index - 1));
    this.nextBtn.addEventListener("click", () => this.goIndex(this.state.index + 1));
    this.slider.addEventListener("input", () => this.goIndex(Number(this.slider.value)));
    stepBox.append(this.prevBtn, this.slider, this.nextBtn, this.stepLabel, this.stepCount);

    const colour = el("label", "control");
    colour.append(el("span", "control-l", "colour by"));
    this.metricSelect = el("select", "metric-select");
    for (const key of ["prob", "entropy", "loss", "rank", "change", "vs", "none"]) {
      const opt = el("option", "", METRICS[key].label);
      opt.value = key;
      this.metricSelect.append(opt);
    }
    this.metricSelect.value = this.state.metric;
    this.metricSelect.addEventListener("change", () => { this.state.metric = this.metricSelect.value; this.refresh(); this.saveHash(); });
    colour.append(this.metricSelect);

    const ids = el("label", "control check");
    this.idsBox = el("input");
    this.idsBox.type = "checkbox";
    this.idsBox.checked = this.state.showIds;
    this.idsBox.addEventListener("change", () => { this.state.showIds = this.idsBox.checked; this.renderAll(); this.saveHash(); });
    ids.append(this.idsBox, el("span", "control-l", "ids"));

    this.compareBtn = el("button", "btn toggle", "Compare");
    this.compareBtn.title = "one sequence at two steps, side by side";
    setPressed(this.compareBtn, this.state.compare);
    this.compareBtn.addEventListener("click", () => this.setCompare(!this.state.compare));

    this.changesBtn = el("button", "btn changes-btn", "Changes");
    this.changesBtn.title = "what changed between two steps: tokens learned, forgotten, most worsened";
    this.changesBtn.addEventListener("click", () => this.openChanges(!this.state.changes.open));

    this.status = el("span", "status", "");
    this.status.setAttribute("role", "status");
    this.warnBtn = el("button", "btn warn", "");
    this.warnBtn.hidden = true;
    this.warnBtn.addEventListener("click", () => { this.warnList.hidden = !this.warnList.hidden; });

    this.batchBtn = el("button", "btn batches-btn", "Batches");
    this.batchBtn.title = "the training batches: rows by loss, spikes, tokens coloured by loss";
    this.batchBtn.hidden = true;
    this.batchBtn.addEventListener("click", () => (this.state.batch.open ? this.closeBatch() : this.openBatch(this.state.batch.step)));

    this.runCompare = new RunCompare(this);
    bar.append(brand, this.runSelect, this.runCompare.control, stepBox, colour, ids, this.compareBtn, this.changesBtn, this.batchBtn, this.warnBtn, this.status);

    this.warnList = el("div", "warn-list");
    this.warnList.hidden = true;
    this.banner = el("div", "banner");
    this.banner.hidden = true;

    const charts = el("div", "charts");
    this.lossChart = new LineChart({ label: "loss", color: "#00e5ff", onPick: (s) => this.pickStep(s), onMark: (s) => this.openBatch(s) });
    this.pplChart = new LineChart({ label: "perplexity (log)", color: "#ff2bd6", log: true, onPick: (s) => this.pickStep(s) });
    this.info = el("div", "step-info");
    charts.append(this.lossChart.root, this.pplChart.root, this.info);

    this.legend = el("div", "legend");
    this.changeList = new ChangeList({
      onPick: (row) => this.jumpToToken(row.index, row.pos + 1),
      onTab: (tab) => { this.state.changes.tab = tab; this.state.changes.sort = null; this.renderChanges(); this.saveHash(); },
      onSort: (sort) => { this.state.changes.sort = sort; this.renderChanges(); },
      onClose: () => this.openChanges(false),
    });
    this.buildChangePickers();
    const main = el("div", "main");
    this.left = el("div", "left");
    this.seqsEl = el("div", "seqs");
    this.compareEl = el("div", "compare");
    this.probeEl = el("div", "probe");
    this.probeEl.append(this.legend, this.runCompare.list, this.changeList.root, this.seqsEl, this.compareEl);
    this.batchView = new BatchView(this);
    this.left.append(this.probeEl, this.batchView.root);
    this.detail = new DetailPanel({ onPickStep: (s) => this.goIndex(this.indexOfStep(s, true)) });
    main.append(this.left, this.detail.root);
    const foot = el("footer", "foot",
      "\u2190/\u2192 step \u00b7 Tab into a sequence, then \u2190/\u2192 token \u00b7 Esc leaves it \u00b7 click a chart point to jump there and see what changed \u00b7 the line under each token is the model's top-1 guess for it");
    root.append(bar, this.warnList, this.banner, charts, main, foot);
    this.mount.append(root);
    this.root = root;
  }

  // -- data flow ------------------------------------------------------------------
  async start() {
    try {
      const listing = await this.source.get("runs");
      const runs = listing.runs || [];
      if (runs.length && !this.hasRun(runs, this.state.run)) this.state.run = this.firstRun(runs);
      this.setRuns(runs, listing.problems || []);
      if (this.askedRun && this.state.run !== this.askedRun) this.sayNoRun(this.askedRun, this.state.run);
      if (this.state.run) await this.loadRun(this.state.run);
      else this.showBanner("Waiting for the first step\u2026", "wait");
    } catch (err) {
      this.showBanner(`Cannot load the runs: ${err.message}`, "error");
    } finally {
      this.ready = true;
    }
  }

  /** Whether `runs` (a `runs` answer's list) holds run `name` as a run one can show. */
  hasRun(runs, name) {
    return runs.some((r) => r.run === name && !r.compare_only);
  }

  firstRun(runs) {
    const first = runs.find((r) => !r.compare_only);
    return first ? first.run : null;
  }

  /** The address named a run that is not there, or that cannot be read: say so (`shown`,
   *  the first run, is shown instead). */
  sayNoRun(name, shown) {
    const instead = shown === null ? "" : `: showing \u201c${visibleName(shown)}\u201d instead`;
    const problem = this.state.runProblems.find((p) => p.run === name);
    const what = problem ? `Run \u201c${visibleName(name)}\u201d cannot be read (${problem.message})` : `There is no run \u201c${visibleName(name)}\u201d here`;
    this.showBanner(`${what}${instead}.`, "info", 10000);
  }

  /** The runs of a `runs` answer (or message), and its `problems`: runs that cannot be
   *  read, listed in the selector as unavailable (a disabled option, the reason as its title). */
  setRuns(runs, problems = this.state.runProblems) {
    this.state.runs = runs;
    this.state.runProblems = problems;
    this.runCompare.setRuns(runs);
    const bad = new Map(problems.map((p) => [p.run, p.message]));
    const names = runs.filter((r) => !r.compare_only).map((r) => r.run);
    if (this.state.run && !names.includes(this.state.run) && !bad.has(this.state.run)) names.unshift(this.state.run);
    const all = names.concat([...bad.keys()].filter((n) => !names.includes(n)));
    const key = all.map((n) => (bad.has(n) ? `${n}\u0001${bad.get(n)}` : n)).join("\u0000");
    if (this.runsKey !== key) {
      this.runsKey = key;
      this.runSelect.replaceChildren(...all.map((n) => {
        const o = el("option", bad.has(n) ? "run-unavailable" : "", visibleName(n) + (bad.has(n) ? " (cannot be read)" : ""));
        o.value = n;
        o.title = bad.has(n) ? bad.get(n) : n;
        o.disabled = bad.has(n);
        return o;
      }));
    }
    if (this.state.run) this.runSelect.value = this.state.run;
    this.runSelect.hidden = all.length <= 1;
    const title = this.options.title || (names.length === 1 ? names[0] : "");
    this.titleEl.textContent = visibleName(title);
    this.titleEl.title = title;
  }

  async chooseRun(run) {
    if (run === this.state.run) return;
    this.state.run = run;
    if (this.state.runCmp.vs === run) this.state.runCmp.vs = null;
    this.state.follow = true;
    this.state.wantStep = null;
    this.cache.clear();
    this.dynCache.clear();
    await this.loadRun(run);
  }

  async loadRun(run) {
    this.source.watch(run);
    this.setRuns(this.state.runs);
    this.batchView.setSummary(null);
    this.updateBatches();
    let data;
    try {
      data = await this.source.get("steps", { run });
    } catch (err) {
      if (run === this.state.run) this.showBanner(`Cannot load run \u201c${run}\u201d: ${err.message}`, "error");
      return;
    }
    if (run !== this.state.run) return;
    this.loadBatches(run);
    this.setSteps(data.steps || [], data.problems || [], data.history || null);
    let index = this.state.steps.length - 1;
    if (this.state.wantStep !== null) {
      const i = this.indexOfStep(this.state.wantStep, true);
      if (i >= 0) index = i;
      this.state.wantStep = null;
    }
    if (index >= 0) {
      await this.goIndex(index, { keepFollow: true });
      // once the step is drawn: the back end builds the run's training-dynamics tracks now,
      // not on the first click that needs them (colour by change, a token's history)
      const step = this.state.entry && this.state.entry.step;
      if (step !== undefined && run === this.state.run) this.tracksAsked = this.dynGet("sequences", { step }).catch(() => {});
    } else if (!this.state.batch.open) this.showBanner("Waiting for the first step\u2026", "wait");  // a page of a batch only shows it
  }

  /** The logged steps are now `steps` (and, when given, the skipped lines and the loss history). */
  setSteps(steps, problems, history) {
    const st = this.state;
    st.steps = steps.slice().sort((a, b) => a.step - b.step);
    if (st.entry) st.index = this.indexOfStep(st.entry.step);
    if (history) st.history = history;
    if (problems) { st.problems = problems; this.updateWarnings(); }
    this.updateCharts();
    this.updateStepper();  // after the charts: their current step is already set, no second draw
  }

  mergeSteps(infos) {
    const byStep = new Map(this.state.steps.map((s) => [s.step, s]));
    for (const s of infos) byStep.set(s.step, s);
    this.setSteps([...byStep.values()]);
  }

  onEvent(ev) {
    const st = this.state;
    if (ev.type === "status") {
      this.status.textContent = ev.text;
      this.status.className = "status " + ev.state;
      return;
    }
    if (ev.type === "runs") {
      this.setRuns(ev.runs || [], ev.problems || []);
      if (this.ready && this.runCompare.stale()) this.refresh();  // the other run grew
      if (this.ready && !st.run && ev.runs && ev.runs.length) this.chooseRun(ev.runs[0].run);
      return;
    }
    if (ev.run !== undefined && ev.run !== st.run) {
      if (this.ready && !st.run && ev.type === "steps") { st.run = ev.run; this.setRuns(st.runs); } else return;
    }
    if (ev.type === "reset") {
      this.cache.clear();
      this.dynCache.clear();
      st.problems = [];
      this.showBanner("The file was truncated or replaced: reading it anew.", "info", 4000);
    } else if (ev.type === "steps") {
      const wasEmpty = !st.steps.length;
      this.setSteps(ev.steps || [], ev.problems || [], null);
      if (this.ready) this.loadBatches(st.run);
      const last = st.steps.length - 1;
      if (last < 0) { this.showEmpty(); return; }
      if (!this.ready) return;  // the initial load decides where to go
      if (st.follow || wasEmpty || st.index < 0 || !st.entry) {  // (st.index < 0: the step shown is gone)
        this.goIndex(st.follow || !st.entry ? last : this.indexOfStep(st.entry.step, true), { keepFollow: true });
      }
    } else if (ev.type === "steps_added") {
      this.mergeSteps(ev.steps || []);
    } else if (ev.type === "step" && ev.entry) {
      const entry = ev.entry;
      this.remember(entry.step, entry);
      if (this.indexOfStep(entry.step) < 0) {
        this.mergeSteps([stepInfo(entry)]);
      }
      if (this.ready && (st.follow || !st.entry)) this.goIndex(this.indexOfStep(entry.step), { keepFollow: true });
    } else if (ev.type === "warning") {
      if (!st.problems.some((p) => p.line === ev.line)) st.problems.push({ line: ev.line, message: ev.message });
      this.updateWarnings();
    } else if (ev.type === "waiting") {
      if (!st.steps.length) this.showBanner(ev.message || "Waiting for the first step\u2026", "wait");
    }
  }

  /** Keep recent entries: at most CACHE_SIZE, and about CACHE_TOKENS tokens in all
   *  (entries of thousands of tokens weigh megabytes each). */
  remember(step, entry) {
    this.cache.delete(step);
    entry.__tokens = entry.__tokens || (entry.sequences || []).reduce((n, q) => n + (q.tokens || []).length, 0);
    this.cache.set(step, entry);
    let total = 0;
    for (const e of this.cache.values()) total += e.__tokens;
    while (this.cache.size > 3 && (this.cache.size > CACHE_SIZE || total > CACHE_TOKENS)) {
      const oldest = this.cache.keys().next().value;
      total -= this.cache.get(oldest).__tokens;
      this.cache.delete(oldest);
    }
  }

  /** The entry of `step` in the current run: from the cache, a request already on its
   *  way, or a new request. */
  fetchEntry(step) {
    const hit = this.cache.get(step);
    if (hit) return Promise.resolve(hit);
    const run = this.state.run;
    const key = `${run}\u0000${step}`;
    let waiting = this.inflight.get(key);
    if (!waiting) {
      waiting = getStep(this.source, run, step).then((entry) => {
        if (run === this.state.run) this.remember(step, entry);
        return entry;
      }).finally(() => this.inflight.delete(key));
      this.inflight.set(key, waiting);
    }
    return waiting;
  }

  /** Fetch the steps either side of the shown one, so ←/→ finds them ready. */
  prefetchAround(i) {
    for (const k of [i + 1, i - 1]) {
      const info = this.state.steps[k];
      if (info && !this.cache.has(info.step)) this.fetchEntry(info.step).catch(() => {});
    }
  }

  indexOfStep(step, nearest = false) {
    const steps = this.state.steps;
    let lo = 0, hi = steps.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (steps[mid].step === step) return mid;
      if (steps[mid].step < step) lo = mid + 1; else hi = mid - 1;
    }
    if (!nearest || !steps.length) return -1;
    const a = Math.max(0, Math.min(steps.length - 1, hi)), b = Math.max(0, Math.min(steps.length - 1, lo));
    return Math.abs(steps[a].step - step) <= Math.abs(steps[b].step - step) ? a : b;
  }

  // -- training batches -------------------------------------------------------------
  /** Ask for the run's training batches (their losses and spikes); the view, its button and
   *  the chart's marks follow. A run without them (or a back end without the route) hides them. */
  async loadBatches(run) {
    if (this.batchesLoading) { this.batchesAgain = true; return; }
    this.batchesLoading = true;
    let summary = null;
    try { summary = await this.source.get("batches", { run }); } catch (err) { summary = null; }
    this.batchesLoading = false;
    if (run !== this.state.run) return;
    this.batchView.setSummary(summary);
    this.updateBatches();
    if (this.batchesAgain) { this.batchesAgain = false; this.loadBatches(run); }
  }

  /** The button, the chart's second line and spike marks, and the view, from the summary. */
  updateBatches() {
    const view = this.batchView;
    const summary = view.available ? view.summary : null;
    this.batchBtn.hidden = !summary;
    this.lossChart.setSecond(summary ? summary.steps.map((s) => ({ step: s.step, value: s.loss })) : [], "training batches");
    this.lossChart.setMarks(summary ? summary.spikes.map((s) => ({ step: s, title: `loss spike at step ${s}: open its training batch` })) : []);
    const st = this.state;
    const open = st.batch.open && Boolean(summary);
    this.probeEl.hidden = open;
    view.root.hidden = !open;
    setPressed(this.batchBtn, open);
    if (open && (!view.batch || view.batch.step !== view.pick(st.batch.step)) && !view.loading) {
      const step = view.pick(st.batch.step);
      if (step !== null) { view.loading = true; view.show(step).finally(() => { view.loading = false; }); }
    }
  }

  /** Open the training batch of `step` (null: the latest spike, else the latest captured step). */
  async openBatch(step) {
    const st = this.state;
    const view = this.batchView;
    if (!view.available) return;
    const want = view.pick(step);
    st.batch = { open: true, step: want };
    if (!st.steps.length) this.hideBanner("wait");
    this.probeEl.hidden = true;
    view.root.hidden = false;
    setPressed(this.batchBtn, true);
    this.saveHash();
    if (want !== null) await view.show(want);
  }

  closeBatch() {
    this.state.batch.open = false;
    this.updateBatches();
    // a page of training batches only (the W&B batch panel) has no probe step to go back to
    if (!this.state.steps.length) {
      this.showBanner(this.source instanceof InlineSource
        ? "This page holds training batches only, no logged step: the Batches button shows them again."
        : "Waiting for the first step\u2026", "wait");
    }
    this.showDetail();
    this.saveHash();
  }

  /** A click on the loss / perplexity chart: go to that step and list its tokens by how
   *  much their loss went up since the previous step (what caused a spike). */
  pickStep(step) {
    const i = this.indexOfStep(step, true);
    if (i < 0) return;
    const st = this.state;
    if (st.batch.open) this.closeBatch();
    st.changeFrom = null;
    st.changes = { open: true, tab: "worsened", sort: null };
    setPressed(this.changesBtn, true);
    this.goIndex(i);
  }

  /** Go to the i-th logged step: update the controls now, render when the entry is here. */
  async goIndex(i, { keepFollow = false } = {}) {
    const st = this.state;
    if (!st.steps.length) return;
    i = Math.max(0, Math.min(st.steps.length - 1, i));
    if (!keepFollow) st.follow = i === st.steps.length - 1;
    const step = st.steps[i].step;
    st.index = i;
    this.updateStepper();
    const token = ++this.loadToken;
    const t0 = performance.now();
    try {
      const entry = await (st.entry || this.cache.has(step) ? this.fetchEntry(step) : this.firstEntry(step, token));
      if (token !== this.loadToken) return;
      let other = null;
      if (st.compare) other = await this.compareEntryFor(step);
      const change = this.needDiff() ? await this.diffFor(step) : { diff: null, error: null };
      const vs = await this.runCompare.fetch(step);
      if (token !== this.loadToken) return;
      this.runCompare.set(vs);
      st.entry = entry;
      st.compareEntry = other;
      st.diff = change.diff;
      st.diffError = change.error;
      const t1 = performance.now();
      this.renderAll();
      void this.root.offsetHeight;  // include layout in the figure
      const t2 = performance.now();
      this.timings.push({ step, fetchMs: t1 - t0, renderMs: t2 - t1, drawnAt: performance.timeOrigin + t2 });
      if (this.timings.length > 200) this.timings.shift();
      this.hideBanner("wait");
      if (this.options.prefetch !== false) setTimeout(() => { if (token === this.loadToken) this.prefetchAround(i); }, 0);
      this.hideBanner("error");
      this.saveHash();
    } catch (err) {
      if (token !== this.loadToken) return;
      if (await this.dropIfGone(step, err)) return;
      if (token !== this.loadToken) return;
      st.index = st.entry ? this.indexOfStep(st.entry.step) : -1;  // the steps shown stay under their own number
      this.updateStepper();
      this.showBanner(`Cannot load step ${step}: ${err.message}`, "error");
    }
  }

  /** The entry of `step`, the first one the page shows. Where the back end sends a large
   *  step's first sequences apart, they are drawn while the whole step is on its way,
   *  unless what is shown needs all of it (Compare, colours by change). */
  async firstEntry(step, token) {
    const st = this.state;
    const simple = !st.compare && !this.needDiff() && st.metric !== "vs" && !st.batch.open;
    const start = simple ? getStepStart(this.source, st.run, step, (st.sel.seq || 0) + 1).catch(() => null) : null;
    const whole = this.fetchEntry(step);
    const part = await start;
    if (part && token === this.loadToken && !st.entry && !this.cache.has(step)) {
      part.entry.__of = part.of;
      st.entry = part.entry;
      this.renderAll();
      const more = part.of - (part.entry.sequences || []).length;  // said where they will be (nothing above moves)
      this.seqsEl.append(el("div", "seq-more hint", `Loading ${more} more sequence${more === 1 ? "" : "s"}\u2026`));
    }
    return whole;
  }

  /** A step that failed to load may have stopped being a step (its line is broken): ask
   *  for the step list again; when `step` left it, show the list and the skipped lines
   *  from there, go to the step now at the same place, and return true. */
  async dropIfGone(step, err) {
    const st = this.state;
    const run = st.run;
    let data;
    try { data = await this.source.get("steps", { run }); } catch (e) { return false; }
    if (run !== st.run || (data.steps || []).some((s) => s.step === step)) return false;
    const at = st.index;
    this.cache.delete(step);
    this.dynCache.clear();
    this.setSteps(data.steps || [], data.problems || [], null);
    this.showBanner(`Step ${step} cannot be read (${err.message}); it is listed under skipped lines.`, "info", 8000);
    if (st.steps.length) this.goIndex(Math.min(Math.max(at, 0), st.steps.length - 1), { keepFollow: true });
    else this.showEmpty();
    return true;
  }

  async compareEntryFor(step) {
    const st = this.state;
    if (st.compareStep === null || this.indexOfStep(st.compareStep) < 0) {
      st.compareStep = st.steps[0].step === step && st.steps.length > 1 ? st.steps[st.steps.length - 1].step : st.steps[0].step;
    }
    return this.fetchEntry(st.compareStep);
  }

  // -- training dynamics ---------------------------------------------------------------
  needDiff() {
    return this.state.metric === "change" || this.state.changes.open;
  }

  /** Show the step again (after a change of what is asked of the data). */
  refresh() {
    if (this.state.index >= 0) return this.goIndex(this.state.index, { keepFollow: true });
    this.renderAll();
    return Promise.resolve();
  }

  /** A dynamics route's answer, cached for the run; `version` joins the cache key (answers
   *  that grow with the run are asked again when steps were added). */
  dynGet(route, params, version = "") {
    const run = this.state.run;
    const key = route + "\u0000" + JSON.stringify(params) + "\u0000" + version;
    let hit = this.dynCache.get(key);
    if (!hit) {
      hit = this.source.get(route, { run, ...params });
      hit.catch(() => this.dynCache.delete(key));
      this.dynCache.set(key, hit);
      if (this.dynCache.size > 64) this.dynCache.delete(this.dynCache.keys().next().value);
    }
    return hit;
  }

  /** The diff from step A (chosen, or the previous logged step) to step `step`, with the
   *  change of every token: {diff, error}. Never throws: a single step, an older back end
   *  without the route, or a page without that diff all give an error to show instead. */
  async diffFor(step) {
    const a = this.state.changeFrom;
    const params = { b: step, tokens: 1, limit: DIFF_ROWS };
    if (a !== null && a !== step) params.a = a;
    // colours alone need neither the divergences (which cost the server every candidate of
    // both steps) nor the rows of the changes view (the steps' tokens and strings)
    if (!this.state.changes.open) Object.assign(params, { divergence: 0, limit: 0 });
    try {
      const diff = await this.dynGet("diff", params);
      if (!diff.__byToken) diff.__byToken = changesByToken(diff);
      return { diff, error: null };
    } catch (err) {
      let error = err.message || String(err);
      if (/unknown route/.test(error)) error = "No training-dynamics data here (a back end from an older seqviz, or a page made without it).";
      return { diff: null, error };
    }
  }

  openChanges(open) {
    this.state.changes.open = open;
    setPressed(this.changesBtn, open);
    this.saveHash();
    return this.refresh();
  }

  renderChanges() {
    const st = this.state;
    const list = this.changeList;
    list.root.hidden = !st.changes.open;
    setPressed(this.changesBtn, st.changes.open);
    if (!st.changes.open) return;
    const b = st.entry ? st.entry.step : null;
    const title = st.diff ? `What changed from step ${st.diff.a} to step ${st.diff.b}` : `What changed at step ${b ?? "\u2013"}`;
    list.show({ diff: st.diff, error: st.diffError, tab: st.changes.tab, sort: st.changes.sort, title });
  }

  /** Select token `tok` of sequence `seqIndex` (of the step shown) and scroll to it. */
  jumpToToken(seqIndex, tok) {
    const st = this.state;
    if (st.compare) { this.selectToken(0, seqIndex, tok); return; }
    const view = this.views[seqIndex];
    if (!view) return;
    this.selectToken(0, seqIndex, tok);
    view.root.scrollIntoView({ block: "nearest" });
    view.grid.reveal(tok);
    view.grid.root.focus({ preventScroll: true });
  }

  /** The picker for A and B ("from step A to step B") shown with the change colours. */
  buildChangePickers() {
    this.fromSelect = el("select", "from-select");
    this.fromSelect.setAttribute("aria-label", "compare from step (A)");
    this.fromSelect.addEventListener("change", () => {
      this.state.changeFrom = numberOrNull(this.fromSelect.value);
      this.refresh();
      this.saveHash();
    });
    this.toSelect = el("select", "to-select");
    this.toSelect.setAttribute("aria-label", "compare to step (B, the step shown)");
    this.toSelect.addEventListener("change", () => this.goIndex(this.indexOfStep(Number(this.toSelect.value), true)));
    this.pickers = el("span", "change-pickers");
    const a = el("label", "control"); a.append(el("span", "control-l", "from step"), this.fromSelect);
    const b = el("label", "control"); b.append(el("span", "control-l", "to step"), this.toSelect);
    this.pickers.append(a, b);
  }

  updateChangePickers() {
    const st = this.state;
    const key = stepsKey(st.steps);
    if (key !== this.pickerKey) {
      this.pickerKey = key;
      const prev = el("option", "", "previous step");
      prev.value = "";
      this.fromSelect.replaceChildren(prev, ...stepOptions(st.steps));
      this.toSelect.replaceChildren(...stepOptions(st.steps));
    }
    const b = st.entry ? st.entry.step : null;
    const a = st.diff ? st.diff.a : null;
    this.fromSelect.options[0].textContent = st.changeFrom === null && a !== null ? `previous (${a})` : "previous step";
    this.fromSelect.value = st.changeFrom === null ? "" : String(st.changeFrom);
    if (b !== null) this.toSelect.value = String(b);
  }

  setCompare(on) {
    this.state.compare = on;
    setPressed(this.compareBtn, on);
    return this.refresh();
  }

  // -- rendering ------------------------------------------------------------------
  renderAll() {
    const st = this.state;
    const entry = st.entry;
    this.updateInfo();
    this.renderChanges();
    this.runCompare.render();
    if (!entry) { this.renderLegend(entry, null); return; }
    const ctx = { metric: st.metric, metricCtx: metricContext(entry), showIds: st.showIds };
    let byToken = st.diff && st.diff.b === entry.step ? st.diff.__byToken : null;
    if (st.metric === "vs") { byToken = this.runCompare.byToken(entry.step); ctx.metric = "change"; }  // the same diverging colours
    const seqs = entry.sequences || [];
    if (st.sel.seq === null) st.sel.seq = 0;
    this.seqsEl.hidden = st.compare;
    this.compareEl.hidden = !st.compare;
    let shown;  // the figures of every sequence drawn
    if (st.compare) {
      shown = this.renderCompare(entry, ctx, byToken);
    } else {
      while (this.views.length < seqs.length) {
        const v = new SequenceView(this, 0, this.views.length);
        this.views.push(v);
        this.seqsEl.append(v.root);
      }
      while (this.views.length > seqs.length) this.views.pop().destroy();
      for (const more of this.seqsEl.querySelectorAll(".seq-more")) more.remove();
      shown = seqs.map((seq, i) => {
        const v = this.views[i];
        const figures = v.render(seq, i, byToken ? { ...ctx, change: byToken.get(i) } : ctx);
        v.root.classList.toggle("focus", i === st.sel.seq && seqs.length > 1);
        v.grid.selected = st.sel.side === 0 && st.sel.seq === i ? st.sel.index : -1;
        return figures;
      });
      paintGrids(this.views.map((v) => v.grid));
      if (!seqs.length) this.showBanner("This step has no sequences.", "info");
    }
    this.renderLegend(entry, shown);
    this.showDetail();
    if (this.scrollToSeq && !st.compare && this.views[st.sel.seq]) {
      this.views[st.sel.seq].root.scrollIntoView({ block: "start" });
    }
    this.scrollToSeq = false;
  }

  renderCompare(entry, ctx, byToken) {
    const st = this.state;
    const seqs = entry.sequences || [];
    const seqIndex = Math.min(st.sel.seq || 0, Math.max(0, seqs.length - 1));
    if (!this.compareBar) {
      this.compareBar = el("div", "compare-bar");
      this.cmpSeqSelect = el("select", "cmp-seq");
      this.cmpSeqSelect.setAttribute("aria-label", "sequence to compare");
      this.cmpSeqSelect.addEventListener("change", () => { st.sel.seq = Number(this.cmpSeqSelect.value); st.sel.index = -1; this.renderAll(); this.saveHash(); });
      this.cmpStepSelect = el("select", "cmp-step");
      this.cmpStepSelect.setAttribute("aria-label", "step to compare with");
      this.cmpStepSelect.addEventListener("change", () => { st.compareStep = Number(this.cmpStepSelect.value); this.refresh(); });
      this.cmpSummary = el("span", "cmp-summary");
      const l1 = el("label", "control"); l1.append(el("span", "control-l", "sequence"), this.cmpSeqSelect);
      const l2 = el("label", "control"); l2.append(el("span", "control-l", "versus step"), this.cmpStepSelect);
      this.compareBar.append(l1, l2, this.cmpSummary);
      this.cmpCols = el("div", "cmp-cols");
      this.compareEl.append(this.compareBar, this.cmpCols);
      this.compareViews = [new SequenceView(this, 0, 0), new SequenceView(this, 1, 0)];
      this.cmpCols.append(this.compareViews[0].root, this.compareViews[1].root);
    }
    this.cmpSeqSelect.replaceChildren(...seqs.map((s, i) => { const o = el("option", "", visibleName(sequenceLabel(s, i))); o.value = String(i); return o; }));
    this.cmpSeqSelect.value = String(seqIndex);
    const key = stepsKey(st.steps);
    if (key !== this.cmpStepsKey) {
      this.cmpStepsKey = key;
      this.cmpStepSelect.replaceChildren(...stepOptions(st.steps));
    }
    this.cmpStepSelect.value = String(st.compareStep);
    const other = st.compareEntry;
    const a = this.compareViews[0].render(seqs[seqIndex] || NO_SEQUENCE, seqIndex,
      byToken ? { ...ctx, change: byToken.get(seqIndex) } : ctx, `step ${entry.step}`);
    const otherSeq = other && other.sequences ? other.sequences[seqIndex] : null;
    const b = this.compareViews[1].render(otherSeq || NO_SEQUENCE, seqIndex,
      { ...ctx, metricCtx: metricContext(other || entry) }, other ? `step ${other.step}` : "\u2013");
    const delta = a.meanP !== null && b.meanP !== null && !a.below && !b.below ? a.meanP - b.meanP : null;
    this.cmpSummary.textContent = a.meanP === null || b.meanP === null || !other ? "" :
      `mean p(target): step ${entry.step} ${meanPText(a)} vs step ${other.step} ${meanPText(b)}` +
      (delta === null ? "" : ` (\u0394 ${delta >= 0 ? "+" : ""}${(delta * 100).toFixed(1)} pts)`);
    this.compareViews.forEach((v) => { v.grid.selected = st.sel.seq === seqIndex ? st.sel.index : -1; });
    paintGrids(this.compareViews.map((v) => v.grid));
    return [a, b];
  }

  /** The colour legend of the step shown; `shown`: the figures of the sequences drawn
   *  (targets outside the logged candidates get the "below top-k" swatch). */
  renderLegend(entry, shown) {
    const metric = own(METRICS, this.state.metric);
    this.legend.replaceChildren();
    if (this.state.metric === "change") { this.renderChangeLegend(); return; }
    if (this.state.metric === "vs") { this.runCompare.renderLegend(this.legend); return; }
    if (!metric || this.state.metric === "none") return;
    const labels = typeof metric.legend === "function" ? metric.legend(metricContext(entry)) : metric.legend;
    this.legend.append(el("span", "legend-title", `colour: ${metric.label}`));
    const scale = el("span", "legend-scale");
    scale.append(el("span", "legend-end", labels[0]));
    const swatches = el("span", "swatches");
    for (let b = 0; b < 10; b++) swatches.append(el("span", "sw m" + b));
    scale.append(swatches, el("span", "legend-end", labels[2]));
    this.legend.append(scale);
    const below = (shown || []).filter((f) => f && f.below);
    if (below.length && this.state.metric !== "entropy") {
      const k = Math.max(...below.map((f) => f.belowK));
      const item = el("span", "legend-scale legend-below");
      item.title = `the target is not among the ${k} candidates logged: its rank is above ${k} and its p below the last candidate's`;
      item.append(el("span", "swatches", ""), el("span", "legend-end", `below top-${k} (${boundText(k)})`));
      item.firstChild.append(el("span", "sw mbelow"));
      this.legend.append(item);
    }
    this.legend.append(el("span", "legend-note", "bad \u2192 good \u00b7 grey: no value \u00b7 under each token: top-1 guess (green = right)"));
  }

  renderChangeLegend() {
    const st = this.state;
    this.updateChangePickers();
    this.legend.append(el("span", "legend-title", "colour: change in log p(target)"), this.pickers);
    const scale = el("span", "legend-scale");
    const swatches = el("span", "swatches");
    for (let b = 0; b < 9; b++) swatches.append(el("span", "sw d" + b));
    scale.append(el("span", "legend-end worse", "worse \u2264 \u22122"), swatches, el("span", "legend-end better", "+2 \u2264 better"));
    this.legend.append(scale);
    if (st.diff) {
      this.legend.append(el("span", "legend-note", `\u0394 log p = log p(target) at step ${st.diff.b} \u2212 at step ${st.diff.a} (nats) \u00b7 grey: not predicted at both steps`));
    } else if (st.diffError) {
      this.legend.append(el("span", "legend-note legend-error", st.diffError));
    }
  }

  selectToken(side, seqIndex, index) {
    const st = this.state;
    st.sel = { seq: seqIndex, index, side };
    if (st.compare) this.compareViews.forEach((v) => v.grid.select(index));  // the same position at both steps
    else this.views.forEach((v, i) => { v.grid.select(i === seqIndex ? index : -1); v.root.classList.toggle("focus", i === seqIndex && this.views.length > 1); });
    this.showDetail();
    this.saveHash();
  }

  showDetail() {
    const st = this.state;
    if (st.batch.open && this.batchView.available) { this.batchView.showDetail(); return; }
    const entry = st.compare && st.sel.side === 1 ? st.compareEntry : st.entry;
    const seq = entry && entry.sequences ? entry.sequences[st.sel.seq || 0] : null;
    if (!seq || st.sel.index < 0 || st.sel.index >= (seq.tokens || []).length) { this.detail.show(null); return; }
    const j = st.sel.index;
    const pred = (seq.predictions || []).find((p) => p.position === j - 1) || null;
    const missing = needsCandidates(pred);
    const error = missing ? pred.candidatesError : null;
    if (error) pred.candidatesError = null;  // said once; the next time it is shown asks again
    this.detail.show({
      step: entry.step, seqLabel: sequenceLabel(seq, st.sel.seq || 0), index: j,
      token: seq.tokens[j], tokenId: seq.token_ids ? seq.token_ids[j] : undefined,
      prevToken: j > 0 ? seq.tokens[j - 1] : "", pred,
      candidates: missing ? { error } : null,
    });
    if (missing && !error) this.loadCandidates(entry, st.sel.seq || 0, pred);
    if (pred) this.loadSeries(entry.step, st.sel.seq || 0, j);
  }

  /** The candidates of a prediction of a step view, asked for when it is shown; the detail
   *  panel is drawn again when they are here and it still shows that prediction. */
  async loadCandidates(entry, seqIndex, pred) {
    if (pred.candidatesAsked) return;
    pred.candidatesAsked = true;
    try {
      attachCandidates(pred, await this.source.get("candidates", { run: this.state.run, step: entry.step, seq: seqIndex, pos: pred.position }));
    } catch (err) {
      pred.candidatesError = `Cannot load its candidates: ${err.message}`;
    }
    pred.candidatesAsked = false;
    const st = this.state;
    const shown = st.compare && st.sel.side === 1 ? st.compareEntry : st.entry;
    const seq = shown && shown.sequences ? shown.sequences[st.sel.seq || 0] : null;
    if (seq && st.sel.index - 1 === pred.position && (seq.predictions || []).includes(pred)) this.showDetail();
  }

  /** The selected token's target probability and rank over the run, into the detail panel.
   *  The token of box j is predicted at position j - 1 of its tracked sequence. */
  async loadSeries(step, seqIndex, tok) {
    const st = this.state;
    const token = `${st.run}\u0000${st.runCmp.vs}\u0000${seqIndex}\u0000${tok}`;  // the same token at another step keeps its sparkline until the new one is here
    const key = `${token}\u0000${step}`;
    if (this.seriesShown !== token) this.detail.showHistory({ loading: true });
    this.seriesWanted = key;
    try {
      const map = await this.dynGet("sequences", { step });
      const seq = map.at_step && map.at_step.seq ? map.at_step.seq[seqIndex] : undefined;
      if (seq === undefined) throw new Error("this sequence is not tracked");
      const series = await this.dynGet("series", { seq, pos: tok - 1, points: SERIES_POINTS }, st.steps.length);
      const overlay = await this.runCompare.overlay(seq, tok - 1);
      if (this.seriesWanted !== key) return;
      this.seriesShown = token;
      this.detail.showHistory({ series, overlay }, step);
    } catch (err) {
      if (this.seriesWanted !== key) return;
      this.seriesShown = null;
      const msg = /unknown route/.test(err.message) ? "Its history over the run is not available here (a back end from an older seqviz, or a page made without it)." : `No history: ${err.message}`;
      this.detail.showHistory({ error: msg });
    }
  }

  updateStepper() {
    const st = this.state;
    const n = st.steps.length;
    this.slider.max = String(Math.max(0, n - 1));
    this.slider.value = String(Math.max(0, st.index));
    this.slider.disabled = n <= 1;
    this.prevBtn.disabled = st.index <= 0;
    this.nextBtn.disabled = st.index < 0 || st.index >= n - 1;
    const info = st.steps[st.index];
    this.stepLabel.textContent = info ? `step ${info.step}` : "step \u2013";
    this.stepCount.textContent = n ? `${st.index + 1} / ${n}` + (st.follow && n ? " \u00b7 latest" : "") : "";
    this.lossChart.setCurrent(info ? info.step : null);
    this.pplChart.setCurrent(info ? info.step : null);
  }

  updateCharts() {
    const st = this.state;
    const points = st.history && st.history.length ? st.history : st.steps;
    const cur = st.steps[st.index] ? st.steps[st.index].step : null;
    this.lossChart.setData(points.map((p) => ({ step: p.step, value: p.loss })), cur);
    this.pplChart.setData(points.map((p) => ({ step: p.step, value: p.perplexity })), cur);
  }

  updateInfo() {
    const e = this.state.entry;
    this.info.replaceChildren();
    if (!e) return;
    const meta = e.metadata || {};
    const row = (k, v) => { const r = el("div", "kv"); r.append(el("span", "k", k), el("span", "v", v)); this.info.append(r); };
    row("step", String(e.step));
    row("loss", fmtNum(e.loss, 4));
    row("perplexity", fmtNum(e.perplexity, 4));
    row("sequences", String(e.__of || (e.sequences || []).length));  // (__of: the first ones drawn)
    if (meta.model_name) row("model", String(meta.model_name));
    if (e.timestamp) row("logged", new Date(e.timestamp * 1000).toLocaleString());
  }

  updateWarnings() {
    const problems = this.state.problems || [];
    this.warnBtn.hidden = !problems.length;
    this.warnBtn.textContent = `\u26a0 ${problems.length} skipped line${problems.length === 1 ? "" : "s"}`;
    this.warnList.replaceChildren(...problems.map((p) => el("div", "warn-item", visibleName(`line ${p.line}: ${p.message}`))));
  }

  showBanner(text, kind, ms) {
    this.banner.hidden = false;
    this.banner.textContent = visibleName(text);  // messages may quote names
    this.banner.className = "banner " + kind;
    this.bannerKind = kind;
    clearTimeout(this.bannerTimer);
    if (ms) this.bannerTimer = setTimeout(() => this.hideBanner(kind), ms);
  }

  hideBanner(kind) {
    if (!kind || this.bannerKind === kind) this.banner.hidden = true;
  }

  showEmpty() {
    this.state.entry = null;
    this.state.index = -1;
    this.views.forEach((v) => v.destroy());
    this.views = [];
    this.updateStepper();
    this.detail.show(null);
    this.showBanner("Waiting for the first step\u2026", "wait");
  }

  // -- keyboard and deep links -------------------------------------------------------
  onKey(ev) {
    const t = ev.target;
    if (ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    if (this.state.batch.open && this.batchView.available && (ev.key === "ArrowLeft" || ev.key === "ArrowRight")) {
      const view = this.batchView;
      const at = view.batch ? view.batch.step : null;
      const to = ev.key === "ArrowLeft" ? view.steps.filter((s) => s < at).pop() : view.steps.find((s) => s > at);
      ev.preventDefault();
      if (at !== null && to !== undefined) this.openBatch(to);
      return;
    }
    if (ev.key === "ArrowLeft") { ev.preventDefault(); this.goIndex(this.state.index - 1); }
    else if (ev.key === "ArrowRight") { ev.preventDefault(); this.goIndex(this.state.index + 1); }
  }

  /** Write the view into the URL hash, once the user pauses (replaceState is slow). */
  saveHash() {
    clearTimeout(this.hashTimer);
    this.hashTimer = setTimeout(() => this.writeHashNow(), 150);
  }

  writeHashNow() {
    const st = this.state;
    const info = st.steps[st.index];
    const hash = writeHash({
      run: st.runs.length > 1 ? st.run : undefined,
      step: info && !st.follow ? info.step : undefined,
      seq: st.sel.seq ? st.sel.seq : undefined,
      tok: st.sel.index >= 0 ? st.sel.index : undefined,
      metric: st.metric !== defaultMetric({ vs: st.runCmp.vs }) ? st.metric : undefined,
      ids: st.showIds ? undefined : "0",
      cmp: st.compare ? (st.compareStep ?? "") : undefined,
      from: st.changeFrom ?? undefined,
      changes: st.changes.open ? st.changes.tab : undefined,
      batch: st.batch.open ? (st.batch.step ?? "") : undefined,
      ...this.runCompare.hash(),
    });
    if (hash === (location.hash || "#")) return;
    this.ownHash = hash;
    try { history.replaceState(null, "", hash === "#" ? location.pathname + location.search : hash); } catch (err) { /* e.g. srcdoc frames */ }
  }

  applyHash() {
    if (location.hash === this.ownHash) return;
    const h = readHash(location.hash);
    const st = this.state;
    const metric = hashMetric(h) || defaultMetric(h);
    if (metric !== st.metric) { st.metric = metric; this.metricSelect.value = metric; }
    st.sel = hashSelection(h, 0);
    const view = hashView(h);
    st.compare = view.compare;
    if (view.compareStep !== null) st.compareStep = view.compareStep;
    st.changeFrom = view.changeFrom;
    st.changes = view.changes;
    this.runCompare.applyHash(h);
    setPressed(this.compareBtn, st.compare);
    const batchStep = numberOrNull(h.batch);
    if (h.batch !== undefined && (!st.batch.open || batchStep !== st.batch.step)) this.openBatch(batchStep);
    else if (h.batch === undefined && st.batch.open) this.closeBatch();
    this.scrollToSeq = true;
    const step = hashInt(h.step, null);
    if (h.run && h.run !== st.run) { this.followHashRun(h.run, step); return; }
    if (step !== null) {
      const i = this.indexOfStep(step, true);
      if (i >= 0) { st.follow = false; this.goIndex(i, { keepFollow: true }); return; }
    }
    this.refresh();
  }

  /** The address names another run: show it when it exists (the list is asked again: it
   *  may be new), else say so and show the first run. */
  async followHashRun(name, step) {
    let runs = this.state.runs;
    if (!this.hasRun(runs, name)) {
      let problems = this.state.runProblems;
      try { const listing = await this.source.get("runs"); runs = listing.runs || []; problems = listing.problems || []; } catch (err) { /* the list we have */ }
      this.setRuns(runs, problems);
    }
    const run = this.hasRun(runs, name) ? name : this.firstRun(runs);
    if (run !== name) this.sayNoRun(name, run);
    if (run === null) return;
    if (run === this.state.run) { this.refresh(); return; }
    this.state.wantStep = step;
    await this.chooseRun(run);
  }
}
