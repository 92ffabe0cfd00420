"""The package as a user installs it: ``python -m build`` (an sdist, then the wheel from it),
the wheel installed into a fresh virtual environment outside the source tree, and used
from there: ``seqviz demo``, a real ``tensorboard`` showing the seqviz tab, ``seqviz export``.

This catches what an editable install hides: package data and entry points missing from
the wheel, files missing from the sdist. The environment is made once for the module.
torch is pinned (``SEQVIZ_TORCH_SPEC``, default the CPU build ``torch==2.13.0``, as in
``scripts/setup.sh``) so the install never pulls a GPU build.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

if importlib.util.find_spec("build") is None:
    pytest.skip("needs the 'build' package (pip install build; in the dev extras)", allow_module_level=True)

from tb_helpers import TensorBoardProcess, wait_for  # noqa: E402

from seqviz_trackers import __version__  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TORCH_SPEC = os.environ.get("SEQVIZ_TORCH_SPEC", "torch==2.13.0")
EXTRAS = "hf,tensorboard,analysis"


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(folder, venv bin folder, environment, timings): the built wheel installed in a fresh venv."""
    base = tmp_path_factory.mktemp("wheel-install")
    assert not base.resolve().is_relative_to(ROOT), "the venv must live outside the source tree"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith(("WANDB_", "PYTEST_"))}
    env["PYTHONWARNINGS"] = "ignore:Editable installation:UserWarning"
    timings = {}
    started = time.perf_counter()
    run([sys.executable, "-m", "build", "--outdir", base / "dist", ROOT], base, env, 300)
    timings["build"] = time.perf_counter() - started
    (wheel,) = (base / "dist").glob("seqviz_trackers-*.whl")
    (sdist,) = (base / "dist").glob("seqviz_trackers-*.tar.gz")

    started = time.perf_counter()
    run([sys.executable, "-m", "venv", base / "venv"], base, env, 120)
    bin_dir = base / "venv" / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    run([bin_dir / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", TORCH_SPEC,
         f"{wheel}[{EXTRAS}]"], base, env, 600)
    timings["install"] = time.perf_counter() - started
    return {"base": base, "bin": bin_dir, "env": env, "wheel": wheel, "sdist": sdist, "timings": timings}


def test_wheel_holds_the_package_data_and_entry_points(installed):
    with zipfile.ZipFile(installed["wheel"]) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for needed in ("seqviz_trackers/format/training_data.schema.json", "seqviz_trackers/web/index.js",
                   "seqviz_trackers/web/dashboard.css", "seqviz_trackers/data/hamlet.txt",
                   "seqviz_trackers/storage/arrow.py", "tb_plugin/plugin.py", "wandb_panel/__init__.py"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "seqviz = seqviz_trackers.cli:main" in entry_points
    assert "seqviz = tb_plugin.plugin:SeqVizPluginLoader" in entry_points
    assert installed["wheel"].name.startswith(f"seqviz_trackers-{__version__}-")


def test_demo_tensorboard_and_export_from_the_installed_wheel(installed, tmp_path):
    base, bin_dir, env = installed["base"], installed["bin"], installed["env"]
    where = run([bin_dir / "python", "-c", "import seqviz_trackers, tb_plugin; print(seqviz_trackers.__file__); "
                 "print(tb_plugin.__file__)"], base, env, 60).stdout.split()
    assert all(Path(p).resolve().is_relative_to((base / "venv").resolve()) for p in where), where
    assert run([bin_dir / "seqviz", "--version"], base, env, 60).stdout.strip() == f"seqviz {__version__}"

    started = time.perf_counter()
    demo = run([bin_dir / "seqviz", "demo", "--out", base / "demo", "--steps", "30", "--no-wandb"], base, env, 400)
    seconds = time.perf_counter() - started
    assert "Trained 30 steps" in demo.stdout and "tensorboard" in demo.stdout
    jsonl = base / "demo" / "seqviz.jsonl"
    first = json.loads(jsonl.read_text(encoding="utf-8").splitlines()[0])
    assert first["metadata"]["seqviz_version"] == __version__

    tb = TensorBoardProcess(base / "demo", load_fast=False, log_path=tmp_path / "tb.log",
                            executable=bin_dir / "tensorboard", env=env)
    try:
        listing = wait_for(lambda: tb.get("/data/plugins_listing")[1].get("seqviz", {}).get("enabled")
                           and tb.get("/data/plugins_listing")[1]["seqviz"], timeout=60)
        assert listing and listing["enabled"], tb.get("/data/plugins_listing")
        module = listing["loading_mechanism"]["module_path"]
        with urllib.request.urlopen(tb.url + module, timeout=10) as r:
            assert r.status == 200 and "javascript" in r.headers["Content-Type"]
            assert "export function render" in r.read().decode()
    finally:
        tb.stop()

    page, table = base / "page.html", base / "tokens.parquet"
    run([bin_dir / "seqviz", "export", jsonl, "-o", page], base, env, 120)
    assert 'id="seqviz-data"' in page.read_text(encoding="utf-8")
    run([bin_dir / "seqviz", "export", jsonl, "--format", "parquet", "-o", table], base, env, 120)
    pq = pytest.importorskip("pyarrow.parquet")
    assert pq.read_table(table).num_rows > 0
    t = installed["timings"]
    print(f"wheel install test: build {t['build']:.0f} s, venv + install {t['install']:.0f} s, demo {seconds:.0f} s")
