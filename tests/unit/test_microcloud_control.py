"""The benchmark harness's evaluate/stop schedule: decided at one check, applied at the next."""

import argparse
import math
import sys

from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(ROOT / "benchmarks"))
import microcloud_worker as worker  # noqa: E402


def run(dt: float, every: float, budget: float) -> tuple[list[float], float]:
    """The training times of the evaluations, and where the run stopped, for checks every
    ``dt`` seconds of training (what ``_Run.train`` does with ``decide`` and ``past``)."""
    a = argparse.Namespace(eval_every=every, budget=budget, max_steps=0, stop_at=0.0)
    next_eval, pending, evals, t = every, (0.0, 0.0), [], 0.0
    while True:
        t += dt
        evaluate, stop = pending  # the decision of the previous check
        pending = worker.decide(a, t, next_eval, 0, 0.0, bool(evaluate))
        if evaluate:
            evals.append(t)
            next_eval = worker.past(next_eval, t, every)
        if stop:
            return evals, t


@given(dt=st.floats(0.05, 0.9), every=st.floats(1.0, 3.0), budget=st.floats(5.0, 30.0))
def test_one_evaluation_per_interval_and_the_stop_one_check_after_the_budget(dt, every, budget):
    evals, stopped = run(dt, every, budget)
    assert evals[-1] == stopped  # a run evaluates where it stops
    slots = [math.floor(t / every) for t in evals[:-1]]
    assert slots == sorted(set(slots)), (evals, every)  # never two in one interval
    gaps = [b - a for a, b in zip([0.0, *evals], evals)]
    assert max(gaps) <= every + 2 * dt + 1e-9, (evals, every)  # none skipped either
    assert budget + dt - 1e-9 <= stopped <= budget + 2 * dt + 1e-9
