"""``export_html`` and ``seqviz export``: one self-contained page (the browser side is
in test_dashboard.py::test_export_opens_from_disk)."""

from __future__ import annotations

import base64
import gzip
import re
import subprocess
import sys

import pytest

from factories import HOSTILE, make_entry, write_run
from seqviz_trackers.serve.export import MODULES, _dashboard_css, dashboard_bundle, export_html, json_for_html, page_data
from seqviz_trackers.format.view import step_view



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
    assert data["entries"][0] == step_view(entry, with_candidates=True)
    assert data["steps"] == [{"step": 1, "loss": 2.0, "perplexity": 7.4}]
    assert data["extra"] == {"series": {"x": [1]}}


def test_size_grows_with_the_entry_not_the_run():
    entry = make_entry(3)
    one = len(export_html([entry]))
    two = len(export_html([entry, make_entry(4)]))
    history = [{"step": s, "loss": 1.0, "perplexity": 2.7} for s in range(1000)]
    with_history = len(export_html([entry], steps=history))
    # the entry goes in as its step view with its candidates, compressed: a fraction of its line
    entry_bytes = len(base64.b64encode(gzip.compress(json_for_html(step_view(make_entry(4), with_candidates=True)).encode())))
    assert entry_bytes < len(json_for_html(make_entry(4))) / 2
    assert 0.5 * entry_bytes < two - one < 1.2 * entry_bytes
    assert (with_history - one) / 1000 < 60  # a few bytes per history point
    # besides the entry, the page is the dashboard's own files, once, and a little markup
    assert one - entry_bytes < len(dashboard_bundle()) + len(_dashboard_css()) + 5_000


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
