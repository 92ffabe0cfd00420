"""``export_html`` and ``seqviz export``: one self-contained page (the browser side is
in test_dashboard.py::test_export_opens_from_disk)."""

from __future__ import annotations

import base64
import gzip
import math
import re
import subprocess
import sys

import pytest

from factories import HOSTILE, make_entry, write_run
from seqviz_trackers.serve.export import (MODULES, P_SCALE, _dashboard_css, dashboard_bundle, export_html, json_for_html,
                                          pack_ints, pack_probs, page_bytes, page_data, page_form, page_text,
                                          strip_lines, unpack_ints, unpack_probs)
from seqviz_trackers.format.view import step_view


def assert_as_page_holds(got: dict, view: dict) -> None:
    """``got`` (a page's entry, read back) is the step view ``view`` with its candidates'
    probabilities to within 1/P_SCALE (the multiples of 2/P_SCALE kept exactly), all else equal."""
    def without_p(v):
        return {**v, "sequences": [{**s, "candidates": {k: c for k, c in s["candidates"].items() if k != "p"}}
                                   for s in v["sequences"]]}
    assert without_p(got) == without_p(view)
    for a, b in zip(got["sequences"], view["sequences"]):
        for p_page, p in zip(a["candidates"]["p"], b["candidates"]["p"], strict=True):
            assert abs(p - p_page) < 1 / P_SCALE
            if round(p * P_SCALE / 2) * 2 / P_SCALE == p:
                assert p_page == p


def test_page_is_self_contained_and_escaped():
    entry = make_entry(3)
    entry["sequences"][0]["tokens"][1] = HOSTILE
    entry["sequences"][0]["name"] = "see https://example.com & <b> \u2028"
    entry["sequences"][0]["predictions"][0]["top_k"][0][1] = "</script><b>"
    page = export_html([entry], steps=[{"step": 1, "loss": 2.0, "perplexity": 7.4}], title="a </title><script>",
                       extra={"series": {"x": [1]}})
    assert "\u2028" not in page
    assert "http://" not in page and "https://" not in page
    assert HOSTILE not in page and "<b>" not in page
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<title>a &lt;&#47;title&gt;&lt;script&gt;</title>" in page
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|\bhref=", page.split('id="seqviz-data">')[0])
    data = page_data(page)
    # the entry as its step view with its candidates (the escapes are plain JSON escapes)
    assert_as_page_holds(data["entries"][0], step_view(entry, with_candidates=True))
    assert data["steps"] == [{"step": 1, "loss": 2.0, "perplexity": 7.4}]
    assert data["extra"] == {"series": {"x": [1]}}


def test_size_grows_with_the_entry_not_the_run():
    entry = make_entry(3)
    one = len(export_html([entry]))
    two = len(export_html([entry, make_entry(4)]))
    history = [{"step": s, "loss": 1.0, "perplexity": 2.7} for s in range(1000)]
    with_history = len(export_html([entry], steps=history))
    # the entry goes in as its step view with its candidates, packed and compressed: a fraction of its line
    entry_bytes = len(base64.b64encode(gzip.compress(json_for_html(page_form([make_entry(4)])["entries"]).encode())))
    assert entry_bytes < len(json_for_html(make_entry(4))) / 2
    assert 0.5 * entry_bytes < two - one < 1.2 * entry_bytes
    assert (with_history - one) / 1000 < 60  # a few bytes per history point
    # besides the entry, the page is the dashboard's own files, once, and a little markup
    assert one - entry_bytes < len(dashboard_bundle()) + len(_dashboard_css()) + 5_000


def test_columns_are_packed_and_read_back():
    for values in ([], [0], [3, None, 0, 254], [255, 1], [65534, 7, None], [2 ** 32 - 2, 0]):
        packed = pack_ints(values)
        assert unpack_ints(packed) == values
        assert packed.split(":")[0] == ("u8" if max((v for v in values if v is not None), default=0) < 255
                                        else "u16" if max(v for v in values if v is not None) < 65535 else "u32")
    for odd in ([-1], [2 ** 32 - 1], [0.5], ["3"], [[1]], [float("inf")]):
        assert pack_ints(odd) is None  # kept as a list
    counts = [3, 0, 2, 1]
    probs = [0.9, 0.05, 0.0000001, 0.5, 0.5, 1.0]
    back = unpack_probs(pack_probs(probs, counts), counts)
    assert back == [0.9, 0.05, 1 / P_SCALE, 0.5, 0.5, 1.0]  # on the 2 / P_SCALE grid: as they are
    assert unpack_probs(pack_probs([0.0, 0.0], [2]), [2]) == [0.0, 0.0]
    def middle(p):  # of the 2 / P_SCALE wide interval p is in
        return (2 * math.floor(p * P_SCALE / 2) + 1) / P_SCALE

    assert unpack_probs(pack_probs([0.16567, 0.031512, 0.0315], [3]), [3]) == [middle(0.16567), middle(0.031512), 0.0315]
    assert pack_probs([0.1, 0.2], [2]) is None and pack_probs([1.5], [1]) is None and pack_probs([-0.1], [1]) is None


def test_page_text_is_base85_without_markup_characters():
    import os

    for n in range(0, 12):
        raw = os.urandom(n) + bytes(range(256))
        text = page_text(raw)
        assert page_bytes(text) == raw and len(text) == -(-len(raw) * 5 // 4)
        assert not set(text) & set('<>&"\\/:\n ')


def test_a_page_keeps_the_shown_digits_of_each_probability():
    """The dashboard prints probabilities as fmtPct does (web/util.js): the page's values print alike."""
    import numpy as np

    from page_helpers import fmt_pct

    rng = np.random.default_rng(0)
    probs = np.concatenate([rng.random(20000) ** 4, [0, 1e-9, 0.001, 0.0995, 0.0996, 0.995, 0.9999, 1]])
    probs = sorted(probs.tolist() + [float(f"{p:.3g}") for p in probs] + [float(f"{p:.5g}") for p in probs], reverse=True)
    back = unpack_probs(pack_probs(probs, [len(probs)]), [len(probs)])
    assert [fmt_pct(p) for p in back] == [fmt_pct(p) for p in probs]


def test_strip_lines_drops_comments_and_indentation_only():
    js = "\n".join([
        "// a comment line", "/** a doc", " *  comment */", "function f(a) {", "    /* one line */",
        "    const s = \"// not a comment\"; // trailing kept", "    const t = `a", "    // inside a template",
        "  b`;", "    /* x */ return a / 2; /* y", "    still a comment", "  */ f(1);", "    const u = 'a\\", "    b';",
        "}", ""])
    assert strip_lines(js).split("\n") == [
        "function f(a) {", "const s = \"// not a comment\"; // trailing kept", "const t = `a", "    // inside a template",
        "  b`;", "/* x */ return a / 2; /* y", "still a comment", "*/ f(1);", "const u = 'a\\", "    b';", "}"]


def test_bundle_inlines_every_module_once():
    bundle = dashboard_bundle()
    assert not re.search(r"^\s*(import|export)\b", bundle, re.M)
    for name in MODULES:
        assert f"// ---- {name}" in bundle
    assert "function render(" in bundle


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match=r"entries\[1\]"):
        export_html([make_entry(1), {"nope": 1}])
    with pytest.raises(ValueError, match="NaN"):
        export_html([{**make_entry(1), "loss": float("nan")}])


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "seqviz_trackers.cli", "export", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_cli_export_steps(tmp_path):
    src = write_run(tmp_path / "run.jsonl", [10, 20, 30])
    out = tmp_path / "r.html"
    proc = run_cli(src, "--step", 20, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    data = page_data(out.read_text())
    assert [e["step"] for e in data["entries"]] == [20]
    assert [s["step"] for s in data["steps"]] == [10, 20, 30]
    assert run_cli(src).returncode == 0  # default: latest step, next to the file
    data = page_data((tmp_path / "run.html").read_text())
    assert [e["step"] for e in data["entries"]] == [30]
    proc = run_cli(src, "--all", "-o", out)
    assert [e["step"] for e in page_data(out.read_text())["entries"]] == [10, 20, 30]


def test_cli_export_errors(tmp_path):
    src = write_run(tmp_path / "run.jsonl", [10, 20])
    proc = run_cli(src, "--step", 15)
    assert proc.returncode == 2  # used wrongly: an unknown step
    assert proc.stderr.strip() == f"seqviz export: {src} has no step 15 (nearest: 10, 20)"
    proc = run_cli(tmp_path / "missing.jsonl")
    assert proc.returncode == 2 and proc.stderr.strip().endswith("missing.jsonl: no such file")
    proc = run_cli(src, "-o", tmp_path / "no" / "dir" / "x.html")
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr


def test_dynamics_extra_holds_bounded_series_and_the_diff():
    from seqviz_trackers.dynamics import Dynamics, compare
    from seqviz_trackers.serve.export import dynamics_extra
    from test_dynamics import STEPS, synthetic_entry

    dyn, entries = Dynamics(), [synthetic_entry(s) for s in STEPS]
    for e in entries:
        dyn.add_entry(e)
    diff = compare(entries[-2], entries[-1], per_token=True, number=dyn.number_of)
    dynamics = dynamics_extra(dyn, [entries[-1]], {50: diff}, points=4)["dynamics"]
    assert dynamics["at_step"] == {"50": [0, 1]}
    probe = dynamics["tracks"]["0"]
    assert probe["steps"] == [0, 20, 30, 50] and probe["num_steps"] == 6  # thinned to 4, first and last kept
    assert probe["learned_at"] == [20, None, None, 0, None]
    assert probe["times_forgotten"] == [0, 1, 0, 0, 0] and probe["forgotten"] == [[1, 30, 10, 20]]
    assert probe["p1000"][0][0] < 20 and probe["p1000"][0][-1] > 600  # p(target) in thousandths
    assert probe["target_rank"][2] == [16, 16, 2, 2]
    assert set(dynamics["diffs"]["50"]["per_token"][0]) == {"seq", "index_b", "positions", "delta_logp"}
    # the size does not grow with the run: the same after 50 more steps
    size = len(json_for_html(dynamics))
    for s in range(60, 560, 10):
        dyn.add_entry(synthetic_entry(s))
    later = dynamics_extra(dyn, [synthetic_entry(550)], {550: diff}, points=4)["dynamics"]
    assert len(later["tracks"]["0"]["steps"]) == 4
    assert abs(len(json_for_html(later)) - size) < 40
