"""Top-k / random-k sparsification kernels of dlion_core against plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dlion_core
from dlion_core import InvalidArgumentError


def ref_topk(x: np.ndarray, k: int) -> np.ndarray:
    """Largest |x| first, the lower index first among ties; the first k, ascending."""
    flat = x.ravel()
    order = np.lexsort((np.arange(flat.size), -np.abs(flat)))
    return np.sort(order[:k]).astype(np.uint32)


def assert_topk(x: np.ndarray, k: int, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    idx, val = dlion_core.topk(x, k, exact=exact)
    assert idx.dtype == np.uint32 and val.dtype == np.float32
    np.testing.assert_array_equal(idx, ref_topk(x, k))
    # Bitwise: signed zeros keep their sign.
    np.testing.assert_array_equal(val.view(np.uint32), x.ravel()[idx].view(np.uint32))
    return idx, val


tie_heavy = hnp.arrays(
    np.float32,
    st.integers(0, 300),
    elements=st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 3.0, 0.5, -0.5]),
)
finite = hnp.arrays(
    np.float32,
    st.integers(0, 300),
    elements=st.floats(allow_nan=False, allow_infinity=False, width=32),
)


@settings(max_examples=150, deadline=None)
@given(x=st.one_of(tie_heavy, finite), data=st.data())
def test_topk_equals_reference(x, data):
    k = data.draw(st.integers(0, x.size))
    for exact in (True, False):
        assert_topk(x, k, exact)


@pytest.mark.parametrize("kind", ["ties", "normal", "zeros"])
@pytest.mark.parametrize("frac", [0.001, 0.01, 0.2, 0.3])
def test_topk_large_equals_reference(kind, frac):
    """Large enough for the sampled fast path (and its fallback past k = n/4)."""
    rng = np.random.default_rng(3)
    n = 100_003
    if kind == "ties":
        x = rng.integers(-4, 5, n).astype(np.float32)
    elif kind == "normal":
        x = rng.standard_normal(n).astype(np.float32)
    else:
        x = np.where(rng.random(n) < 0.5, np.float32(0.0), np.float32(-0.0))
    k = int(n * frac)
    for exact in (True, False):
        assert_topk(x, k, exact)


@pytest.mark.parametrize("exact", [True, False])
def test_topk_edges(exact):
    empty = np.zeros(0, np.float32)
    idx, val = dlion_core.topk(empty, 0, exact=exact)
    assert idx.shape == (0,) and val.shape == (0,)
    x = np.array([1.0, -3.0, 3.0, -0.0, 0.0, 2.0], np.float32)
    assert dlion_core.topk(x, 0, exact=exact)[0].size == 0
    np.testing.assert_array_equal(dlion_core.topk(x, x.size, exact=exact)[0], np.arange(x.size))
    np.testing.assert_array_equal(dlion_core.topk(x, 1, exact=exact)[0], [1])  # tie: lower index
    with pytest.raises(InvalidArgumentError, match=r"k = 7 is larger than the 6"):
        dlion_core.topk(x, 7, exact=exact)
    with pytest.raises(InvalidArgumentError, match="negative"):
        dlion_core.topk(x, -1, exact=exact)


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("n", [10, 200_000])
def test_topk_non_finite_names_first_index(exact, bad, n):
    x = np.ones(n, np.float32)
    x[[n // 2 + 1, n - 1]] = bad
    x[n // 2] = np.nan
    for k in (1, n // 100 + 1, n):
        with pytest.raises(InvalidArgumentError, match=rf"x\[{n // 2}\] is"):
            dlion_core.topk(x, k, exact=exact)


def test_topk_argument_errors_say_what_to_pass():
    x = np.arange(10, dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match=r"dtype float64.*float32"):
        dlion_core.topk(x.astype(np.float64), 3)
    with pytest.raises(InvalidArgumentError, match="not C-contiguous.*ascontiguousarray"):
        dlion_core.topk(x[::2], 3)
    with pytest.raises(InvalidArgumentError, match="float32"):
        dlion_core.randomk(x.astype(np.float64), 3, seed=0)


def test_topk_read_only_and_any_shape_zero_copy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 50)).astype(np.float32)
    x.setflags(write=False)
    for exact in (True, False):
        idx, val = assert_topk(x, 37, exact)
        np.testing.assert_array_equal(val, x.ravel()[idx])


@pytest.mark.parametrize("dist", ["normal", "student_t2"])
@pytest.mark.parametrize("frac", [0.01, 0.001])
def test_fast_topk_recall(dist, frac):
    rng = np.random.default_rng(11)
    n = 1_000_000
    x = (rng.standard_normal(n) if dist == "normal" else rng.standard_t(2, n)).astype(np.float32)
    k = int(n * frac)
    idx, val = dlion_core.topk(x, k, exact=False)
    assert idx.size == k and np.all(np.diff(idx.astype(np.int64)) > 0)  # k distinct, sorted
    np.testing.assert_array_equal(val, x[idx])
    exact_idx, _ = dlion_core.topk(x, k, exact=True)
    np.testing.assert_array_equal(exact_idx, ref_topk(x, k))
    recall = np.intersect1d(idx, exact_idx).size / k
    assert recall >= 0.99, recall


def test_randomk():
    x = np.random.default_rng(1).standard_normal(10_000).astype(np.float32)
    idx, val = dlion_core.randomk(x, 500, seed=5)
    assert idx.dtype == np.uint32 and idx.size == 500
    assert np.all(np.diff(idx.astype(np.int64)) > 0) and idx[-1] < x.size
    np.testing.assert_array_equal(val, x[idx])
    np.testing.assert_array_equal(dlion_core.randomk(x, 500, seed=5)[0], idx)
    assert not np.array_equal(dlion_core.randomk(x, 500, seed=6)[0], idx)
    np.testing.assert_array_equal(dlion_core.randomk(x, x.size, seed=0)[0], np.arange(x.size))
    assert dlion_core.randomk(x, 0, seed=0)[0].size == 0
    with pytest.raises(InvalidArgumentError, match="larger than"):
        dlion_core.randomk(x[:3], 4, seed=0)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 2000), data=st.data())
def test_randomk_properties(n, data):
    k = data.draw(st.integers(0, n))
    seed = data.draw(st.integers(0, 2**64 - 1))
    idx, _ = dlion_core.randomk(np.zeros(n, np.float32), k, seed=seed)
    assert idx.size == k and (k == 0 or idx[-1] < n)
    assert np.all(np.diff(idx.astype(np.int64)) > 0)


@pytest.mark.parametrize("exact", [True, False])
def test_scatter_add_reconstructs_topk(exact):
    x = np.random.default_rng(2).standard_normal(100_000).astype(np.float32)
    idx, val = dlion_core.topk(x, 1000, exact=exact)
    out = np.zeros_like(x)
    dlion_core.scatter_add(idx, val, out)
    np.testing.assert_array_equal(out[idx], x[idx])
    mask = np.ones(x.size, bool)
    mask[idx] = False
    assert not out[mask].any()
    dlion_core.scatter_add(idx, val, out)  # accumulates
    np.testing.assert_array_equal(out[idx], 2 * x[idx])


def test_scatter_add_errors_leave_out_untouched():
    out = np.arange(5, dtype=np.float32)
    before = out.copy()
    idx = np.array([0, 4, 5, 1], np.uint32)
    with pytest.raises(InvalidArgumentError, match=r"idx\[2\] = 5 is out of range.*5 elements"):
        dlion_core.scatter_add(idx, np.ones(4, np.float32), out)
    np.testing.assert_array_equal(out, before)
    with pytest.raises(InvalidArgumentError, match="uint32"):
        dlion_core.scatter_add(idx.astype(np.int64), np.ones(4, np.float32), out)
    with pytest.raises(InvalidArgumentError, match="values has 3"):
        dlion_core.scatter_add(idx, np.ones(3, np.float32), out)
    ro = out.copy()
    ro.setflags(write=False)
    with pytest.raises(InvalidArgumentError, match="read-only"):
        dlion_core.scatter_add(idx[:1], np.ones(1, np.float32), ro)
    with pytest.raises(InvalidArgumentError, match="not C-contiguous"):
        dlion_core.scatter_add(idx[:1], np.ones(1, np.float32), np.zeros(10, np.float32)[::2])
    np.testing.assert_array_equal(out, before)
