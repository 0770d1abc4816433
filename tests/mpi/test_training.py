"""DistributedOptimizer with TensorFlow on real ranks and real data."""

import pytest
from conftest import run_each, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.tf]


@pytest.fixture(scope="module")
def two_ranks() -> dict[str, list[dict]]:
    """The 2-rank scenarios, one job for all (one TensorFlow start on each rank)."""
    return run_each(
        2,
        ["training", "equivalence"],
        ["training", "layout_mismatch"],
        ["training", "tape"],
        timeout=400,
    )


@pytest.mark.parametrize("np_", [2, 4])
def test_allreduce_training_equals_union_batch_and_is_bit_identical(np_, request):
    if np_ == 2:
        recs = request.getfixturevalue("two_ranks")["training equivalence"]
    else:
        res = run_mpi("training", np_, "equivalence", timeout=300)
        assert res.returncode == 0, res.explain()
        recs = res.records()
    assert len(recs) == np_, recs
    assert len({r["digest"] for r in recs}) == 1, "ranks ended with different weights"
    assert len({r["after_alternating"] for r in recs}) == 1
    for r in recs:
        assert r["steps"] == 14 and r["iterations"] == 14
        assert r["plans"] == 3 and r["compiled"] == 3  # full model, first half, second half
        assert r["moved"] > 1e-3, "training did not change the weights"
        assert r["max_abs_err"] <= 1e-5 * max(1.0, r["scale"]), r


def test_different_models_raise_mismatch_naming_rank_and_tensor(two_ranks):
    recs = two_ranks["training layout_mismatch"]
    assert len(recs) == 2
    for r in recs:
        assert r["error"] == "MismatchError", r
        assert "rank 1 has" in r["message"] and "shape (784, 33)" in r["message"]
        assert "kernel" in r["message"]


def test_distributed_gradient_tape_trains_like_the_optimizer(two_ranks):
    recs = two_ranks["training tape"]
    assert len(recs) == 2
    assert recs[0]["digest"] == recs[1]["digest"]  # ranks agree bit for bit
    for r in recs:
        assert r["max_abs_diff"] <= 1e-6, r
