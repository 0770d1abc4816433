"""Small allreduces (issue 16: their data moves in the negotiation's round) on real ranks:
results against numpy for sizes around the block sizes, and mismatches that every rank detects
with the same text, leaving the buffers unchanged."""

import pytest
from conftest import run_mpi

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("np_", [2, 3])
def test_small_allreduces_match_numpy_and_mismatches_fail_everywhere(np_):
    res = run_mpi("small_allreduce", np_, timeout=300)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert [r["rank"] for r in recs] == list(range(np_)), res.explain()
    last = np_ - 1
    for rec in recs:
        assert rec["checks"] >= 60 and rec["usable"], rec
    for case in recs[0]["seen"]:
        texts = set()
        for rec in recs:
            seen = rec["seen"][case]
            assert seen["error"] == "MismatchError", (rec["rank"], case, seen)
            assert seen["unchanged"], (rec["rank"], case)
            assert f"rank {last} submitted " in seen["message"], (rec["rank"], case, seen)
            assert seen["message"].startswith(f"rank {rec['rank']}: "), seen
            texts.add(seen["message"].split(": ", 1)[1])
        assert len(texts) == 1, (case, texts)  # the same text on every rank
