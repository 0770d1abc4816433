"""Bad input on the optimizer path (NaN/Inf gradients, mismatched dtypes, invalid options)."""

import pytest
from conftest import run_each, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.tf]


@pytest.fixture(scope="module")
def two_ranks() -> dict[str, list[dict]]:
    """The 2-rank scenarios, one job for all (one TensorFlow start on each rank)."""
    return run_each(
        2,
        ["bad_gradients", "raise"],
        ["bad_gradients", "skip"],
        ["bad_gradients", "dtype_mismatch"],
        timeout=300,
    )


@pytest.mark.parametrize("np_", [2, 3])
def test_nonfinite_gradient_raises_on_every_rank_and_is_never_sent(np_, request):
    if np_ == 2:
        recs = request.getfixturevalue("two_ranks")["bad_gradients raise"]
    else:
        res = run_mpi("bad_gradients", np_, "raise", timeout=180)
        assert res.returncode == 0, res.explain()
        recs = res.records()
    assert len(recs) == np_, recs
    last = np_ - 1
    for r in recs:
        assert r["error"] == "NonFiniteGradientError", r
        assert f"at step 1 on rank {last} ('sequential/hidden/bias')" in r["message"], r["message"]
        assert "No rank sent it to its peers and no rank applied" in r["message"]
        assert "nonfinite='skip'" in r["message"]  # the remedy
        assert r["unchanged"] and r["iterations_after_bad"] == 1 and r["iterations"] == 2
        assert r["peer_buffers_finite"], "a NaN reached the exchange"
        assert r["finite"]
    assert "element 1 is nan" in recs[last]["message"]  # the bad rank says where exactly
    assert len({r["digest"] for r in recs}) == 1


def test_nonfinite_gradient_skip_skips_the_step_on_every_rank(two_ranks):
    recs = two_ranks["bad_gradients skip"]
    assert len(recs) == 2, recs
    for r in recs:
        assert r["skipped"] == 2 and r["steps"] == 5 and r["iterations"] == 3, r
        assert len(r["warnings"]) == 2, r["warnings"]
        assert "at step 1 on rank 0 ('sequential/logits/kernel')" in r["warnings"][0]
        assert "at step 3 on rank 1 ('sequential/logits/kernel')" in r["warnings"][1]
        assert "skipped on every rank" in r["warnings"][0]
        assert r["same_as_ref"], "skipping must equal leaving the steps out"
    assert recs[0]["digest"] == recs[1]["digest"]
    assert "element 1 is inf" in recs[0]["warnings"][0]


def test_dtype_mismatch_is_an_error_at_the_first_exchange(two_ranks):
    for r in two_ranks["bad_gradients dtype_mismatch"]:
        assert r["error"] == "MismatchError", r
        assert "rank 1 has 'sequential/hidden/kernel' shape (12, 8) float64" in r["message"], r[
            "message"
        ]
        assert "rank 0 has 'sequential/hidden/kernel' shape (12, 8) float32" in r["message"]


def test_invalid_options_say_what_is_allowed():
    res = run_mpi("bad_gradients", 1, "options", timeout=180)
    assert res.returncode == 0, res.explain()
    seen = res.records()[0]["seen"]
    assert seen["nonfinite"]["error"] == "InvalidArgumentError"
    assert "nonfinite must be 'raise' or 'skip', got 'ignore'" in seen["nonfinite"]["message"]
    assert "use dlion.DistributedOptimizer(..., nonfinite='skip')" in seen["tape_skip"]["message"]
    assert "nonfinite must be 'raise', got 'warn'" in seen["tape_other"]["message"]
    assert "fusion_bytes must be at least 1024, got 10" in seen["fusion"]["message"]
    assert "must be a dlion Exchange" in seen["exchange"]["message"]
    assert "op must be 'average' or 'sum'" in seen["op"]["message"]
    assert "wraps a keras.optimizers.Optimizer" in seen["wrapped"]["message"]
