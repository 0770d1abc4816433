"""The site-aware exchange (dlion.exchange.sites) with real ranks against a numpy model."""

import pytest
from conftest import run_each, run_mpi

pytestmark = pytest.mark.mpi

LAYOUTS = ["A,A,B,B", "A,B,B,B", "A,A,B,C"]  # sites of 2 and 2; 1 and 3; 2, 1 and 1 ranks
SCENARIOS = {
    **{("exact", s): [f"DLION_TEST_SITES={s}", "sites", "exact"] for s in LAYOUTS},
    **{("feedback", s): [f"DLION_TEST_SITES={s}", "sites", "feedback"] for s in LAYOUTS},
    ("stale", "A,A,B,B"): ["DLION_TEST_SITES=A,A,B,B", "sites", "stale", "2"],
    ("checkpoint", "A,B,B,B"): ["DLION_TEST_SITES=A,B,B,B", "sites", "checkpoint"],
}


@pytest.fixture(scope="module")
def four_ranks() -> dict:
    """Every scenario without TensorFlow on its sites, one job of 4 ranks for all
    (workers/each.py): {(scenario, sites): every rank's record}."""
    seen = run_each(4, *SCENARIOS.values(), timeout=600)
    return {key: seen[" ".join(args)] for key, args in SCENARIOS.items()}


@pytest.mark.parametrize("sites", LAYOUTS)
def test_site_aware_dense_exchange_is_the_weighted_sum(sites, four_ranks):
    recs = four_ranks["exact", sites]
    assert len(recs) == 4
    for rec in recs:
        assert rec["site_aware"], rec
        assert rec["worst"] < 1e-5, rec


@pytest.mark.parametrize("sites", LAYOUTS)
def test_site_aware_topk_keeps_one_residual_per_site_pair_and_loses_nothing(sites, four_ranks):
    for rec in four_ranks["feedback", sites]:
        assert rec["worst"] < 1e-4, rec
        assert rec["residual_worst"] < 1e-4, rec
        assert rec["pieces"] >= 1, rec


def test_staleness_across_sites_applies_every_message_once(four_ranks):
    recs = four_ranks["stale", "A,A,B,B"]
    for rec in recs:
        assert rec["worst"] < 1e-4, rec
        assert rec["staleness_max"] <= 2, rec
    assert any(rec["staleness_max"] >= 1 for rec in recs), recs  # the fast site ran ahead


def test_site_aware_residuals_and_steps_survive_a_checkpoint(four_ranks):
    recs = four_ranks["checkpoint", "A,B,B,B"]
    assert len(recs) == 4
    for rec in recs:
        assert rec["before"], rec  # every rank sends a piece to the other site
        assert rec["after"] == rec["before"], rec
        assert rec["step"] == 3, rec


@pytest.mark.tf
def test_training_over_two_sites_is_site_aware_by_default():
    env = {"DLION_TEST_SITES": "A,A,B,B", "DLION_EMULATE": "A-B:50mbit:5ms"}
    res = run_mpi("sites", 4, "train", env=env, timeout=180)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == 4
    for rec in recs:
        assert rec["site_aware"] and "site-aware" in rec["describe"], rec
        assert rec["last"] < 0.5 * rec["first"], rec
    # The ranks of a site apply the same bits every step.
    assert recs[0]["sums"] == recs[1]["sums"]
    assert recs[2]["sums"] == recs[3]["sums"]
