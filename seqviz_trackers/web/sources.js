// The data adapters. All three share one interface, so the dashboard never knows
// where its data comes from:
//
//   source.get(route, params) -> Promise<json>   any route of seqviz_trackers.api.ROUTES
//   source.subscribe(listener) -> unsubscribe    live events (see below)
//   source.watch(run)                            which run the live events are about
//
//   getStep(source, run, step) -> Promise<entry>  a step as the dashboard draws it: its step view
//                                (no candidates; the `candidates` route gives those of one prediction)
//   getStepStart(source, run, step, count) -> Promise<{entry, of} | null>  its first sequences
//
// Events: {type:"status", state:"live"|"connecting"|"disconnected"|"polling"|"snapshot", text}
//         {type:"runs", runs}  {type:"steps", run, steps, problems}
//         {type:"steps_added", run, steps}  {type:"step", run, entry}
//         {type:"warning", run, line, message}  {type:"reset", run}  {type:"waiting", run?, message}

import { stepInfo, own } from "./util.js";
import { readStep, candidatesAt, unpackInts } from "./entry.js";

/** The entry of `step` in `run` as the dashboard draws it: the back ends send its step view
 *  (`step?view=1`), a page its own form; either is read by readStep() (entry.js). */
export async function getStep(source, run, step) {
  return readStep(await source.get("step", { run, step, view: 1 }));
}

/** The first `count` sequences of a large `step`, drawn while its whole view is on its way:
 *  `{entry, of}`, `of` the step's number of sequences. From a back end (`step?view=1&seqs=K`);
 *  null where it sends none (a small step) and from a page (its data is at hand). */
export async function getStepStart(source, run, step, count) {
  if (!source.cutsSteps) return null;
  const answer = await source.get("step", { run, step, view: 1, seqs: count });
  return answer.view ? { entry: readStep(answer.view), of: answer.of } : null;
}

class SourceBase {
  constructor() {
    this.listeners = new Set();
    this.run = null;
    this.lastStatus = null;
  }
  subscribe(listener) {
    this.listeners.add(listener);
    if (this.lastStatus) listener(this.lastStatus);
    return () => this.listeners.delete(listener);
  }
  emit(event) {
    if (event.type === "status") this.lastStatus = event;
    for (const listener of [...this.listeners]) {
      try { listener(event); } catch (err) { console.error("seqviz listener failed", err); }
    }
  }
  watch(run) { this.run = run; }
  /** Whether "runs" events are wanted while a run is watched (to see another run grow). */
  followRuns(on) { this.wantRuns = on; }
  close() {}
}

/** Plain HTTP GETs against `base` (the folder the dashboard is served from);
 *  polls `steps` so new steps show up without a reload: after the first answer, only the
 *  steps past the last one it holds (`steps?after=N`), and the whole list again when the
 *  answer's `version` or `num_steps` says the steps it holds are not the run's any more. */
export class FetchSource extends SourceBase {
  constructor(base, { pollMs = 3000 } = {}) {
    super();
    this.base = String(base);
    this.pollMs = pollMs;
    this.timer = null;
    this.lastKey = null;
    this.known = null;  // {run, steps, version}: the watched run's step list as last polled
    this.busy = false;
    this.cutsSteps = true;
  }
  async get(route, params = {}) {
    const url = new URL(route, this.base);
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    const response = await fetch(url, { cache: "no-store" });
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok) throw new Error((body && body.error) || `${route}: HTTP ${response.status}`);
    return body;
  }
  subscribe(listener) {
    const off = super.subscribe(listener);
    if (!this.timer) {
      this.timer = setInterval(() => this.poll(), this.pollMs);
      this.emitPolling();
    }
    return off;
  }
  emitPolling() {
    this.emit({ type: "status", state: "polling", text: `Polling every ${Math.round(this.pollMs / 1000)} s` });
  }
  watch(run) {
    this.run = run;
    this.lastKey = null;
    this.known = null;
  }
  /** The watched run's steps and problems now: the steps past the known ones added to them,
   *  or the whole list when there are none known or they changed otherwise. */
  async pollSteps(run) {
    const known = this.known && this.known.run === run && this.known.steps.length ? this.known : null;
    if (known) {
      const data = await this.get("steps", { run, after: known.steps[known.steps.length - 1].step });
      const steps = data.steps || [];
      if (data.version === known.version && known.steps.length + steps.length === data.num_steps) {
        return { steps: steps.length ? known.steps.concat(steps) : known.steps, problems: data.problems || [], version: data.version };
      }
    }
    const data = await this.get("steps", { run });
    return { steps: data.steps || [], problems: data.problems || [], version: data.version };
  }
  async poll() {
    if (!this.run) {
      try { const r = await this.get("runs"); this.emit({ type: "runs", runs: r.runs, problems: r.problems || [] }); } catch (err) { /* next time */ }
      return;
    }
    if (this.busy) return;  // the previous poll is still waiting for its answer
    const run = this.run;
    this.busy = true;
    try {
      const data = await this.pollSteps(run);
      if (run !== this.run) return;  // watch() moved on while this was asked
      this.known = { run, steps: data.steps, version: data.version };
      const last = data.steps.length ? data.steps[data.steps.length - 1] : null;
      const key = `${data.version}:${data.steps.length}:${last && last.step}:${data.problems.length}`;
      if (this.lastStatus && this.lastStatus.state !== "polling") this.emitPolling();
      if (key !== this.lastKey) {
        // also the first poll after watch(): a step written between the dashboard's own
        // `steps` request and this poll would otherwise never be announced
        this.emit({ type: "steps", run, steps: data.steps, problems: data.problems });
        this.lastKey = key;
      }
      if (this.wantRuns) {
        const { runs, problems = [] } = await this.get("runs");
        const runsKey = JSON.stringify([runs, problems]);
        if (runsKey !== this.lastRunsKey) { this.lastRunsKey = runsKey; this.emit({ type: "runs", runs, problems }); }
      }
    } catch (err) {
      this.emit({ type: "status", state: "disconnected", text: "Offline \u2014 retrying" });
    } finally {
      this.busy = false;
    }
  }
  close() { clearInterval(this.timer); this.timer = null; }
}

/** The live server: one websocket for pushes and requests; requests fall back to
 *  HTTP (same routes) while the socket is down. Reconnects with backoff. */
export class WebSocketSource extends SourceBase {
  constructor(wsUrl, httpBase) {
    super();
    this.wsUrl = String(wsUrl);
    this.http = new FetchSource(httpBase);
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.retryMs = 500;
    this.closed = false;
    this.countdown = null;
    this.cutsSteps = true;
  }
  subscribe(listener) {
    const off = super.subscribe(listener);
    if (!this.ws && !this.closed) this.connect();
    return off;
  }
  connect() {
    clearInterval(this.countdown);
    this.emit({ type: "status", state: "connecting", text: "Connecting\u2026" });
    const url = new URL(this.wsUrl);
    if (this.run) url.searchParams.set("run", this.run);
    url.searchParams.set("latest", "0");  // no step pushed at watch: the page asks for what it draws first
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.retryMs = 500;
      this.emit({ type: "status", state: "live", text: "Live" });
    };
    ws.onmessage = (msg) => {
      let data;
      try { data = JSON.parse(msg.data); } catch (err) { return; }
      if (data.type === "response") {
        const waiter = this.pending.get(data.id);
        if (!waiter) return;
        this.pending.delete(data.id);
        if (data.status === 200) waiter.resolve(data.body);
        else waiter.reject(new Error((data.body && data.body.error) || `HTTP ${data.status}`));
      } else {
        if (data.type === "step" && data.entry) data.entry = readStep(data.entry);
        this.emit(data);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const waiter of this.pending.values()) waiter.reject(new Error("connection lost"));
      this.pending.clear();
      if (this.closed) return;
      const wait = this.retryMs;
      this.retryMs = Math.min(this.retryMs * 2, 10000);
      let left = Math.ceil(wait / 1000);
      const say = () => this.emit({ type: "status", state: "disconnected", text: `Disconnected \u2014 retrying in ${left} s` });
      say();
      this.countdown = setInterval(() => { left = Math.max(0, left - 1); say(); }, 1000);
      setTimeout(() => { if (!this.closed) this.connect(); }, wait);
    };
  }
  get(route, params = {}) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return this.http.get(route, params);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ type: "get", id, route, params }));
    });
  }
  watch(run) {
    if (run === this.run) return;
    this.run = run;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "watch", run }));
  }
  close() {
    this.closed = true;
    clearInterval(this.countdown);
    if (this.ws) this.ws.close();
  }
}

/** Data inlined in the page (exports, the W&B panel): {title, entries, steps?, extra?}.
 *  `entries` are step views with their candidates (format/view.py) or logged entries;
 *  `step` answers an entry, `candidates` one prediction's candidates. `steps` is the loss history for the chart; `extra.train_batches` (batches_extra) answers
 *  batches and batch (at the steps it lists as available); `extra.dynamics` (written by
 *  seqviz_trackers.export.dynamics_extra) answers sequences / series / diff for the inlined
 *  steps; `extra.vs` (runs_compare_extra) answers compare_runs at those steps and the
 *  series of the run compared with (listed by `runs` as compare_only); `extra.open` is the
 *  address the page opens at when it has none (the W&B batch panel: "batch=N"); other routes
 *  are answered from `extra[route]` when present. */
export class InlineSource extends SourceBase {
  /** `data`: the page's data, or a promise of it (a packed page is unpacked first);
   *  `startHash`: its `extra.open`, known before the data is unpacked. */
  constructor(data, startHash = "") {
    super();
    this.data = {};
    this.startHash = startHash;
    this.entries = new Map();
    this.infos = [];
    this.loaded = Promise.resolve(data).then((d) => this.load(d));
    this.emit({ type: "status", state: "snapshot", text: "Snapshot" });
  }
  load(data) {
    this.data = data || {};
    for (const entry of this.data.entries || []) this.entries.set(entry.step, entry);
    this.infos = [...this.entries.values()].map(stepInfo).sort((a, b) => a.step - b.step);
    this.runName = this.data.title || "export";
    // the address the page opens at when it has none of its own (`extra.open`, e.g. "batch=N")
    if (!this.startHash && this.data.extra && typeof this.data.extra.open === "string") this.startHash = this.data.extra.open;
  }
  async get(route, params = {}) {
    await this.loaded;
    const infos = this.infos;
    const vs = this.data.extra && this.data.extra.vs;
    if (route === "runs") {
      const runs = [{ run: this.runName, num_steps: infos.length, last_step: infos.length ? infos[infos.length - 1].step : null }];
      if (vs) runs.push({ run: vs.run, num_steps: vs.num_steps, last_step: vs.last_step, compare_only: true });
      return { runs };
    }
    if (route === "steps") {
      const out = { run: this.runName, steps: infos.slice(), problems: [] };
      if (this.data.steps && this.data.steps.length) out.history = this.data.steps;
      return out;
    }
    if (route === "step" || route === "candidates") {
      const entry = this.entries.get(Number(params.step));
      if (!entry) throw new Error(`no step ${params.step} in this page`);
      if (route === "step") return entry;
      const found = candidatesAt(entry, Number(params.seq), Number(params.pos));
      if (!found) throw new Error(`step ${params.step} has no prediction at position ${params.pos} of sequence ${params.seq}`);
      return { run: this.runName, step: entry.step, seq: Number(params.seq), pos: Number(params.pos), ...found };
    }
    if (vs && route === "compare_runs") {
      const answer = params.b === vs.run ? own(vs.answers, String(params.step)) : undefined;
      if (!answer) throw new Error(`this page holds the comparison with run ${vs.run} at its own steps only`);
      return answer;
    }
    if (vs && route === "series" && params.run === vs.run) return inlineDynamics(vs.dynamics, vs.run, route, params);
    const batches = this.data.extra && this.data.extra.train_batches;
    if (batches && route === "batches") return { run: this.runName, ...batches.summary };
    if (batches && route === "batch") {
      const batch = own(batches.batch, String(params.step));
      if (!batch) throw new Error(`this page holds the training batches of steps ${batches.summary.available.join(", ")} only`);
      // its captured rows: a step view with its candidates in the page, read with them all
      if (!batch.read) batch.read = { ...batch, capture: batch.capture ? readStep(batch.capture, { withCandidates: true }) : null };
      return batch.read;
    }
    const dyn = this.data.extra && this.data.extra.dynamics;
    if (dyn && (route === "sequences" || route === "series" || route === "diff")) return inlineDynamics(dyn, this.runName, route, params);
    const extra = own(this.data.extra, route);
    if (extra !== undefined) return extra;
    throw new Error(`unknown route ${route}`);
  }
}

/** A track of a page's dynamics with its packed series unpacked (once), one list per position. */
function readTrack(t) {
  if (!t || t.read) return t;
  const width = (t.steps || []).length;
  for (const key of ["p1000", "target_rank", "plt1000", "rank_gt"]) {
    if (typeof t[key] !== "string" || !width) continue;
    const flat = unpackInts(t[key]), rows = [];
    for (let i = 0; i < flat.length; i += width) rows.push(flat.slice(i, i + width));
    t[key] = rows;
  }
  t.read = true;
  return t;
}

/** The dynamics routes, answered from the compact form a page carries:
 *  {points, at_step: {step: [seq]}, tracks: {seq: {seq, name, label, num_steps, steps,
 *   p1000: [per position: [p(target) in thousandths, per step]], target_rank: [...],
 *   learned_at: [per position], learned_at_top5: [...], times_forgotten: [...],
 *   forgotten: [[pos, step, since, last_top1], the latest],
 *   plt1000?, rank_gt?: [per position: the bound of a target outside the candidates, per step]}},
 *  diffs: {b: diff}}; a page packs the four series (per position, per step, flattened: unpackInts). */
function inlineDynamics(dyn, run, route, params) {
  const tracks = dyn.tracks || {};
  if (route === "sequences") {
    const seqs = Object.values(tracks).map(readTrack).map((t) => ({ seq: t.seq, name: t.name, label: t.label, num_positions: t.p1000.length,
      num_steps: t.num_steps, first_step: t.steps[0] ?? null, last_step: t.steps[t.steps.length - 1] ?? null }));
    const at = params.step !== undefined ? own(dyn.at_step, String(params.step)) : undefined;
    if (params.step !== undefined && !at) throw new Error(`no step ${params.step} in this page`);
    return { run, sequences: seqs, at_step: at ? { step: Number(params.step), seq: at } : null };
  }
  if (route === "series") {
    const t = readTrack(own(tracks, String(params.seq)));
    const pos = Number(params.pos);
    if (!t || !(pos >= 0 && pos < t.p1000.length)) throw new Error(`no history of sequence ${params.seq} position ${params.pos} in this page`);
    const none = t.steps.map(() => null);
    return {
      run, seq: t.seq, name: t.name, pos, token: null, target: { id: null, token: null },
      steps: t.steps, target_prob: t.p1000[pos].map((v) => (v === null ? null : v / 1000)), target_rank: t.target_rank[pos],
      loss: none, entropy: none, top1: none, top1_tokens: {},
      rank_gt: t.rank_gt ? t.rank_gt[pos] : none,
      p_lt: t.plt1000 ? t.plt1000[pos].map((v) => (v === null ? null : v / 1000)) : none,
      learned_at: t.learned_at[pos], learned_at_top5: t.learned_at_top5[pos],
      forgotten: (t.forgotten || []).filter((f) => f[0] === pos).map((f) => ({ step: f[1], since: f[2], last_top1: f[3] })),
      times_forgotten: t.times_forgotten ? t.times_forgotten[pos] : undefined,
      num_steps: t.num_steps,
    };
  }
  const diffs = dyn.diffs || {};
  const b = params.b !== undefined ? String(params.b) : Object.keys(diffs).pop();
  const d = b !== undefined ? own(diffs, b) : undefined;
  if (!d) throw new Error(`Step ${params.b ?? "?"} is the first logged step here: there is no earlier step to compare with.`);
  if (params.a !== undefined && Number(params.a) !== d.a) throw new Error(`this page holds only the change from the previous logged step (${d.a}) to step ${d.b}`);
  return { run, ...d };
}
