"""Shared emulated site links on real ranks (sites A,A,B,B): two ranks of A sending to B at once
share the A->B rate, one alone gets all of it, and a rank-pair item keeps a link of its own."""

import pytest
from conftest import run_mpi

pytestmark = pytest.mark.mpi

RATE = 20e6 / 8  # A-B:20mbit, bytes/s


@pytest.fixture(scope="module")
def phases() -> dict[str, list[dict]]:
    res = run_mpi(
        "sitelinks", 4, "flows", str(RATE), timeout=180, env={"DLION_EMULATE": "A-B:20mbit"}
    )
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert [r["rank"] for r in recs] == [0, 1, 2, 3], res.explain()
    return {phase: [r[phase] for r in recs] for phase in ("alone", "together", "own")}


def test_one_rank_alone_gets_the_whole_site_pair_rate(phases):
    alone = phases["alone"]
    assert abs(alone[2]["rate"] - RATE) < 0.25 * RATE, alone
    assert abs(alone[0]["measured"] - RATE) < 0.25 * RATE, alone
    # Every link between the sites is on its site pair's shared wire, at the site pair's cap.
    assert all(r["shared"] and r["cap"] == RATE for r in alone), alone


def test_two_ranks_sending_at_once_each_get_about_half(phases):
    together = phases["together"]
    for receiver in (2, 3):
        assert abs(together[receiver]["rate"] - RATE / 2) < 0.25 * RATE / 2, together
    # The senders' own measurements see the shared wire as a slower link.
    for sender in (0, 1):
        assert abs(together[sender]["measured"] - RATE / 2) < 0.35 * RATE / 2, together


def test_a_rank_pair_item_keeps_a_link_of_its_own(phases):
    own = phases["own"]  # A-B:20mbit #1-#3:20mbit, both flows at once
    for receiver in (2, 3):
        assert abs(own[receiver]["rate"] - RATE) < 0.25 * RATE, own
    assert own[0]["shared"] and not own[1]["shared"] and not own[3]["shared"], own
    assert own[1]["cap"] == RATE, own


N_ALLREDUCE = 250_000  # floats, as the worker


@pytest.mark.parametrize("hierarchical", ["1", "0"])
def test_dense_allreduce_is_paced_on_the_site_links(hierarchical):
    env = {"DLION_EMULATE": "A-B:20mbit", "DLION_HIERARCHICAL": hierarchical}
    res = run_mpi("sitelinks", 4, "allreduce", str(RATE), timeout=180, env=env)
    assert res.returncode == 0, res.explain()
    rec = res.records()[0]
    assert rec["max_error"] < 1e-4, rec
    if hierarchical == "1":
        # The ring of the two site leaders: each sends half the buffer, then the other half.
        assert rec["hierarchical"] == 1, rec
        wan_bytes = N_ALLREDUCE * 4
    else:
        # The flat ring 0-1-2-3: 1 -> 2 carries a quarter of the buffer in each of 6 stages.
        assert rec["ring"] == 1, rec
        wan_bytes = 6 * N_ALLREDUCE * 4 / 4
    rate = wan_bytes / rec["seconds"]
    assert abs(rate - RATE) < 0.25 * RATE, (rate, rec)


LATENCY = 0.05  # s, A-B:20mbit:50ms


def test_small_collectives_take_the_wide_area_latencies_they_take_on_a_real_network():
    """MPI's own collectives cannot be paced message by message; each is held for the rounds
    measured on the real-network testbed (dlion.emulate_collectives.ROUNDS)."""
    from dlion.emulate_collectives import ROUNDS

    res = run_mpi(
        "sitelinks", 4, "control", str(RATE), timeout=180, env={"DLION_EMULATE": "A-B:20mbit:50ms"}
    )
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        for kind, rounds in ROUNDS.items():
            assert rec[kind] >= rounds * LATENCY, (kind, rec)
        assert rec["allreduce_result"] == [6.0] * 4, rec
        assert rec["allgather_result"] == [0, 1, 2, 3], rec
        assert rec["broadcast_result"] == [3.0] * 4, rec
        assert rec["early_wait"] is False and rec["late_wait"] is True, rec
