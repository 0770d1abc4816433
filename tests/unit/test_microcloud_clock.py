"""benchmarks/microcloud_clock.py: the training clock of a run that restarts (recoveries count,
evaluation does not), the timeline of restarts and recoveries, accuracy at equal steps."""

import sys

import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(ROOT / "benchmarks"))
import microcloud_clock as jclock  # noqa: E402


def journal():
    """Attempt 0 on 4 ranks trains from wall 100, saves at step 20, is stopped at 130 (step 30)
    when B leaves (wall 128); attempt 1 on 2 ranks resumes from 20 and trains from 150;
    attempt 2 on 4 ranks resumes from 40 (B rejoined at wall 170) and trains from 185."""
    return [
        {"ev": "eval", "wall": 95, "end": 97, "step": 0, "accuracy": 0.1, "attempt": 0},
        {"ev": "train", "wall": 100, "step": 1, "ranks": 4, "resumed_from": None, "attempt": 0},
        {"ev": "eval", "wall": 110, "end": 111, "step": 15, "accuracy": 0.5, "attempt": 0},
        {"ev": "save", "wall": 112, "end": 113, "step": 20, "attempt": 0},
        {"ev": "eval", "wall": 120, "end": 121, "step": 25, "accuracy": 0.6, "attempt": 0},
        {"ev": "progress", "wall": 130, "step": 30, "attempt": 0},
        {"ev": "eval", "wall": 140, "end": 142, "step": 20, "accuracy": 0.55, "attempt": 1},
        {"ev": "train", "wall": 150, "step": 21, "ranks": 2, "resumed_from": 20, "attempt": 1},
        {"ev": "save", "wall": 160, "end": 161, "step": 40, "attempt": 1},
        {"ev": "progress", "wall": 172, "step": 45, "attempt": 1},
        {"ev": "eval", "wall": 180, "end": 181, "step": 40, "accuracy": 0.7, "attempt": 2},
        {"ev": "train", "wall": 185, "step": 41, "ranks": 4, "resumed_from": 40, "attempt": 2},
        {"ev": "eval", "wall": 200, "end": 201, "step": 70, "accuracy": 0.8, "attempt": 2},
        {"ev": "end", "wall": 201, "step": 70, "attempt": 2},
    ]


def test_the_clock_counts_recovery_and_excludes_evaluation():
    j = journal()
    assert jclock.clock(j, 99) == 0.0 and jclock.clock(j, 110) == 10.0
    assert jclock.clock(j, 110.5) == 10.0  # during an evaluation the clock stands still
    # 130 -> 150: the stop, the restart and the resumed attempt's start-up all count; its
    # first evaluation (140-142) does not
    assert jclock.clock(j, 150) == 50 - 1 - 1 - 2
    assert jclock.attempts(j) == 3 and jclock.start_wall(j) == 100


def test_the_timeline_has_every_restart_its_cause_and_recovery():
    changes = [
        {"wall": 128, "what": "B leaves"},
        {"wall": 170, "what": "B rejoins"},
    ]
    tl = jclock.timeline(journal(), changes)
    assert tl["restarts"] == 2 and tl["finished"] and tl["steps"] == 70
    assert [a["ranks"] for a in tl["attempts"]] == [4, 2, 4]
    leave, rejoin = tl["recoveries"]
    assert leave["cause"] == "B leaves" and rejoin["cause"] == "B rejoins"
    assert leave["recovery_wall_s"] == 22 and leave["recovery_s"] == 22 - 2  # eval 140-142
    assert (leave["stopped_at_step"], leave["resumed_from"]) == (30, 20)
    assert rejoin["recovery_wall_s"] == 15 and rejoin["recovery_s"] == 14
    assert tl["save_s"] == 2
    # the evaluation of step 25 was undone by the restart from step 20: not on the curve
    assert [p["step"] for p in tl["lost"]] == [25]
    assert [p["step"] for p in tl["curve"]] == [0, 15, 20, 40, 70]
    assert tl["curve"][0]["t"] == 0.0
    assert tl["train_s"] == jclock.clock(journal(), 201)
    # a restart the benchmark did not cause is a failure, timed from the last sign of life
    failure = jclock.timeline(journal(), changes[1:])["recoveries"][0]
    assert failure["cause"] == "failure" and failure["recovery_wall_s"] == 150 - 130


def test_the_journal_reader_skips_a_line_being_written(tmp_path):
    path = tmp_path / "j.jsonl"
    assert jclock.read(path) == []
    jclock.append(path, {"ev": "progress", "wall": 1.0, "step": 5, "attempt": 0})
    with open(path, "a") as f:
        f.write('{"ev": "eval", "wa')
    assert jclock.read(path) == [{"ev": "progress", "wall": 1.0, "step": 5, "attempt": 0}]


evals = st.lists(st.tuples(st.floats(0, 100), st.floats(0, 5)), max_size=6).map(
    lambda xs: [{"ev": "eval", "wall": 10 + a, "end": 10 + a + d} for a, d in xs]
)


@given(evals, st.floats(0, 200), st.floats(0, 50))
def test_the_clock_never_runs_faster_than_the_wall_nor_backwards(extra, w, dw):
    j = [{"ev": "train", "wall": 10.0, "attempt": 0}, *extra]
    a, b = jclock.clock(j, w), jclock.clock(j, w + dw)
    assert 0.0 <= a <= b + 1e-9
    assert b - a <= dw + 1e-9
    assert a <= max(0.0, w - 10.0) + 1e-9


curves = st.lists(
    st.tuples(st.integers(0, 1000), st.floats(0, 1)),
    min_size=1,
    max_size=8,
    unique_by=lambda p: p[0],
).map(lambda ps: [{"step": s, "accuracy": a} for s, a in ps])


@given(curves, st.integers(-10, 1100))
def test_accuracy_at_step_interpolates_between_the_evaluations_around_it(curve, step):
    acc = jclock.accuracy_at_step(curve, step)
    pts = sorted((p["step"], p["accuracy"]) for p in curve)
    before = [a for s, a in pts if s <= step] or [pts[0][1]]
    after = [a for s, a in pts if s >= step] or [pts[-1][1]]
    lo, hi = sorted((before[-1], after[0]))
    assert lo - 1e-9 <= acc <= hi + 1e-9
    for s, a in pts:
        assert jclock.accuracy_at_step(curve, s) == pytest.approx(a)
    assert jclock.accuracy_at_step([], step) is None
