"""Engine collectives on real ranks, against numpy references."""

import pytest
from conftest import run_each

pytestmark = pytest.mark.mpi


RING_ONLY = ["DLION_RING_THRESHOLD_BYTES=0", "DLION_RING_SEGMENT_BYTES=4096"]
SITES = {
    "A,A,B": [],
    "A,A,B,B": [],
    "A,B,A,B": [],  # sites need not be contiguous in rank order
    "A,B,B,C": RING_ONLY,
}
_jobs: dict[int, dict[str, list[dict]]] = {}


def _scenario(sites: str | None, ring_only: bool) -> list[str]:
    return [
        *([f"DLION_TEST_SITES={sites}"] if sites else []),
        *(RING_ONLY if ring_only else SITES.get(sites or "", [])),
        "collectives",
    ]


def _records(np_: int, sites: str | None = None, ring_only: bool = False) -> list[dict]:
    """Every rank's record of the worker on np_ ranks (on ``sites``; with ``ring_only``: every
    allreduce takes the ring, in 4 KiB segments). The scenarios of one size share one job."""
    if np_ not in _jobs:
        scenarios = [_scenario(None, False)]
        if np_ in (2, 3):
            scenarios.append(_scenario(None, True))
        scenarios += [_scenario(s, False) for s in SITES if len(s.split(",")) == np_]
        _jobs[np_] = run_each(np_, *scenarios, timeout=600)
    return _jobs[np_][" ".join(_scenario(sites, ring_only))]


@pytest.mark.parametrize("np_", [1, 2, 3, 4])
def test_collectives_match_numpy(np_):
    records = _records(np_)
    assert sorted(r["rank"] for r in records) == list(range(np_)), records
    assert all(r["checks"] > 40 for r in records)


@pytest.mark.parametrize("np_", [2, 3])
def test_ring_only_with_tiny_segments(np_):
    """Every allreduce with at least one element per rank takes the ring, cut in 4 KiB segments."""
    recs = _records(np_, ring_only=True)
    assert [r["rank"] for r in recs] == list(range(np_)), recs


@pytest.mark.parametrize("sites", list(SITES))
def test_site_aware_allreduce_matches_numpy(sites):
    np_ = len(sites.split(","))
    recs = _records(np_, sites)
    assert [r["rank"] for r in recs] == list(range(np_)), recs
    for r in recs:
        assert r["stats"]["hierarchical_allreduces"] > 5, r["stats"]
        assert r["stats"]["ring_allreduces"] == 0, r["stats"]


def test_one_site_uses_the_flat_ring():
    for r in _records(2):  # the run of test_collectives_match_numpy[2]
        assert r["stats"]["ring_allreduces"] > 5 and r["stats"]["hierarchical_allreduces"] == 0
