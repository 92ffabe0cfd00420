// The dashboard's entry module. TensorBoard imports it and calls render(); the
// standalone server's index.html calls render({source: "websocket"}); an exported
// page carries its data in a JSON script element with id "seqviz-data":
// {title, open?, encoding: "gzip+base64", data} (seqviz_trackers/serve/export.py), or the data itself.

import { Dashboard } from "./app.js";
import { FetchSource, WebSocketSource, InlineSource } from "./sources.js";

/** The data of a page: base64 of gzip-compressed JSON, unpacked by the browser. */
async function unpackPageData(text) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
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
    source = new InlineSource(data.encoding === "gzip+base64" ? unpackPageData(data.data) : data,
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
