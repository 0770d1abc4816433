"""benchmarks/microcloud.py end to end, tiny: it runs, and its JSON has the keys."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import RANK_ENV, ROOT

pytestmark = [pytest.mark.mpi, pytest.mark.tf]

KEYS = {"time_to_target_s", "accuracy_at_budget", "speedup_vs_allreduce", "mb_per_link"}


def test_microcloud_benchmark_writes_table_json_and_plots(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "microcloud.py"),
        "--np=2",
        "--scenarios=wan-hetero",
        "--budget=1.5",
        "--max-steps=10",
        "--evals=2",
        "--test-samples=200",
        "--target=0.3",
        f"--out={tmp_path}",
    ]
    env = {**os.environ, **RANK_ENV}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "microcloud.json").read_text())
    policies = results["scenarios"]["wan-hetero"]["policies"]
    assert set(policies) == {"allreduce", "gaia", "ako", "dlion"}
    for name, s in policies.items():
        assert KEYS <= set(s), (name, sorted(s))
        assert 0.0 <= s["accuracy_at_budget"] <= 1.0
        assert s["mb_per_wan_link"] > 0, (name, s)  # every policy crossed the emulated WAN
        assert s["curve"][0]["t"] == 0.0 and len(s["curve"]) >= 2
    assert policies["allreduce"]["speedup_vs_allreduce"] in (None, 1.0)
    table = (tmp_path / "microcloud.md").read_text()
    assert "| wan-hetero | DLion |" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "wan-hetero.png").stat().st_size > 1000
