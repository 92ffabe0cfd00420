// The dashboard's entry module. TensorBoard imports it and calls render(); the
// standalone server's index.html calls render({source: "websocket"}); an exported
// page carries its data in a JSON script element with id "seqviz-data":
// {title, open?, encoding: "gzip+base85", data} (seqviz_trackers/serve/export.py), or the data itself.

import { Dashboard } from "./app.js";
import { FetchSource, WebSocketSource, InlineSource } from "./sources.js";

/** The alphabet of a page's base85: RFC 1924's, with "<", ">", "&" written ",", ".", "[". */
const PAGE_85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%[()*+-;,=.?@^_\x60{|}~";

/** The bytes of a page's base85 text: each 5 characters are 4 bytes (big-endian), a last
 *  group of k + 1 characters k bytes. */
function fromBase85(text) {
  const digit = new Int8Array(128).fill(-1);
  for (let i = 0; i < 85; i++) digit[PAGE_85.charCodeAt(i)] = i;
  const rest = text.length % 5;
  const out = new Uint8Array(Math.floor(text.length / 5) * 4 + (rest ? rest - 1 : 0));
  for (let at = 0, o = 0; at < text.length; at += 5) {
    let v = 0;
    for (let k = at; k < at + 5; k++) {
      const d = k < text.length ? digit[text.charCodeAt(k)] : 84;
      if (d < 0 || d === undefined) throw new Error("this page's data is damaged");
      v = v * 85 + d;
    }
    for (let shift = 3; shift >= 0 && o < out.length; shift--) out[o++] = Math.floor(v / 2 ** (8 * shift)) % 256;
  }
  return out;
}

/** The data of a page: gzip-compressed JSON in base85 (or base64), unpacked by the browser. */
async function unpackPageData(text, encoding) {
  const bytes = encoding === "gzip+base85" ? fromBase85(text) : Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}

function addStylesheet(href) {
  if (document.getElementById("seqviz-css")) return;
  const link = document.createElement("link");
  link.id = "seqviz-css";
  link.rel = "stylesheet";
  link.href = href;
  document.head.append(link);
}

/**
 * Build the dashboard into document.body.
 * @param {{source?: "fetch"|"websocket"|"inline"|object, base?: string, title?: string, pollMs?: number}} options
 *   source: which data adapter (default: inline when the page holds #seqviz-data, else fetch);
 *   an object with get/subscribe/watch is used as is. base: the folder the routes live in
 *   (default: this module's folder).
 * @returns {Dashboard}
 */
export function render(options = {}) {
  const inlineData = document.getElementById("seqviz-data");
  const mode = options.source || (inlineData ? "inline" : "fetch");
  let source;
  let title = options.title;
  if (typeof mode === "object") {
    source = mode;
  } else if (mode === "inline") {
    const data = JSON.parse(inlineData.textContent);
    title = title || data.title;
    const packed = data.encoding === "gzip+base85" || data.encoding === "gzip+base64";
    source = new InlineSource(packed ? unpackPageData(data.data, data.encoding) : data,
                              typeof data.open === "string" ? data.open : "");
  } else {
    const base = options.base || new URL("./", import.meta.url).href;
    addStylesheet(new URL("./dashboard.css", base).href);
    if (mode === "websocket") {
      const ws = new URL("./ws", base);
      ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
      source = new WebSocketSource(ws.href, base);
    } else {
      source = new FetchSource(base, { pollMs: options.pollMs || 3000 });
    }
  }
  document.body.classList.add("seqviz-page");
  const app = new Dashboard(document.body, source, { title });
  window.seqvizDashboard = app;
  return app;
}
