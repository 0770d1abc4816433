"""Engine collectives on real ranks, against numpy references."""

import pytest
from conftest import run_mpi

pytestmark = pytest.mark.mpi


_plain: dict[int, object] = {}


def _plain_run(np_: int):
    """The worker on np_ ranks, one site, default settings; one job for the tests that read it."""
    if np_ not in _plain:
        _plain[np_] = run_mpi("collectives", np_, timeout=300)
    return _plain[np_]


@pytest.mark.parametrize("np_", [1, 2, 3, 4])
def test_collectives_match_numpy(np_):
    res = _plain_run(np_)
    assert res.returncode == 0, res.explain()
    records = res.records()
    assert sorted(r["rank"] for r in records) == list(range(np_)), res.explain()
    assert all(r["checks"] > 40 for r in records)


@pytest.mark.parametrize("np_", [2, 3])
def test_ring_only_with_tiny_segments(np_):
    """Every allreduce with at least one element per rank takes the ring, cut in 4 KiB segments."""
    env = {"DLION_RING_THRESHOLD_BYTES": "0", "DLION_RING_SEGMENT_BYTES": "4096"}
    res = run_mpi("collectives", np_, timeout=300, env=env)
    assert res.returncode == 0, res.explain()
    assert [r["rank"] for r in res.records()] == list(range(np_)), res.explain()


@pytest.mark.parametrize(
    "sites, extra",
    [
        ("A,A,B", {}),
        ("A,A,B,B", {}),
        ("A,B,A,B", {}),  # sites need not be contiguous in rank order
        ("A,B,B,C", {"DLION_RING_THRESHOLD_BYTES": "0", "DLION_RING_SEGMENT_BYTES": "4096"}),
    ],
)
def test_site_aware_allreduce_matches_numpy(sites, extra):
    np_ = len(sites.split(","))
    res = run_mpi("collectives", np_, timeout=300, env={"DLION_TEST_SITES": sites, **extra})
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert [r["rank"] for r in recs] == list(range(np_)), res.explain()
    for r in recs:
        assert r["stats"]["hierarchical_allreduces"] > 5, r["stats"]
        assert r["stats"]["ring_allreduces"] == 0, r["stats"]


def test_one_site_uses_the_flat_ring():
    res = _plain_run(2)  # the same job as test_collectives_match_numpy[2]
    assert res.returncode == 0, res.explain()
    for r in res.records():
        assert r["stats"]["ring_allreduces"] > 5 and r["stats"]["hierarchical_allreduces"] == 0
