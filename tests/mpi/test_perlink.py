"""PerLinkExchange: per-link budgets follow measured bandwidth, and nothing is lost."""

import pytest
from conftest import run_mpi

pytestmark = pytest.mark.mpi

EMULATE = "#0-#1:100mbit:1ms #0-#2:10mbit:1ms #1-#2:10mbit:1ms"


def test_fast_link_carries_ten_times_the_slow_one_and_residuals_keep_the_rest():
    res = run_mpi("perlink", 3, "8", env={"DLION_EMULATE": EMULATE}, timeout=180)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    r0 = recs[0]
    fast, slow = r0["bytes_per_step"]["1"], r0["bytes_per_step"]["2"]
    assert r0["plan"]["1"][0] == r0["plan"]["2"][0] == "sparse", r0["plan"]
    # k follows the *measured* bandwidths (the caps are 10x apart); on a loaded 2-core machine
    # the estimates scatter (13.2x was seen), so the band is wide: equal budgets would give 1x.
    assert 10 * 0.5 <= fast / slow <= 10 * 2.0, (fast, slow, r0["bandwidth"])
    for rec in recs:
        # received + what the senders' residuals still owe == everything the peers computed
        assert rec["max_error"] < 1e-4 * rec["scale"], rec


@pytest.mark.tf
def test_timeline_annotates_what_each_link_carried():
    res = run_mpi("perlink", 3, "timeline", env={"DLION_EMULATE": EMULATE}, timeout=180)
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        assert rec["collective"] is False  # emulated links: the per-link path
        assert rec["exchanges"] == 3
        for links in rec["links"]:
            peers = sorted(int(p) for p in links)
            assert peers == sorted(set(range(3)) - {rec["rank"]}), links
            assert all(v["bytes"] > 0 and v["k"] > 0 for v in links.values()), links
