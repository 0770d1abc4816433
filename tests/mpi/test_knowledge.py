"""Direct knowledge transfer (dlion.KnowledgeTransfer) with real ranks and real data."""

import pytest
from conftest import run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.tf]


@pytest.mark.parametrize("np_", [2, 3])
def test_knowledge_transfer(np_, tmp_path):
    res = run_mpi("knowledge", np_, str(tmp_path), timeout=240)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == np_, res.explain()
    assert recs[0]["n_weights"] > recs[0]["n_trainable"]  # BatchNorm moving statistics follow

    for alpha, ratio in (("1.0", 0.0), ("0.9", 0.1), ("0.5", 0.5)):
        views = [r["merge"][alpha] for r in recs]
        first = views[0]
        # every rank saw the same transfer, and it came at step 5, not 4
        for v in views:
            assert not v["early"] and v["history"] == 1
            for key in ("best", "scores", "merged_ranks", "bytes"):
                assert v[key] == first[key], (alpha, key, views)
        best = first["best"]
        assert best != 1 and 1 in first["merged_ranks"], first  # the bad replica is pulled in
        assert first["bytes"] == recs[0]["bytes_expected"]
        scores = first["scores"]
        assert scores[best] == min(scores)
        for r, v in enumerate(views):
            # merged exactly where worse than the best by more than the 2% margin
            assert v["merged"] == (scores[r] > scores[best] * 1.02), (r, v)
            # the merge is the stated convex combination (numpy reference, every variable)
            assert v["max_err"] <= 1e-6 * max(1.0, v["scale"]), (alpha, r, v)
            assert v["slots_changed"] == 0.0, (alpha, r, v)  # Adam's m, v untouched
        bad = views[1]
        assert bad["dist_before"] > 1.0
        if ratio == 0.0:
            assert bad["dist_after"] == 0.0  # alpha = 1 replaces exactly
        else:
            assert abs(bad["dist_after"] / bad["dist_before"] - ratio) < 1e-4, bad
        assert views[best]["dist_after"] == 0.0  # the best replica keeps its parameters

    for r, rec in enumerate(recs):
        m = rec["margin"]
        assert m["best"] == 1
        want = [2] if np_ == 3 else []  # rank 0 is within the margin, rank 2 is not
        assert m["merged_ranks"] == want
        assert m["bytes"] == (recs[0]["bytes_expected"] if want else 0)  # nobody: no broadcast
        if r in want:
            assert m["equal_best"] and not m["unchanged"]
        else:
            assert m["unchanged"], (r, m)
        assert m["tie_best"] == 0 and m["tie_merged"] == [] and m["tie_bytes"] == 0

    s = recs[0]["seconds"]
    assert len(s["steps"]) >= 1, s
    assert s["elapsed"] / len(s["steps"]) >= 0.2, s  # not more often than every 0.25 s (+- a step)
    for rec in recs:
        assert rec["seconds"]["steps"] == s["steps"]  # rank 0's clock decides for everyone
        assert all(b != 1 for b in rec["seconds"]["best"])
        assert all(1 in m for m in rec["seconds"]["merged_ranks"])
        assert rec["checkpoint"] == {"equal": True, "n": len(s["steps"])}
        assert "scoring failed on rank 1: ValueError: no score here" in rec["failure"], rec
