"""Against a real ``tensorboard --logdir`` process, under both loaders."""

from __future__ import annotations

import pytest

from tb_helpers import TensorBoardProcess, mirror_run, wait_for

from factories import HOSTILE

pytestmark = pytest.mark.slow
P = "/data/plugin/seqviz"


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tblogs")
    mirror_run(root / "big", range(160))
    mirror_run(root / "sweep" / "lr_0.1", [0, 5], texts=[HOSTILE])
    (root / "empty_run").mkdir()
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(root / "scalars_only")) as w:
        w.add_scalar("loss", 1.0, 0)
    return root


@pytest.fixture(scope="module", params=[True, False], ids=["load_fast", "python_loader"])
def tensorboard(request, logdir, tmp_path_factory):
    proc = TensorBoardProcess(logdir, load_fast=request.param, log_path=tmp_path_factory.mktemp("tb") / "tb.log")
    request.addfinalizer(proc.stop)
    proc.load_fast = request.param
    return proc


def test_loader_in_use(tensorboard):
    def rust():
        return any("tensorboard_data_server" in c or c.split(" ")[0].endswith("/server") for c in tensorboard.children())

    if tensorboard.load_fast:
        assert wait_for(rust, timeout=20)
    else:
        assert not rust()


def test_tab_listed_and_all_steps_served(tensorboard):
    listing = wait_for(lambda: tensorboard.get("/data/plugins_listing")[1]["seqviz"]["enabled"] and
                       tensorboard.get("/data/plugins_listing")[1]["seqviz"])
    assert listing["enabled"] and listing["loading_mechanism"]["module_path"] == f"{P}/index.js"

    def listed():  # runs added by other tests of this module (live_*) may be listed too
        return [r for r in tensorboard.get(f"{P}/runs")[1]["runs"] if not r["run"].startswith("live_")]

    assert wait_for(lambda: len(listed()) == 2 and listed()) == [
        {"run": "big", "num_steps": 160, "last_step": 159},
        {"run": "sweep/lr_0.1", "num_steps": 2, "last_step": 5},
    ]
    status, steps = tensorboard.get(f"{P}/steps?run=big")
    assert status == 200 and [s["step"] for s in steps["steps"]] == list(range(160))
    status, e = tensorboard.get(f"{P}/step?run=sweep/lr_0.1&step=5")
    assert status == 200 and HOSTILE in "".join(e["sequences"][0]["tokens"])


def test_bad_requests_are_json_4xx(tensorboard):
    assert tensorboard.get(f"{P}/step?run=big&step=x") == (400, {"error": "step must be a non-negative integer, got 'x'"})
    assert tensorboard.get(f"{P}/steps?run=scalars_only") == (404, {"error": "unknown run 'scalars_only'"})
    assert tensorboard.get(f"{P}/step?run=big&step=999")[0] == 404
    assert tensorboard.get(f"{P}/../../../etc/passwd")[0] == 404


def test_steps_logged_while_running_appear(tensorboard, logdir):
    run = f"live_{'fast' if tensorboard.load_fast else 'slow'}"
    mirror_run(logdir / run, range(3))
    got = wait_for(lambda: tensorboard.get(f"{P}/steps?run={run}")[0] == 200, timeout=30)
    assert got, "a new run shows up once TensorBoard's reload has seen it"
    mirror_run(logdir / run, range(3, 6))  # no reload needed: the assets are re-read
    steps = tensorboard.get(f"{P}/steps?run={run}")[1]["steps"]
    assert [s["step"] for s in steps] == list(range(6))
