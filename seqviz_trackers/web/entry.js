// THE reader of a logged prediction on the dashboard side (the mirror of
// seqviz_trackers/format/entry.py): every view asks predictionFacts() what a
// prediction says, whatever form its candidates and optional fields come in.
//
// Every module of the dashboard keeps its top-level names distinct: the export
// page concatenates them into one script (see seqviz_trackers/serve/export.py).

function candidate(c) {
  // candidates are [id, token, p] (older files: {id, token, p})
  return Array.isArray(c) ? { id: c[0], token: c[1], p: c[2] } : c;
}

/** Fill in what hand-made files may lack, from what the prediction does have.
 *  `withTop`: also return every candidate as {id, token, p} (the detail panel's bars);
 *  `into`: an object to fill instead of a new one (fast loops). Null without a prediction. */
export function predictionFacts(pred, withTop = true, into = {}) {
  if (!pred) return null;
  const raw = pred.top_20 && pred.top_20.length ? pred.top_20 : (pred.top_k || []);
  const target = pred.target_token_id;
  let p = pred.target_prob;
  let rank = pred.target_rank;
  let loss = pred.loss;
  let correct = pred.correct;
  const top1 = raw.length ? candidate(raw[0]) : undefined;
  if (p === undefined || p === null || rank === undefined || rank === null) {
    for (let i = 0; i < raw.length; i++) {
      const c = candidate(raw[i]);
      if (c.id === target) {
        if (p === undefined || p === null) p = c.p;
        if (rank === undefined || rank === null) rank = i + 1;
        break;
      }
    }
  }
  if ((loss === undefined || loss === null) && p !== undefined && p !== null && p > 0) loss = -Math.log(p);
  if (correct === undefined || correct === null) correct = top1 ? top1.id === target : (rank === undefined || rank === null ? undefined : rank === 1);
  into.p = p; into.rank = rank; into.loss = loss; into.correct = correct; into.entropy = pred.entropy;
  into.top1 = top1; into.top = withTop ? raw.map(candidate) : null;
  return into;
}
