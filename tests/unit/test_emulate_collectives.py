"""The emulated cost of MPI's own collectives: the model against its definition."""

import pytest

from dlion.emulate_collectives import ROUNDS, cost_of

RING = 256 * 1024


def caps_for(sites, bw, lat):
    """(bandwidth, latency) of every rank pair: capped between sites, free inside."""
    n = len(sites)
    return [[(bw, lat) if sites[a] != sites[b] else (0.0, 0.0) for b in range(n)] for a in range(n)]


def test_no_emulated_link_costs_nothing():
    assert cost_of(caps_for(["A", "A"], 0.0, 0.0), ["A", "A"], RING) is None


@pytest.mark.parametrize("sites", [["A", "A", "B", "B"], ["A", "A", "B", "C"], ["A", "B"]])
def test_cost_is_rounds_of_latency_plus_bytes_over_the_slowest_link(sites):
    bw, lat = 2.5e6, 0.04
    cost = cost_of(caps_for(sites, bw, lat), sites, RING)
    remote = max(sum(s != site for s in sites) for site in sites)
    assert cost is not None and cost.remote_ranks == remote
    assert cost.delay("barrier", 0) == pytest.approx(ROUNDS["barrier"] * lat)
    assert cost.delay("allgather", 1000) == pytest.approx(3 * lat + 1000 * remote / bw)
    assert cost.delay("broadcast", 10**6) == pytest.approx(2 * lat + 10**6 / bw)
    assert cost.delay("allreduce", 16) == pytest.approx(2 * lat + 32 / bw)
    # a ring allreduce is paced by the engine itself
    assert cost.delay("allreduce", RING) == 0.0


def test_the_slowest_link_and_the_largest_latency_decide():
    sites = ["A", "B", "C"]
    caps = caps_for(sites, 5e6, 0.02)
    caps[0][2] = caps[2][0] = (1e6, 0.06)  # A-C is the far, thin link
    cost = cost_of(caps, sites, RING)
    assert (cost.bandwidth_Bps, cost.latency_s) == (1e6, 0.06)
