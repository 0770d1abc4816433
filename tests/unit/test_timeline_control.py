"""benchmarks/timeline_control.py: control rounds per step read from per-rank timelines."""

import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import timeline_control as tc  # noqa: E402


def x(name, ts, dur):
    return {"name": name, "ph": "X", "ts": ts, "dur": dur, "pid": 0, "tid": 0}


def trace(merged: bool, steps: int = 4) -> list:
    """Steps of 100 ms; a 30 ms control round either overlapped with the gradient buffer
    (merged) or before it (separate), and a second round in the last step when separate."""
    out = []
    for i in range(steps):
        t = i * 100_000
        out.append(x("step", t, 100_000))
        if merged:
            out += [x("join", t + 1_000, 30_000), x("exchange", t + 2_000, 60_000)]
        else:
            out += [x("join", t + 1_000, 30_000), x("exchange", t + 32_000, 60_000)]
    if not merged:
        out.append(x("join", (steps - 1) * 100_000 + 93_000, 5_000))
    return out


def test_merged_rounds_cost_no_control_time_before_the_gradients():
    r = tc.per_step(trace(True), skip=0)
    assert r["rounds_per_step"] == 1.0
    assert r["control_ms_before_grads"] == 1.0  # 1 ms of the round before the buffer starts
    assert r["rounds_overlapping_grads"] == r["rounds"] == 4
    assert r["step_ms"] == 100.0


def test_separate_rounds_are_counted_before_the_gradients():
    r = tc.per_step(trace(False), skip=1)
    assert r["steps"] == 3
    assert r["rounds_per_step"] == 4 / 3
    assert r["control_ms_before_grads"] == 30.0
    assert r["rounds_overlapping_grads"] == 0


def test_rank_files_in_rank_order(tmp_path):
    for r in (0, 2, 10, 1):
        (tmp_path / f"trace.rank{r}.json").write_text(json.dumps({"traceEvents": trace(True)}))
    files = tc.rank_files(tmp_path / "trace.json")
    assert [f.name for f in files] == [f"trace.rank{r}.json" for r in (0, 1, 2, 10)]
    assert tc.per_step(tc.spans(files[3]), skip=0)["rounds"] == 4
