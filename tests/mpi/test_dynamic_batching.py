"""Weighted dynamic batching on real ranks: emulated slow ranks, weighted aggregate, dynamism."""

import pytest
from conftest import run_mpi

pytestmark = pytest.mark.mpi


# Up to 4 ranks share 2 (busy) cores: wall time mostly measures the OS scheduler, so these
# tests measure compute in process CPU time (DynamicBatcher(clock="cpu")).
CPU = {"CLOCK": "cpu"}


def check_conserved(recs: list[dict], global_batch: int) -> None:
    """Every step: the ranks agree on the split, and it sums to the global batch."""
    steps = len(recs[0]["history"])
    for s in range(steps):
        split = recs[0]["splits"][s]
        assert sum(split) == global_batch, (s, split)
        assert all(rec["splits"][s] == split for rec in recs), s
        assert [rec["history"][s] for rec in recs] == split, s
    assert all(rec["samples_seen"] == steps * global_batch for rec in recs)


@pytest.mark.parametrize(
    ("np_", "spec", "slow"), [(2, "compute=1,0.5", [1]), (4, "compute=1,1,1,0.5", [3])]
)
def test_a_rank_emulated_twice_slower_gets_half_the_batch(np_, spec, slow):
    env = {**CPU, "DLION_EMULATE": spec, "EWMA": "0.1"}
    res = run_mpi("batching", np_, "emulated", "80", env=env, timeout=90)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    check_conserved(recs, 64 * np_)
    final = recs[0]["final"]
    normal = [b for r, b in enumerate(final) if r not in slow]
    for r in slow:
        ratio = final[r] / (sum(normal) / len(normal))
        # About half; an even split would be 1.0. The emulated slowdown on a shared 2-core
        # machine measured a 0.42 rate ratio once (split 92:36, 0.39), hence the margin.
        assert 0.33 <= ratio <= 0.67, (final, recs[0]["rates"])
    assert recs[0]["rebalances"] >= 2


def test_the_split_follows_a_rank_that_slows_down_mid_run():
    slow_at, steps, check = 40, 100, 5
    res = run_mpi(
        "batching",
        2,
        "emulated",
        str(steps),
        env={**CPU, "DLION_EMULATE": f"slow=1:3@{slow_at}", "REBALANCE_EVERY": "15"},
        timeout=90,
    )
    assert res.returncode == 0, res.explain()
    recs = res.records()
    check_conserved(recs, 128)
    splits = recs[0]["splits"]
    before = splits[slow_at - 1]
    # About even while both run at full speed (a loaded machine measured 74:54 once; the
    # slowdown below makes it 1:3, far outside this band).
    assert 0.67 <= before[1] / before[0] <= 1.5, before
    # Within a few checks of the slowdown, rank 1's batch has dropped well below half.
    followed = next(s for s in range(slow_at, steps) if splits[s][1] < 0.4 * 128)
    assert followed <= slow_at + 3 * check, (followed, splits[slow_at : slow_at + 20])
    # In the end the split is about 3:1.
    final = recs[0]["final"]
    assert 0.75 * 32 <= final[1] <= 1.25 * 32, (final, recs[0]["rates"])


@pytest.mark.parametrize("np_", [2, 4])
def test_weighted_aggregate_is_the_mean_gradient_over_the_global_batch(np_):
    res = run_mpi("batching", np_, "weighted", timeout=60)
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        for label in ("peer", "allreduce"):
            r = rec[label]
            assert len(set(r["batches"])) > 1, r  # the batches really were uneven
            assert abs(r["weight_sum"] - 1.0) < 1e-12, r
            assert max(r["errors"]) < 1e-5, (label, r)
        assert rec["plain_identical"]


def test_options_errors_checkpoint_and_step_mismatch():
    res = run_mpi("batching", 2, "api", timeout=60)
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        assert rec["checkpoint_same"]
        assert rec["resumed_decision_same"]
        assert "MismatchError" not in rec["mismatch"]  # the message itself, not the type
        assert "every rank must call step_done once per step" in rec["mismatch"]
