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
