"""dlion_core.topk_compensate (error feedback's compensate + top-k in one pass) against numpy:
the residual afterwards is exactly residual + grad, and the selection is topk of it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_topk import ref_topk

import dlion_core
from dlion_core import InvalidArgumentError


def check(residual: np.ndarray, grad: np.ndarray, k: int) -> None:
    want = residual + grad  # float32 + float32: the same rounding as the kernel
    res = residual.copy()
    idx, val = dlion_core.topk_compensate(res, grad, k)
    np.testing.assert_array_equal(res.view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(idx, ref_topk(want, k))
    np.testing.assert_array_equal(val.view(np.uint32), want[idx].view(np.uint32))


small = st.integers(0, 300).flatmap(
    lambda n: st.tuples(
        *(
            hnp.arrays(
                np.float32,
                n,
                elements=st.floats(-(2.0**100), 2.0**100, width=32)
                | st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0]),
            )
            for _ in range(2)
        )
    )
)


@settings(max_examples=150, deadline=None)
@given(pair=small, data=st.data())
def test_small_equals_reference(pair, data):
    residual, grad = pair
    check(residual, grad, data.draw(st.integers(0, residual.size)))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(65_536, 300_000),
    frac=st.sampled_from([0.0001, 0.001, 0.01, 0.1, 0.24, 0.3]),
    kind=st.sampled_from(["normal", "heavy", "ties", "sparse_residual", "zeros"]),
)
def test_fast_path_equals_reference(seed, n, frac, kind):
    """Sizes of the sampled one-pass path, and inputs whose estimate fails (ties: too many
    candidates; zeros): the fallback still leaves the whole residual compensated."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        residual = rng.standard_normal(n).astype(np.float32)
        grad = rng.standard_normal(n).astype(np.float32)
    elif kind == "heavy":
        residual = rng.standard_t(2, n).astype(np.float32)
        grad = (rng.standard_t(2, n) * 1e-3).astype(np.float32)
    elif kind == "ties":
        residual = rng.integers(-2, 3, n).astype(np.float32)
        grad = rng.integers(-1, 2, n).astype(np.float32)
    elif kind == "sparse_residual":  # after a step: carried entries zeroed
        grad = rng.standard_normal(n).astype(np.float32)
        residual = np.where(rng.random(n) < 0.01, np.float32(0), grad * np.float32(0.5))
    else:
        residual = np.where(rng.random(n) < 0.5, np.float32(0.0), np.float32(-0.0))
        grad = np.zeros(n, np.float32)
    check(residual, grad, max(1, int(n * frac)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("n", [10, 200_000])
def test_non_finite_raises_after_compensating(bad, n):
    grad = np.ones(n, np.float32)
    grad[n // 2] = bad
    residual = np.full(n, 2.0, np.float32)
    want = residual + grad
    with pytest.raises(InvalidArgumentError, match=rf"x\[{n // 2}\] is"):
        dlion_core.topk_compensate(residual, grad, n // 100 + 1)
    np.testing.assert_array_equal(residual, want)


def test_argument_errors():
    r = np.zeros(10, np.float32)
    with pytest.raises(InvalidArgumentError, match="grad has 9 elements"):
        dlion_core.topk_compensate(r, np.zeros(9, np.float32), 1)
    with pytest.raises(InvalidArgumentError, match="same array"):
        dlion_core.topk_compensate(r, r, 1)
    with pytest.raises(InvalidArgumentError, match="larger than"):
        dlion_core.topk_compensate(r, np.zeros(10, np.float32), 11)
    ro = r.copy()
    ro.setflags(write=False)
    with pytest.raises(InvalidArgumentError, match="read-only"):
        dlion_core.topk_compensate(ro, np.zeros(10, np.float32), 1)
