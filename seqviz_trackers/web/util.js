// Small helpers shared by the views: element building (text only, never HTML),
// visible whitespace, number formatting and the colour metrics.
//
// Every module of the dashboard keeps its top-level names distinct: the export
// page concatenates them into one script (see seqviz_trackers/serve/export.py).

/** Create an element; `text` is set with textContent (token strings are untrusted). */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

const SHOWN_AS = { "\n": "\u21b5", "\t": "\u21e5", " ": "\u00b7", "\r": "\\r" };
// control characters, zero-width and bidi-override characters are shown as escapes
const PLAIN = /^[!-~]*$/;
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/;

/** Text as a person can see it: invisible characters (controls, zero-width, bidi overrides
 *  and isolates) as escapes like \x16 or \u202e; with `marks`, also spaces as a middle dot
 *  and newlines and tabs as arrows (how tokens are shown). */
function visibleText(text, marks) {
  if (text === undefined || text === null) return "";
  text = String(text);
  if (PLAIN.test(text)) return text;
  let out = "";
  for (const ch of text) {
    const mapped = marks ? SHOWN_AS[ch] : undefined;
    if (mapped) out += mapped;
    else if (INVISIBLE.test(ch)) {
      const code = ch.codePointAt(0);
      out += code < 0x100 ? "\\x" + code.toString(16).padStart(2, "0") : "\\u" + code.toString(16).padStart(4, "0");
    } else out += ch;
  }
  return out;
}

/** A token: whitespace made visible, other invisible characters as escapes. */
export function visibleToken(text) {
  return visibleText(text, true);
}

/** A sequence or run name: spaces stay spaces, invisible characters are escapes as in tokens
 *  (so a name cannot reorder itself to look like another). */
export function visibleName(text) {
  return visibleText(text, false);
}

/** `table[key]` when `key` is the table's own (never a prototype's: "__proto__", "toString"). */
export function own(table, key) {
  return table && typeof key === "string" && Object.hasOwn(table, key) ? table[key] : undefined;
}

export function fmtNum(x, digits = 3) {
  if (x === undefined || x === null || Number.isNaN(x)) return "\u2013";
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(1);
  return Number(x.toPrecision(digits)).toString();
}

export function fmtPct(p) {
  if (p === undefined || p === null) return "\u2013";
  if (p >= 0.995) return "100%";
  if (p < 0.001) return p === 0 ? "0%" : "<0.1%";
  return (p * 100).toFixed(p < 0.1 ? 1 : 0) + "%";
}

// Each metric maps a prediction to a bucket 0..9 (0 = badly predicted, 9 = well),
// NO_VALUE (-1) when the prediction does not give it, or BELOW_TOP (-2) when the target
// is outside the logged candidates and only a bound is known (rank > n, p < p_n), and
// says how to label the legend.
export const NO_VALUE = -1;
export const BELOW_TOP = -2;

export const METRICS = {
  prob: {
    label: "p(target)",
    bucket: (f) => (f.p === undefined || f.p === null ? (f.rankGt ? BELOW_TOP : NO_VALUE) : Math.min(9, Math.floor(f.p * 10))),
    legend: ["0", "0.5", "1"],
  },
  entropy: {
    label: "entropy",
    bucket: (f, ctx) => (f.entropy === undefined || f.entropy === null ? NO_VALUE : 9 - Math.min(9, Math.floor((f.entropy / ctx.maxEntropy) * 10))),
    legend: (ctx) => [fmtNum(ctx.maxEntropy, 2) + " nats", "", "0 (sure)"],
  },
  loss: {
    label: "loss",
    bucket: (f, ctx) => (f.loss === undefined || f.loss === null ? (f.rankGt ? BELOW_TOP : NO_VALUE) : 9 - Math.min(9, Math.floor((f.loss / ctx.maxLoss) * 10))),
    legend: (ctx) => ["\u2265 " + fmtNum(ctx.maxLoss, 2), "", "0"],
  },
  rank: {
    label: "rank",
    bucket: (f) => {
      const r = f.rank;
      if (r === undefined || r === null) return f.rankGt ? BELOW_TOP : NO_VALUE;
      return r <= 1 ? 9 : r <= 2 ? 8 : r <= 3 ? 7 : r <= 5 ? 6 : r <= 10 ? 5 : r <= 20 ? 4 : r <= 50 ? 3 : r <= 100 ? 2 : r <= 1000 ? 1 : 0;
    },
    legend: [">1000", "10", "1"],
  },
  // colours from the diff of two steps (dynamics.js), not from one prediction
  change: { label: "change (\u0394 log p)", bucket: () => -1, legend: [] },
  // colours from the comparison of two runs (runcompare.js)
  vs: { label: "vs run B (\u0394 log p)", bucket: () => -1, legend: [] },
  none: { label: "none", bucket: () => -1, legend: [] },
};

/** Metric scales for one entry: entropy against ln(vocab size), loss clipped at 10 nats. */
export function metricContext(entry) {
  const vocab = entry && entry.metadata && entry.metadata.vocab_size;
  return { maxEntropy: vocab > 1 ? Math.log(vocab) : 10, maxLoss: 10 };
}

/** What the step list holds of one entry: {step, loss, perplexity, timestamp} (null when absent). */
export function stepInfo(entry) {
  return { step: entry.step, loss: entry.loss ?? null, perplexity: entry.perplexity ?? null, timestamp: entry.timestamp ?? null };
}

function decodePart(text) {
  try { return decodeURIComponent(text); } catch (err) { return text; }  // a malformed escape stays as written
}

/** Parse "#step=1200&seq=2" into an object of strings (without a prototype: a key like
 *  "__proto__" is a key like any other). */
export function readHash(hash) {
  const out = Object.create(null);
  for (const part of String(hash || "").replace(/^#/, "").split("&")) {
    if (!part) continue;
    const i = part.indexOf("=");
    const key = decodePart(i < 0 ? part : part.slice(0, i));
    out[key] = decodePart(i < 0 ? "" : part.slice(i + 1));
  }
  return out;
}

/** A whole number from the address, or `fallback` when it is absent or not one. */
export function hashInt(value, fallback) {
  const n = value === undefined || value === "" ? NaN : Number(value);
  return Number.isSafeInteger(n) ? n : fallback;
}

export function writeHash(obj) {
  return "#" + Object.entries(obj)
    .filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v)).join("&");
}
