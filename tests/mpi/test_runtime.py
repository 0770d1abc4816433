"""Runtime topology on real ranks."""

import pytest
from conftest import run_mpi

pytestmark = pytest.mark.mpi


def test_sites_local_ranks_and_subcommunicator():
    res = run_mpi("topology", 3)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert [r["rank"] for r in recs] == [0, 1, 2]
    for r in recs:
        assert r["size"] == 3
        assert r["sites"] == ["A", "A", "B"]
        assert r["site"] == r["sites"][r["rank"]]
        assert r["local_size"] == 3 and r["local_rank"] == r["rank"]  # one host
        sub = r["sub"]
        even = r["rank"] % 2 == 0
        assert sub["size"] == (2 if even else 1)
        assert sub["rank"] == (r["rank"] // 2)
        assert sub["sites"] == (["A", "B"] if even else ["A"])
