"""PerLinkExchange's time budget T: budget_s, else budget_fraction x the measured compute time."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dlion

positive = st.floats(1e-4, 10.0, allow_nan=False, allow_infinity=False)


@given(fraction=positive, compute=positive)
def test_the_budget_is_the_fraction_of_the_measured_compute_time(fraction, compute):
    policy = dlion.PerLinkExchange(budget_fraction=fraction, initial_budget_s=0.003)
    assert policy.budget() == 0.003  # nothing measured yet
    policy.compute_s = compute
    assert math.isclose(policy.budget(), fraction * compute)


@given(budget=positive, compute=positive)
def test_a_fixed_budget_ignores_the_compute_time(budget, compute):
    policy = dlion.PerLinkExchange(budget_s=budget, budget_fraction=0.5)
    policy.compute_s = compute
    assert policy.budget() == budget


def test_the_default_is_a_tenth_and_says_so():
    policy = dlion.PerLinkExchange()
    policy.compute_s = 0.2
    assert math.isclose(policy.budget(), 0.02)
    assert "T=0.1 x compute" in policy.describe()
    assert "T=compute" in dlion.PerLinkExchange(budget_fraction=1.0).describe()


@pytest.mark.parametrize("bad", [0.0, -0.1, math.inf, math.nan])
def test_a_fraction_that_is_not_finite_and_positive_is_refused(bad):
    with pytest.raises(dlion.InvalidArgumentError, match="budget_fraction"):
        dlion.PerLinkExchange(budget_fraction=bad)
