"""benchmarks/microcloud.py end to end, tiny: two seeds run, with the no-communication
reference row (its own one-process launch per seed), and the JSON and table have them."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import RANK_ENV, ROOT

pytestmark = [pytest.mark.mpi, pytest.mark.tf]


def test_microcloud_benchmark_writes_seed_statistics_table_and_plots(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "microcloud.py"),
        "--np=2",
        "--scenarios=wan-hetero",
        "--budget=1.5",
        "--max-steps=10",
        "--eval-every=0.5",
        "--test-samples=200",
        "--targets=0.2,0.3",
        "--seeds=2",
        "--policies=allreduce,gaia,ako,dlion",
        "--reference",
        f"--out={tmp_path}",
    ]
    env = {**os.environ, **RANK_ENV}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "microcloud.json").read_text())
    assert len(results["commit"]) == 40 and "--seeds=2" in results["command"]
    cell = results["cells"]["inprocess/wan-hetero"]
    # the policy order rotates from one seed to the next
    assert cell["order"]["0"] == "allreduce,gaia,ako,dlion"
    assert cell["order"]["1"] == "gaia,ako,dlion,allreduce"
    assert set(cell["policies"]) == {"allreduce", "gaia", "ako", "dlion", "reference"}
    for name, runs in cell["runs"].items():
        assert sorted(runs) == ["0", "1"], name
        for run in runs.values():
            assert 0.0 <= run["accuracy_at_budget"] <= 1.0
            assert run["curve"][0]["t"] == 0.0 and len(run["curve"]) >= 2
            assert run["steps"] >= 5, (name, run)
            if name not in ("allreduce", "reference"):  # collective bytes: not in link_stats
                assert run["mb_per_wan_link"] > 0, (name, run)  # it crossed the emulated WAN
    # the reference: one process with every core, the global batch, no exchange, no emulation
    assert cell["reference"]["global_batch"] == 2 * 64
    assert cell["reference"]["threads"] == os.cpu_count()
    for run in cell["runs"]["reference"].values():
        assert run["describe"].startswith("no communication: 1 process")
        assert "batch 128" in run["describe"] and run["mb_per_link"] is None
        agg = cell["policies"][name]
        accs = sorted(r["accuracy_at_budget"] for r in runs.values())
        assert agg["accuracy_at_budget"]["median"] == pytest.approx(sum(accs) / 2)
        assert (agg["accuracy_at_budget"]["min"], agg["accuracy_at_budget"]["max"]) == tuple(accs)
        assert set(agg["time_to"]) == {"0.20", "0.30"}
    table = (tmp_path / "microcloud.md").read_text()
    assert "| DLion |" in table and results["commit"][:12] in table
    assert "| no-communication reference (1 process) |" in table
    assert "multiple of the no-communication reference" in table
    # --resume at the same commit reuses every finished seed instead of training again
    proc = subprocess.run(
        [*cmd, "--resume"], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("reusing") == 4 and "seed 0" not in proc.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "inprocess-wan-hetero.png").stat().st_size > 1000


@pytest.mark.slow  # 3 supervised jobs and one plain: about 80 s idle, minutes on a loaded machine
def test_wan_leave_restarts_resumes_elastically_and_reports_both_runs(tmp_path):
    """The dynamic scenario, tiny (2 ranks: A:1,B:1): B leaves at 3 s of training and rejoins
    at 16 s; the supervisor restarts the job on 1 rank, then on 2, each resuming from a
    checkpoint; the report has the restarts, the recoveries and the run without the event."""
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "microcloud.py"),
        "--np=2",
        "--scenarios=wan-leave",
        "--policies=dlion",
        "--budget=20",
        "--leave-at=3",
        "--rejoin-at=16",
        "--checkpoint-every=5",
        "--eval-every=2",
        "--test-samples=200",
        "--targets=0.2,0.3",
        f"--out={tmp_path}",
    ]
    env = {**os.environ, **RANK_ENV}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "microcloud.json").read_text())
    assert len(results["commit"]) == 40 and "--scenarios=wan-leave" in results["command"]
    cell = results["cells"]["inprocess/wan-leave"]
    assert set(cell["runs"]) == {"dlion", "dlion (no event)"}
    assert cell["events"]["leaves"] == "B" and cell["events"]["without_event"] == "wan-hetero"
    el = cell["runs"]["dlion"]["0"]["elastic"]
    assert el["restarts"] == 2, el
    # every attempt after the first resumed from a checkpoint: at 1 rank (B gone), then at 2
    trains = [e for e in el["journal"] if e["ev"] == "train"]
    assert [t["ranks"] for t in trains] == [2, 1, 2], trains
    assert all(t["resumed_from"] is not None for t in trains[1:]), trains
    assert [t["saved_by"] for t in trains[1:]][0] == 2
    leave, rejoin = el["recoveries"]
    assert (leave["cause"], rejoin["cause"]) == ("B leaves", "B rejoins")
    for r in (leave, rejoin):
        assert 0 < r["recovery_s"] <= r["recovery_wall_s"] < 120, r
    figures = cell["elastic"]["dlion"]["seeds"]["0"]
    assert figures["restarts"] == 2 and len(figures["recoveries"]) == 2
    assert figures["equal_steps"] == min(figures["steps"], figures["steps_no_event"])
    assert 0 <= figures["accuracy_at_equal_steps"] <= 1
    assert 0 <= figures["accuracy_at_equal_steps_no_event"] <= 1
    table = (tmp_path / "microcloud.md").read_text()
    assert "wan-leave, with and without the event" in table
    assert "B leaves:" in table and "B rejoins:" in table
