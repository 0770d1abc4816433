"""The rebalance rule of weighted dynamic batching (dlion.batching.split) and compute emulation."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlion import emulate
from dlion.batching import split
from dlion.errors import InvalidArgumentError


def reference_shares(rates: list[float], total: int, lo: int, hi: int) -> np.ndarray:
    """clip(lam * r, lo, hi) summing to total, lam found by bisection (numpy)."""
    r = np.asarray(rates, np.float64)
    a, b = 0.0, hi / r.min() * 2 + 1
    for _ in range(200):
        lam = (a + b) / 2
        if np.clip(lam * r, lo, hi).sum() < total:
            a = lam
        else:
            b = lam
    return np.clip(b * r, lo, hi)


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[float], int, int, int]:
    n = draw(st.integers(1, 12))
    rates = draw(st.lists(st.floats(0.01, 1000.0), min_size=n, max_size=n))
    lo = draw(st.integers(1, 8))
    hi = draw(st.integers(lo, 600))
    total = draw(st.integers(n * lo, n * hi))
    return rates, total, lo, hi


@settings(max_examples=300, deadline=None)
@given(problems())
def test_split_sums_to_the_global_batch_within_bounds_and_proportional(problem):
    rates, total, lo, hi = problem
    b = split(rates, total, lo, hi)
    assert sum(b) == total
    assert all(isinstance(v, int) and lo <= v <= hi for v in b)
    ref = reference_shares(rates, total, lo, hi)
    assert np.all(np.abs(np.asarray(b) - ref) < 1 + 1e-6), (b, ref.tolist())
    # A faster rank never gets a smaller batch.
    for i in range(len(b)):
        for j in range(len(b)):
            if rates[i] > rates[j]:
                assert b[i] >= b[j]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.1, 100.0), min_size=1, max_size=10), st.integers(0, 500))
def test_unclipped_split_is_largest_remainder_rounding(rates, extra):
    total = len(rates) + extra
    b = split(rates, total)
    ideal = total * np.asarray(rates) / sum(rates)
    if np.all(ideal >= 1):  # nothing clipped at min_batch=1
        assert np.all(np.abs(b - ideal) < 1)
        # Largest remainder: floors plus one for the largest fractional parts.
        assert all(v in (np.floor(x), np.floor(x) + 1) for v, x in zip(b, ideal))


def test_split_examples():
    assert split([1, 1], 64) == [32, 32]
    assert split([1, 0.5], 63) == [42, 21]
    assert split([1, 1, 1], 64) == [22, 21, 21]  # ties go to the lower rank
    assert split([1, 1, 1, 0.5], 70) == [20, 20, 20, 10]
    assert split([100, 1], 20, min_batch=4) == [16, 4]
    assert split([100, 1, 1], 30, min_batch=2, max_batch=12) == [12, 9, 9]
    assert split([3.0], 17) == [17]


def test_split_rejects_bad_input():
    with pytest.raises(InvalidArgumentError, match="rank 1 has 0"):
        split([1.0, 0.0], 8)
    with pytest.raises(InvalidArgumentError, match="rank 0 has nan"):
        split([float("nan")], 8)
    with pytest.raises(InvalidArgumentError, match="cannot divide a global batch of 3 among 2"):
        split([1.0, 1.0], 3, min_batch=2)
    with pytest.raises(InvalidArgumentError, match=r"2 \* min_batch <= global_batch <= 2"):
        split([1.0, 1.0], 30, max_batch=10)


def test_slowdown_sleeps_in_proportion(monkeypatch):
    monkeypatch.setenv("DLION_EMULATE", "compute=0.5 slow=0:2@3")
    assert emulate.speed(0) == 0.5
    assert emulate.speed(3) == 0.25
    assert emulate.speed(3, rank=1) == 1.0
    with emulate.slowdown(0) as t:
        time.sleep(0.02)
    assert t.speed == 0.5 and t.work_s >= 0.02
    assert t.slept_s >= t.work_s * 0.99  # (1/0.5 - 1) x the work
    assert t.total_s == t.work_s + t.slept_s
    with emulate.slowdown(0, rank=1) as t:
        pass
    assert t.speed == 1.0 and t.slept_s == 0.0


def test_slowdown_does_not_sleep_after_an_exception(monkeypatch):
    monkeypatch.setenv("DLION_EMULATE", "compute=0.01")
    start = time.perf_counter()
    with pytest.raises(KeyError), emulate.slowdown(0):
        time.sleep(0.01)
        raise KeyError("x")
    assert time.perf_counter() - start < 0.5
