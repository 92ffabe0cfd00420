"""One self-contained HTML page of logged steps: the dashboard with its data inlined.

The page needs no server and loads nothing from anywhere (no URL of any kind is in
it), so it opens from disk, from an e-mail attachment, or inside a W&B panel.

``seqviz export run.jsonl -o report.html`` writes the latest step (``--step N`` picks
steps, ``--all`` takes every one); :func:`export_html` is the same from Python.

The data sits in ``<script type="application/json" id="seqviz-data">`` as
``{"title", "encoding": "gzip+base85", "data"}``: the JSON of ``{"entries", "title",
"steps"?, "extra"?}``, gzip-compressed and encoded in base85 (RFC 1924's alphabet with
``<``, ``>``, ``&`` written ``,``, ``.``, ``[``: 5 characters for 4 bytes, base64 takes 5.33)
(the page unpacks it with the browser's ``DecompressionStream``); :func:`page_data` reads
it back (and the ``"gzip+base64"`` of earlier pages).

The page's form of that data (:func:`page_form`, the one encoder of every page: exports and
W&B panels) packs its long columns of numbers: the entries (and the training batches'
captured rows) are step views with their candidates in columns, the candidates' ids as a
packed column and their probabilities as codes (see :data:`P_SCALE`); the dynamics'
series (``p1000``, ``target_rank``, ``plt1000``, ``rank_gt``) are packed columns too. A
packed column is the text ``"u8:"`` / ``"u16:"`` / ``"u32:"`` and the base64 of each value
plus one (0: null) in that many little-endian bytes, the lowest byte of every value first,
then the next (which compresses better). ``web/entry.js`` (``unpackInts``) reads them.
The dashboard's code and style are inlined without their comment lines and indentation.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Callable

import numpy as np

from ..format.view import step_view
from ..storage.jsonl import client_json

__all__ = ["export_html", "page_data", "page_form", "page_text", "page_bytes", "pack_ints", "unpack_ints", "pack_probs", "unpack_probs",
           "strip_lines", "dashboard_bundle", "json_for_html", "dynamics_extra", "runs_compare_extra", "batches_extra",
           "MODULES", "P_SCALE"]

#: A page holds a candidate's probability p as an integer code c, read back as c / P_SCALE:
#: c = 2k when p is k / 4,000 exactly (0 and 1 among them), else 2 floor(p * 4,000) + 1, the
#: middle of the 1/4,000 wide interval p is in. The dashboard prints probabilities as
#: percentages (``fmtPct`` in ``web/util.js``: in steps of 0.1% below 10%, of 1% above, "<0.1%"
#: below 0.1%), and every rounding boundary of those is a multiple of 1/2,000: a value on a
#: multiple of 1/4,000 is kept as it is, any other is read back inside the same interval, so
#: the page prints the digits of the logged value. It is within 1/8,000 of it: the bars of
#: the detail panel (drawn relative to the top candidate's p) move by under a pixel unless
#: that p is below about 2%.
P_SCALE = 8000

#: The dashboard's modules in dependency order (each imports only earlier ones).
MODULES = ("util.js", "entry.js", "sources.js", "chart.js", "dynamics.js", "runcompare.js", "tokens.js", "batches.js", "detail.js", "app.js", "index.js")

_IMPORT = re.compile(r'^import\s[^;]*\sfrom\s+"\./[\w.-]+\.js";\s*$', re.M)
_EXPORT = re.compile(r"^export\s+(?=(?:async\s+)?(?:function|class|const|let)\b)", re.M)


def _web_text(name: str) -> str:
    return resources.files("seqviz_trackers").joinpath("web", name).read_text("utf-8")


@lru_cache(maxsize=1)
def dashboard_bundle() -> str:
    """The dashboard's ES modules as one module script: imports removed, ``export`` keywords dropped.

    Raises:
        RuntimeError: a module uses a form of import/export this simple build does not handle.
    """
    parts = []
    for name in MODULES:
        text = _web_text(name)
        text = _IMPORT.sub("", text)
        text = _EXPORT.sub("", text)
        leftover = re.search(r"^\s*(import|export)\b.*$", text, re.M)
        if leftover:
            raise RuntimeError(f"web/{name}: cannot inline {leftover.group(0).strip()!r}; use single-line "
                               "'import {...} from \"./x.js\";' and 'export function|class|const'")
        parts.append(f"// ---- {name}\n{strip_lines(text)}")
    bundle = "\n".join(parts)
    if re.search(r"</?script|<!--|https?://", bundle, re.I):
        raise RuntimeError("the dashboard's code must not contain a script tag, '<!--' or a URL")
    return bundle


@lru_cache(maxsize=1)
def _dashboard_css() -> str:
    """The dashboard's stylesheet, read once (the W&B mirror makes a page per logged step)."""
    css = strip_lines(_web_text("dashboard.css"))
    if "</style" in css.lower():
        raise RuntimeError("dashboard.css must not contain '</style'")
    return css


def strip_lines(text: str) -> str:
    """``text`` (JavaScript or CSS) without its blank lines, its comment-only lines and
    the indentation of the others: the same code in fewer bytes.

    Lines are taken whole: a line that starts a ``/* ... */`` comment is dropped with the
    lines up to the one that ends it (whatever follows the ``*/`` there is kept), and a line
    starting with ``//`` is dropped; code is never cut within a line. Inside a template
    literal that spans lines (a backtick left open) and after a line ending with a
    backslash, lines are kept exactly as they are.
    """
    out: list[str] = []
    in_comment = in_template = verbatim = False
    for line in text.split("\n"):
        if not (in_template or verbatim):
            line = line.lstrip()
            if in_comment:
                end = line.find("*/")
                if end < 0:
                    continue
                in_comment, line = False, line[end + 2:].lstrip()
            elif line.startswith("/*"):
                end = line.find("*/", 2)
                if end < 0:
                    in_comment = True
                    continue
                if not line[end + 2:].strip():
                    continue
            if not line or line.startswith("//"):
                continue
        out.append(line)
        if (line.count("`") - line.count("\\`")) % 2:
            in_template = not in_template
        verbatim = line.endswith("\\") and not in_template
    return "\n".join(out)


def json_for_html(data: Any) -> str:
    """JSON safe to place inside ``<script type="application/json">``: ``<``, ``>``, ``&``
    are escaped, and so is ``/`` (so no ``</script`` and no URL appears in the page)."""
    return _html_safe(_json_text(data))


def _json_text(data: Any) -> str:
    """Strict JSON text that can be written as UTF-8 (a lone surrogate becomes U+FFFD, as
    every reader reads it); NaN and Infinity are refused: a page holds valid steps only."""
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise ValueError("the data holds NaN or Infinity, which JSON cannot represent") from None
    except TypeError as exc:
        raise ValueError(f"the data cannot be written as JSON ({exc})") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return client_json(data).decode("utf-8")
    return text


def _html_safe(text: str) -> str:
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("/", "\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def export_html(entries: list[dict], *, steps: list[dict] | None = None, title: str | None = None,
                extra: dict | None = None) -> str:
    """One self-contained HTML page showing ``entries`` (a step selector among them).

    Args:
        entries: logged entries (schema dicts); the page opens at the highest step.
        steps: the loss/perplexity history for the chart, ``[{"step", "loss", "perplexity"}]``
            (default: taken from ``entries``). Only the entries themselves can be opened.
        title: shown in the page's title and header.
        extra: any JSON the page carries; the dashboard answers other routes from it.

    Returns:
        The HTML text (:func:`page_data` reads its data back). The entries are in it as step views with their candidates in columns
        (:func:`seqviz_trackers.format.view.step_view` with ``with_candidates``), in the page's
        form (:func:`page_form`), compressed with the rest; its size grows with them (plus a few
        bytes per history step).

    Raises:
        ValueError: an entry is not an object with an integer ``step``, or the data is not JSON.
    """
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"entries must be a list of entry dicts, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        step = entry.get("step") if isinstance(entry, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise ValueError(f"entries[{i}] must be an entry dict with an integer 'step'")
    history = None
    if steps is not None:
        history = [{"step": int(s["step"]), "loss": s.get("loss"), "perplexity": s.get("perplexity")} for s in steps]
    data: dict[str, Any] = {"title": title or "seqviz export"}
    if history is not None:
        data["steps"] = history
    form = page_form(entries, extra)
    if extra is not None:
        data["extra"] = form["extra"]
    entries_text = _json_text(form["entries"])
    data_text = '{"entries":' + entries_text + "," + _json_text(data)[1:]
    packed = page_text(gzip.compress(data_text.encode("utf-8"), 6, mtime=0))
    opens = extra.get("open") if isinstance(extra, dict) else None  # needed before the data is unpacked
    wrapper = ('{"title":' + _html_safe(_json_text(data["title"]))
               + (',"open":' + _html_safe(_json_text(opens)) if isinstance(opens, str) else "")
               + ',"encoding":"gzip+base85","data":"' + packed + '"}')
    page_title = html.escape(title or "seqviz export").replace("/", "&#47;")
    css = _dashboard_css()
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{page_title}</title>\n<style>\n{css}\n</style>\n</head>\n<body class=\"seqviz-page\">\n"
        f"<script type=\"application/json\" id=\"seqviz-data\">{wrapper}</script>\n"
        f"<script type=\"module\">\n{dashboard_bundle()}\nrender({{ source: \"inline\" }});\n</script>\n"
        "</body>\n</html>\n"
    )


_PAGE_DATA = re.compile(r'<script type="application/json" id="seqviz-data">(.*?)</script>', re.S)


def page_data(page: str) -> dict[str, Any]:
    """The data a page of :func:`export_html` carries: ``{"entries", "title", "steps"?, "extra"?}``.

    Raises:
        ValueError: ``page`` holds no such data.
    """
    found = _PAGE_DATA.search(page)
    if found is None:
        raise ValueError("the page holds no seqviz data (no <script id=\"seqviz-data\">)")
    wrapper = json.loads(found.group(1))
    encoding = wrapper.get("encoding")
    if encoding not in ("gzip+base85", "gzip+base64"):
        return wrapper
    raw = page_bytes(wrapper["data"]) if encoding == "gzip+base85" else base64.b64decode(wrapper["data"])
    return _each_part(json.loads(gzip.decompress(raw)), _read_entry, _read_track)


_TO_PAGE = bytes.maketrans(b"<>&", b",.[")
_FROM_PAGE = bytes.maketrans(b",.[", b"<>&")


def page_text(raw: bytes) -> str:
    """``raw`` in a page's base85 (see the module docstring): no ``<``, ``>``, ``&``, quote,
    backslash, slash or colon, so it stays one JSON string and never reads as markup or a URL."""
    return base64.b85encode(raw).translate(_TO_PAGE).decode("ascii")


def page_bytes(text: str) -> bytes:
    """The bytes of :func:`page_text`."""
    return base64.b85decode(text.encode("ascii").translate(_FROM_PAGE))


def page_form(entries: list[dict], extra: dict | None = None) -> dict[str, Any]:
    """``{"entries", "extra"}`` as a page holds them (see the module docstring): each entry, and
    each training batch's captured rows (``extra["train_batches"]``), as a step view with its
    candidates in columns, packed; the series of ``extra["dynamics"]`` (and of
    ``extra["vs"]["dynamics"]``) packed. ``extra`` itself is left as it is. Columns that do not
    fit (a probability outside [0, 1] or out of order, an id that is not an int in [0, 2**32 - 2])
    stay lists; :func:`page_data` reads either."""
    return _each_part({"entries": list(entries), "extra": extra}, _page_entry, _page_track)


def pack_ints(values: Any) -> str | None:
    """Integers >= 0 (None among them) as a packed column (see the module docstring); None
    when some value is not such an integer below 2**32 - 1."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        values = values.ravel()
    elif not all(v is None or type(v) is int for v in values):
        return None
    arr = np.array(values, dtype=np.float64)
    null = np.isnan(arr)
    known = arr[~null]
    if known.size and not (np.all(known >= 0) and np.all(known < 2 ** 32 - 1) and np.all(known == np.floor(known))):
        return None
    stored = np.where(null, 0, arr + 1).astype(np.uint64)
    top = int(stored.max()) if stored.size else 0
    size = 1 if top < 2 ** 8 else 2 if top < 2 ** 16 else 4
    planes = stored.astype(f"<u{size}").view(np.uint8).reshape(-1, size).T
    return f"u{8 * size}:" + base64.b64encode(planes.tobytes()).decode("ascii")


def unpack_ints(text: str) -> list[int | None]:
    """The values of a packed column (:func:`pack_ints`)."""
    kind, _, body = text.partition(":")
    size = {"u8": 1, "u16": 2, "u32": 4}[kind]
    raw = np.frombuffer(base64.b64decode(body), dtype=np.uint8).reshape(size, -1).astype(np.int64)
    stored = sum(raw[k] << (8 * k) for k in range(size))
    return [None if v == 0 else v - 1 for v in np.asarray(stored).tolist()]


def pack_probs(probs: Any, counts: Any) -> str | None:
    """The candidates' probabilities as a packed column of codes (see :data:`P_SCALE`): each
    prediction's first code, then how much each next code is below the one before
    (``counts``: candidates per prediction, most likely first). None when some p is outside
    [0, 1], or a prediction's are not in decreasing order."""
    p, n = np.asarray(probs, dtype=np.float64), np.asarray(counts, dtype=np.int64)
    if p.ndim != 1 or p.size != int(n.sum()) or (p.size and not (np.all(p >= 0) and np.all(p <= 1))):
        return None
    half = P_SCALE // 2
    k = np.round(p * half)
    q = np.where(k / half == p, 2 * k, 2 * np.floor(p * half) + 1).astype(np.int64)
    codes = np.empty_like(q)
    codes[1:] = q[:-1] - q[1:]
    first = (np.cumsum(n) - n)[n > 0]
    codes[first] = q[first]
    return None if np.any(codes < 0) else pack_ints(codes)


def unpack_probs(text: str, counts: list[int], scale: int = P_SCALE) -> list[float]:
    """The probabilities of :func:`pack_probs`, as the dashboard reads them (code / ``scale``)."""
    codes, out, k = unpack_ints(text), [], 0
    for n in counts:
        q = 0
        for j in range(n):
            q = codes[k] if j == 0 else q - codes[k]
            out.append(q / scale)
            k += 1
    return out


_TRACK_SERIES = ("p1000", "target_rank", "plt1000", "rank_gt")


def _page_entry(entry: Any) -> Any:
    """A logged entry as a page holds it: its step view, candidates packed."""
    if not isinstance(entry, dict):
        return entry
    view = step_view(entry, with_candidates=True)
    for seq in view.get("sequences") if isinstance(view.get("sequences"), list) else ():
        cand = seq.get("candidates") if isinstance(seq, dict) else None
        if cand is not None:
            ids, probs = pack_ints(cand["id"]), pack_probs(cand["p"], cand["n"])
            seq["candidates"] = {**cand, **({"id": ids} if ids else {}),
                                 **({"p": probs, "p_scale": P_SCALE} if probs else {})}
    return view


def _read_entry(entry: Any) -> Any:
    """An entry of a page with its candidate columns unpacked."""
    seqs = entry.get("sequences") if isinstance(entry, dict) else None
    if not isinstance(seqs, list):
        return entry
    out = []
    for seq in seqs:
        cand = seq.get("candidates") if isinstance(seq, dict) else None
        if isinstance(cand, dict):
            cand = {k: v for k, v in cand.items() if k != "p_scale"}
            if isinstance(cand.get("id"), str):
                cand["id"] = unpack_ints(cand["id"])
            if isinstance(cand.get("p"), str):
                cand["p"] = unpack_probs(cand["p"], cand["n"], seq["candidates"].get("p_scale", P_SCALE))
            seq = {**seq, "candidates": cand}
        out.append(seq)
    return {**entry, "sequences": out}


def _page_track(track: dict) -> dict:
    """A track of ``dynamics_extra`` with its series (per position, per step) packed, position by position."""
    width = len(track.get("steps") or ())
    out = dict(track)
    for key in _TRACK_SERIES:
        rows = track.get(key)
        if width and isinstance(rows, list) and all(isinstance(r, list) and len(r) == width for r in rows):
            packed = pack_ints([v for r in rows for v in r])
            if packed is not None:
                out[key] = packed
    return out


def _read_track(track: dict) -> dict:
    width = len(track.get("steps") or ())
    out = dict(track)
    for key in _TRACK_SERIES:
        if isinstance(track.get(key), str):
            flat = unpack_ints(track[key])
            out[key] = [flat[i:i + width] for i in range(0, len(flat), width)]
    return out


def _each_part(data: dict[str, Any], entry_fn: Callable[[Any], Any], track_fn: Callable[[dict], dict]) -> dict[str, Any]:
    """``data`` (a page's: entries, extra) with ``entry_fn`` applied to each entry and each training
    batch's captured rows, ``track_fn`` to each track of the dynamics; new dicts, ``data`` is left as it is."""
    def dynamics(d: Any) -> Any:
        tracks = d.get("tracks") if isinstance(d, dict) else None
        if not isinstance(tracks, dict):
            return d
        return {**d, "tracks": {k: track_fn(t) if isinstance(t, dict) else t for k, t in tracks.items()}}

    out = dict(data)
    if isinstance(out.get("entries"), list):
        out["entries"] = [entry_fn(e) for e in out["entries"]]
    extra = out.get("extra")
    if isinstance(extra, dict):
        extra = dict(extra)
        if "dynamics" in extra:
            extra["dynamics"] = dynamics(extra["dynamics"])
        if isinstance(extra.get("vs"), dict) and "dynamics" in extra["vs"]:
            extra["vs"] = {**extra["vs"], "dynamics": dynamics(extra["vs"]["dynamics"])}
        batches = extra.get("train_batches")
        if isinstance(batches, dict) and isinstance(batches.get("batch"), dict):
            extra["train_batches"] = {**batches, "batch": {
                k: {**b, "capture": entry_fn(b["capture"])} if isinstance(b, dict) and isinstance(b.get("capture"), dict) else b
                for k, b in batches["batch"].items()}}
        out["extra"] = extra
    return out


def dynamics_extra(dyn: Any, entries: list[dict], diffs: dict[int, dict] | None = None, *,
                   points: int = 24) -> dict[str, Any]:
    """The training dynamics a page showing ``entries`` needs, for ``export_html(extra=...)``.

    The page's inline adapter answers the ``sequences``, ``series`` and ``diff`` routes
    from it (see ``web/sources.js``), so the selected token's sparkline, the change
    colours and the list of changes work with no server. Its size does not grow with the
    length of the run: per position of each sequence in ``entries``, at most ``points``
    steps of p(target) (in thousandths) and rank, the learned-at steps, the number of
    forgetting events and the last ``points`` events of each sequence; plus the diffs given
    (their lists, and Δ log p per token).

    Args:
        dyn: a :class:`seqviz_trackers.dynamics.Dynamics` holding (at least) the steps of
            ``entries``; its series are thinned to ``points`` evenly spaced steps.
        entries: the entries the page shows.
        diffs: ``{step B: diff}`` as :func:`seqviz_trackers.dynamics.compare` returns them
            with ``per_token=True``, usually from the step logged before B.
        points: steps kept per series (at least 2).

    Returns:
        ``{"dynamics": {"points", "at_step": {step: [seq]}, "tracks": {seq: {...}}, "diffs": {b: diff}}}``;
        a track with targets outside the logged candidates also has ``plt1000`` / ``rank_gt``
        (per position, per step: the bound p < p_lt in thousandths rounded up, rank > rank_gt).
    """
    from ..dynamics.tracks import evenly_spaced

    points = max(2, int(points))
    index = {step: i for i, step in enumerate(dyn.steps.view().tolist())}
    at_step: dict[str, list[int]] = {}
    wanted: set[int] = set()
    for entry in entries:
        i = index.get(entry.get("step"))
        if i is not None:
            at_step[str(entry["step"])] = list(dyn.step_seqs[i])
            wanted.update(dyn.step_seqs[i])
    events = dyn.events()
    tracks: dict[str, Any] = {}
    for number in sorted(wanted):
        t = dyn.track(number)
        n, width = t.n, t.width
        rows = np.array(evenly_spaced(n, points), dtype=int)
        prob = t.prob[rows, :width].T
        permille = np.where(np.isnan(prob), -1, np.round(np.nan_to_num(prob) * 1000)).astype(int)
        mine = events[events[:, 0] == number][-points:]
        tracks[str(number)] = {
            "seq": number, "name": t.name, "label": t.label(), "num_steps": n,
            "steps": t.steps[:n][rows].tolist(),
            "p1000": [[v if v >= 0 else None for v in vs] for vs in permille.tolist()],
            "target_rank": [[r if r >= 1 else None for r in rs] for rs in t.rank[rows, :width].T.tolist()],
            "learned_at": [s if s >= 0 else None for s in t.since1.tolist()],
            "learned_at_top5": [s if s >= 0 else None for s in t.since5.tolist()],
            "times_forgotten": t.times_forgotten.tolist(),
            "forgotten": mine[:, [1, 2, 3, 4]].tolist(),   # (pos, step, since, last_top1), the latest
        }
        if t.p_lt is not None and t.rank_gt is not None:  # targets outside the logged candidates: their bound
            p_lt = t.p_lt[rows, :width].T
            up = np.where(np.isnan(p_lt), -1, np.ceil(np.nan_to_num(p_lt) * 1000)).astype(int)  # up: p < p_lt stays true
            tracks[str(number)].update({
                "plt1000": [[v if v >= 0 else None for v in vs] for vs in up.tolist()],
                "rank_gt": [[r if r >= 1 else None for r in rs] for rs in t.rank_gt[rows, :width].T.tolist()],
            })
    slim = {}
    for b, d in (diffs or {}).items():
        slim[str(b)] = {**d, "per_token": [{k: part[k] for k in ("seq", "index_b", "positions", "delta_logp")}
                                           for part in d.get("per_token") or ()]}
    return {"dynamics": {"points": points, "at_step": at_step, "tracks": tracks, "diffs": slim}}


def runs_compare_extra(reader_a: Any, reader_b: Any, entries: list[dict], names: tuple[str, str], *,
                       points: int = 64, limit: int = 50) -> dict[str, Any]:
    """What a page of run A's ``entries`` needs to compare them with run B, for ``export_html(extra=...)``.

    The inline adapter answers ``compare_runs`` at each of those steps (with ``per_token``,
    ``limit`` rows per list) and ``series`` of run B (its sparklines drawn over A's), and
    lists B among the runs to compare with. Steps where B has no step at or before are left
    out (the page says so there).

    Returns:
        ``{"vs": {"run", "num_steps", "last_step", "answers": {step: compare_runs answer},
        "dynamics": the form of :func:`dynamics_extra` for B's aligned steps}}``.
    """
    from ..dynamics import compare_runs_json, dynamics_for

    answers = {}
    for entry in entries:
        try:
            answer = compare_runs_json(reader_a, reader_b, entry["step"], names=names, limit=limit, per_token=True)
        except KeyError:
            continue
        answers[str(entry["step"])] = {"run": names[0], "vs": names[1], **answer}
    aligned = [{"step": a["b"]["step"]} for a in answers.values()]
    steps = reader_b.steps
    return {"vs": {"run": names[1], "num_steps": len(steps), "last_step": steps[-1].step if steps else None,
                   "answers": answers, "dynamics": dynamics_extra(dynamics_for(reader_b), aligned, points=points)["dynamics"]}}


def batches_extra(reader: Any, *, limit: int = 24, steps: list[int] | None = None,
                  points: int | None = None) -> dict[str, Any] | None:
    """The training batches of the run ``reader`` reads, for ``export_html(extra=...)``;
    None when the run has none (no ``<run>.jsonl.batches`` beside it, or an empty one).

    The inline adapter answers ``batches`` (every step's loss and the spikes: the chart's
    line and marks) and ``batch`` at the steps carried: every spike, then the other steps
    with a per-token capture, at most ``limit`` steps in all (the latest captured ones are
    kept when there are more), so the page's size does not grow with the length of the run.
    ``steps``: carry the batches of these recorded steps instead. ``points``: at most this
    many steps' losses for the chart's line (evenly spaced; the spike marks are all kept).

    Returns:
        ``{"train_batches": {"summary": {"steps", "spikes", "available": [step]}, "batch": {step: batch answer}}}``.
    """
    from ..dynamics.spikes import batch_json, summary_json
    from ..storage.batches import batches_reader

    breader = batches_reader(reader)
    summary = summary_json(breader)
    if not summary["steps"]:
        return None
    if steps is not None:
        recorded = {s["step"] for s in summary["steps"]}
        chosen = sorted(set(steps) & recorded)
    else:
        spikes = summary["spikes"][-limit:]
        captured = [s["step"] for s in summary["steps"] if s["captured"] and not s["spike"]]
        room = limit - len(spikes)
        chosen = sorted(set(spikes) | set(captured[len(captured) - room:] if room > 0 else []))
    if points is not None:
        from ..dynamics.tracks import evenly_spaced

        summary["steps"] = [summary["steps"][i] for i in evenly_spaced(len(summary["steps"]), max(2, points))]
    batches = {str(step): batch_json(breader, step) for step in chosen}
    return {"train_batches": {"summary": {**summary, "available": chosen}, "batch": batches}}
