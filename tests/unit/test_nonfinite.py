"""The non-finite gradient check of the optimizer path (dlion/tensorflow/nonfinite.py)."""

import numpy as np
import pytest
import tensorflow as tf

from dlion.errors import InvalidArgumentError
from dlion.tensorflow import fusion
from dlion.tensorflow.nonfinite import all_finite, check_policy, first_nonfinite


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 1000, 100_003])
def test_all_finite_matches_isfinite(dtype, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    assert all_finite(x)
    if n == 0:
        return
    big = np.finfo(dtype).max
    x[rng.integers(n)] = big  # squares overflow: the exact fallback still says finite
    x[rng.integers(n)] = -big
    assert all_finite(x)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[rng.integers(n)] = bad
        assert not all_finite(y)
    y = x.copy()
    y[0], y[-1] = np.inf, -np.inf  # opposite infinities do not cancel into a finite value
    assert not all_finite(y)


def test_first_nonfinite_names_gradient_and_element():
    grads = [tf.ones((2, 3)), tf.ones(4), tf.ones(5)]
    plan = fusion.plan(grads, ["a", "b", "c"], 1 << 20)
    (group,) = plan.groups
    plan.pack(grads, group)
    group.buffer[6 + 2] = np.nan  # b[2]
    group.buffer[10 + 4] = np.inf  # c[4], later
    index, element, value = first_nonfinite(group)
    assert (index, element) == (1, 2) and np.isnan(value)


def test_policy_is_checked():
    assert check_policy("skip", "X") == "skip"
    with pytest.raises(InvalidArgumentError, match="X: nonfinite must be 'raise' or 'skip', got"):
        check_policy("warn", "X")
