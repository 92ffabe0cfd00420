// THE reader of a logged prediction on the dashboard side (the mirror of
// seqviz_trackers/format/entry.py): every view asks predictionFacts() what a
// prediction says, whatever form its candidates and optional fields come in, and
// readStep() turns a step view (seqviz_trackers/format/view.py: what the dashboard draws,
// the candidates left out) into an entry whose predictions predictionFacts() reads alike.
//
// Every module of the dashboard keeps its top-level names distinct: the export
// page concatenates them into one script (see seqviz_trackers/serve/export.py).

/** One candidate as {id, token, p}: a [id, token, p] triple, or the original
 *  tool's {token_id, token_str, prob} object. */
function candidate(c) {
  if (Array.isArray(c)) return { id: c[0], token: c[1], p: c[2] };
  return c && typeof c === "object" ? { id: c.token_id, token: c.token_str, p: c.prob } : { id: undefined, token: undefined, p: undefined };
}

function known(x) {
  return x !== undefined && x !== null;
}

/** The longer of a prediction's candidate lists (top_20 beside a top_k of 5 in original files). */
function rawCandidates(pred) {
  const a = Array.isArray(pred.top_k) ? pred.top_k : [];
  const b = Array.isArray(pred.top_20) ? pred.top_20 : [];
  return b.length > a.length ? b : a;
}

/** What a prediction says, logged fields first, else derived from its candidates:
 *  {p, rank, loss, correct, entropy, top1, top, rankGt, pLt}. When the target is not among
 *  the n candidates (and no rank was logged), rank is unknown and rankGt = n, pLt = the
 *  last candidate's p: "rank > n, p < p_n" (p stays unknown unless logged or given by loss).
 *  `withTop`: also return every candidate as {id, token, p} (the detail panel's bars);
 *  `into`: an object to fill instead of a new one (fast loops). Null without a prediction. */
export function predictionFacts(pred, withTop = true, into = {}) {
  if (!pred) return null;
  const raw = rawCandidates(pred);
  if (!raw.length && pred.top1) return viewFacts(pred, withTop, into);
  const target = pred.target_token_id;
  let p = pred.target_prob;
  let rank = pred.target_rank;
  let loss = pred.loss;
  let correct = pred.correct;
  const top1 = raw.length ? candidate(raw[0]) : undefined;
  if (!known(p) || !known(rank)) {
    for (let i = 0; i < raw.length; i++) {
      const c = candidate(raw[i]);
      if (c.id === target) {
        if (!known(p)) p = c.p;
        if (!known(rank)) rank = i + 1;
        break;
      }
    }
  }
  if (!known(loss) && known(p) && p > 0) loss = -Math.log(p);
  if (!known(p) && known(loss)) p = Math.exp(-loss);
  if (!known(correct)) correct = known(rank) ? rank === 1 : top1 ? top1.id === target : undefined;
  const bounded = !known(rank) && raw.length > 0;
  into.p = known(p) ? p : undefined; into.rank = known(rank) ? rank : undefined;
  into.loss = known(loss) ? loss : undefined; into.correct = correct; into.entropy = pred.entropy;
  into.rankGt = bounded ? raw.length : undefined;
  into.pLt = bounded ? candidate(raw[raw.length - 1]).p : undefined;
  into.top1 = top1; into.top = withTop ? raw.map(candidate) : null;
  return into;
}

const SUBSCRIPT = "\u2080\u2081\u2082\u2083\u2084\u2085\u2086\u2087\u2088\u2089";

/** "rank > 20, p < p₂₀": what is known of a target outside the top `n` candidates. */
export function boundText(n) {
  return `rank > ${n}, p < p${String(n).replace(/\d/g, (d) => SUBSCRIPT[Number(d)])}`;
}

/** The bound of a prediction (facts from predictionFacts) as text, with the value of
 *  p_n formatted by `fmt` ("rank > 20, p < p₂₀ = 0.3%"); only "rank > 20" when p(target)
 *  itself is known (logged, or from the loss). Empty when the rank is known. */
export function rankBound(f, fmt) {
  if (!f || !known(f.rankGt)) return "";
  if (known(f.p)) return `rank > ${f.rankGt}`;
  return boundText(f.rankGt) + (known(f.pLt) && fmt ? ` = ${fmt(f.pLt)}` : "");
}

/** A prediction of a step view (see readStep): its facts were read in Python (format.entry.facts),
 *  the candidates are not here (top: null) until attachCandidates() adds them. */
function viewFacts(pred, withTop, into) {
  const v = (x) => (known(x) ? x : undefined);
  into.p = v(pred.target_prob); into.rank = v(pred.target_rank); into.loss = v(pred.loss);
  into.correct = v(pred.correct); into.entropy = pred.entropy;
  into.rankGt = v(pred.rank_gt); into.pLt = v(pred.p_lt);
  into.top1 = known(pred.top1.id) ? pred.top1 : undefined;
  into.top = null;
  return into;
}

/** An entry with its sequences' `view` columns (a step view) as prediction objects
 *  {position, target_token_id, ..., rank_gt, p_lt, top1: {id, token}}, which every view
 *  reads through predictionFacts(); an entry in the logged form is returned as it is.
 *  `withCandidates`: also give each prediction its candidates from the columns a page
 *  carries (as attachCandidates does), for views that list them at once (a training batch). */
export function readStep(entry, { withCandidates = false } = {}) {
  if (!entry || !Array.isArray(entry.sequences) || !entry.sequences.some((s) => s && s.view)) return entry;
  const sequences = entry.sequences.map((seq, s) => {
    if (!seq || !seq.view) return seq;
    const { view, candidates, ...rest } = seq;
    const pos = view.position || [];
    const col = (k) => view[k] || [];
    const tid = col("target_token_id"), tstr = col("target_token_str"), tp = col("target_prob");
    const tr = col("target_rank"), loss = col("loss"), ent = col("entropy"), correct = col("correct");
    const gt = col("rank_gt"), lt = col("p_lt"), ids = col("top1_id"), strs = col("top1_str");
    const predictions = new Array(pos.length);
    for (let i = 0; i < pos.length; i++) {
      // one literal, every object of one shape (5x faster than setting the fields one by one)
      const pred = {
        position: pos[i], target_token_id: tid[i] ?? undefined, target_token_str: tstr[i] ?? undefined,
        target_prob: tp[i] ?? undefined, target_rank: tr[i] ?? undefined, loss: loss[i] ?? undefined,
        entropy: ent[i] ?? undefined, correct: correct[i] ?? undefined, rank_gt: gt[i] ?? undefined,
        p_lt: lt[i] ?? undefined, top1: { id: ids[i] ?? undefined, token: strs[i] ?? undefined },
      };
      if (withCandidates && candidates) attachCandidates(pred, candidateList(entry, s, i));
      predictions[i] = pred;
    }
    return { ...rest, predictions };
  });
  return { ...entry, sequences };
}

/** Whether a prediction's candidates are still to be asked for (a step view's: see attachCandidates). */
export function needsCandidates(pred) {
  return Boolean(pred && pred.top1 && !rawCandidates(pred).length);
}

/** Give a step view's prediction its candidates (a `candidates` answer's top_k), so that
 *  predictionFacts() lists them; `p_step`: the grid a page's probabilities are kept to. */
export function attachCandidates(pred, answer) {
  pred.top_k = answer && Array.isArray(answer.top_k) ? answer.top_k : [];
  if (answer && answer.p_step) pred.p_step = answer.p_step;
}

/** The values of a column of numbers as a page packs it (seqviz_trackers/serve/export.py):
 *  "u8:" / "u16:" / "u32:" and the base64 of each value + 1 (0: null) in that many bytes, the
 *  lowest byte of every value first, then the next. A list is returned as it is. */
export function unpackInts(col) {
  if (typeof col !== "string") return col;
  const colon = col.indexOf(":");
  const size = { u8: 1, u16: 2, u32: 4 }[col.slice(0, colon)];
  const bytes = atob(col.slice(colon + 1));
  const n = bytes.length / (size || 1);
  if (!size || !Number.isInteger(n)) throw new Error("a packed column this page cannot read");
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    let v = 0;
    for (let b = size - 1; b >= 0; b--) v = v * 256 + bytes.charCodeAt(b * n + i);
    out[i] = v === 0 ? null : v - 1;
  }
  return out;
}

/** A sequence's candidate columns (format/view.py with_candidates) read once: the packed ids
 *  unpacked, the probabilities from their codes (p = code / p_scale; each prediction's first
 *  code, then how much each next one is below the one before: P_SCALE in export.py), where
 *  each prediction's begin. */
function candidateColumns(cand) {
  if (cand.start) return cand;
  cand.id = unpackInts(cand.id);
  if (typeof cand.p === "string") {
    const codes = unpackInts(cand.p), scale = cand.p_scale;
    const p = new Array(codes.length);
    for (let i = 0, k = 0; i < cand.n.length; i++) {
      let q = 0;
      for (let j = 0; j < cand.n[i]; j++, k++) { q = j === 0 ? codes[k] : q - codes[k]; p[k] = q / scale; }
    }
    cand.p = p;
  }
  cand.start = new Array(cand.n.length + 1);
  cand.start[0] = 0;
  for (let k = 0; k < cand.n.length; k++) cand.start[k + 1] = cand.start[k] + cand.n[k];
  return cand;
}

/** The candidates of the i-th prediction of sequence `seq` of a step view with its candidate columns. */
function candidateList(entry, seq, i) {
  const cand = candidateColumns(entry.sequences[seq].candidates);
  const strings = entry.candidate_strings || {};
  const top_k = [];
  for (let k = cand.start[i]; k < cand.start[i + 1]; k++) {
    const id = cand.id[k];
    top_k.push([id, cand.token ? cand.token[k] : strings[String(id)] ?? null, cand.p[k]]);
  }
  // a page keeps probabilities to a grid of 1/p_scale (export.py): say so where p is printed whole
  return cand.p_scale ? { top_k, p_step: 1 / cand.p_scale } : { top_k };
}

/** The candidates of the prediction at position `pos` of sequence `seq` of an entry a page
 *  carries, as the `candidates` route answers them: from the logged form, or from a step
 *  view's candidate columns (format.view with_candidates). Null when there is none. */
export function candidatesAt(entry, seq, pos) {
  const s = entry && Array.isArray(entry.sequences) ? entry.sequences[seq] : null;
  if (!s) return null;
  if (!s.view) {
    const pred = (s.predictions || []).find((p) => p && p.position === pos);
    return pred ? { top_k: rawCandidates(pred).map((c) => { const x = candidate(c); return [x.id, x.token, x.p]; }) } : null;
  }
  const i = (s.view.position || []).indexOf(pos);
  if (i < 0 || !s.candidates) return null;
  return candidateList(entry, seq, i);
}
