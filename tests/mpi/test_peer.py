"""The peer engine on real ranks: exact aggregates, error feedback, staleness, emulation, death."""

import pytest
from conftest import run_mpi

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module", params=[2, 3, 4])
def exact(request):
    """One launch per size: the engine's exact aggregates, then dlion.CastAllreduce."""
    np_ = request.param
    res = run_mpi("peer", np_, "exact")
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == np_
    return np_, recs


def test_aggregate_is_the_weighted_sum_of_what_each_peer_selected(exact):
    _, recs = exact
    for rec in recs:
        assert rec["checked"] == 36
        # 12 groups x 3 steps + 1: every message sent was received, and applied in its step.
        assert set(rec["sent"].values()) == {37}
        assert set(rec["received"].values()) == {37}
        assert rec["staleness_max"] == 0


def test_cast_allreduce_is_identical_everywhere_and_sends_half_a_float32_ring(exact):
    np_, recs = exact
    cast = [rec["cast"] for rec in recs]
    assert len({tuple(c["digests"]) for c in cast}) == 1  # the same bits on every rank
    n = cast[0]["n"]
    ring = 2 * (np_ - 1) / np_ * n * 4  # what a float32 ring allreduce sends per rank
    for c in cast:
        assert c["checked"] == 24  # == the numpy model (fp16/bf16, weighted or not, 3 sizes)
        # A reduce-scatter + an allgather in half precision: half the ring's bytes, in
        # 2 (p - 1) messages of a header each.
        assert ring / 2 <= c["bytes_per_step"] <= 0.55 * ring + 2 * (np_ - 1) * 64, c
        if np_ > 2:  # the old all-to-all of fp16 messages: (p - 1) * 2n
            assert c["bytes_per_step"] < c["all_to_all_bytes_per_step"], c


@pytest.mark.parametrize("np_", [2, 3])
def test_error_feedback_loses_nothing(np_):
    res = run_mpi("peer", np_, "feedback")
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        for encoding in ("sparse_f32", "sparse_qsgd8"):
            r = rec[encoding]
            # received + what the senders still hold == everything they were given
            assert r["max_error"] < 1e-4 * r["scale"], (encoding, r)
            assert r["residual_nonzero"] > 0  # top-1% really left most entries behind
            assert r["last_k"] == 200


def test_staleness_zero_waits_for_the_slow_rank():
    res = run_mpi("peer", 3, "staleness", "0")
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        assert rec["total_min"] == rec["total_max"] == rec["expected"]
        assert all(lag == 0 for lag in rec["lags"]), rec["lags"]
        assert max(rec["staleness_max"].values()) == 0


def test_staleness_two_runs_ahead_by_at_most_two_and_applies_everything_once():
    res = run_mpi("peer", 3, "staleness", "2")
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        # Exactly once: the sum of everything applied is the sum of everything sent.
        assert rec["total_min"] == rec["total_max"] == rec["expected"], rec
        assert all(0 <= lag <= 2 for lag in rec["lags"]), rec["lags"]
        assert all(v == 14 for v in rec["received"].values()), rec["received"]
    fast = [rec for rec in res.records() if rec["rank"] != 1]
    # The fast ranks did run ahead of the slow one.
    assert any(max(rec["lags"]) >= 1 for rec in fast), [rec["lags"] for rec in fast]
    assert all(rec["staleness_max"]["1"] <= 2 for rec in fast)


def test_emulated_link_is_measured_at_its_cap():
    res = run_mpi("peer", 2, "emulated", env={"DLION_EMULATE": "#0-#1:20mbit:5ms"})
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        cap = 20e6 / 8
        assert rec["emulated_bandwidth"] == cap and rec["emulated_latency"] == 0.005
        assert rec["samples"] >= 8
        assert abs(rec["bandwidth"] - cap) < 0.25 * cap, rec
        assert abs(rec["achieved"] - cap) < 0.25 * cap, rec
        # Never below the cap; above it by the ranks' scheduling delays on a loaded machine.
        assert 0.004 < rec["latency"] < 0.015, rec


def test_killed_peer_makes_the_others_raise():
    timeout = 5
    res = run_mpi(
        "peer",
        3,
        "kill",
        timeout=90,
        env={"DLION_STALL_TIMEOUT_S": str(timeout), "DLION_STALL_WARNING_S": "1"},
        survive_signals=True,
    )
    assert res.returncode != 0, res.explain()
    recs = res.records()
    assert sorted(r["rank"] for r in recs) == [0, 2], res.explain()
    for rec in recs:
        assert rec["error"] in ("RankLostError", "PeerTimeoutError", "MpiError"), rec
        assert "rank 1" in rec["message"], rec
        assert rec["seconds"] < timeout + 10, rec


def test_stopped_peer_holds_the_others_only_at_the_staleness_bound():
    timeout = 4
    res = run_mpi(
        "peer",
        3,
        "stopped",
        "3",
        timeout=90,
        env={"DLION_STALL_TIMEOUT_S": str(timeout), "DLION_STALL_WARNING_S": "1"},
    )
    assert res.returncode != 0, res.explain()
    recs = res.records()
    assert sorted(r["rank"] for r in recs) == [0, 2], res.explain()
    for rec in recs:
        # Rank 1 sent steps 0..2: the others finish steps 0..5 (2 + staleness 3), then wait.
        assert rec["last_done"] == 5, rec
        assert rec["error"] == "PeerTimeoutError", rec
        assert "rank 1 (last sent step 2) to send step 3" in rec["message"], rec
        assert timeout <= rec["seconds"] < timeout + 10, rec


def test_bad_requests_are_rejected_clearly():
    res = run_mpi("peer", 2, "bad_input")
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        seen = rec["seen"]
        assert "float32" in seen["float64"]["message"]
        assert "one link plan per rank" in seen["links"]["message"]
        assert "weight must be finite" in seen["weight"]["message"]
        assert "bits" in seen["bits"]["message"]
        assert "unknown encoding 9" in seen["encoding"]["message"]
        assert "staleness must be >= 0" in seen["staleness"]["message"]
        assert "use one of" in seen["codec"]["message"]
        assert "takes no bits" in seen["peer_bits"]["message"]
        assert "bad rate 'fast'" in seen["emulate"]["message"]
        for s in seen.values():
            assert s["error"] in ("InvalidArgumentError", "ValueError"), s
        assert rec["usable"]


def test_init_shutdown_init_again_starts_afresh():
    """``init(); shutdown(); init()`` keeps the engines apart and leaves nothing of a run behind:
    steps, group ids and join rounds start at 0, buffers of dropped objects are garbage."""
    res = run_mpi("reinit", 3, timeout=180)
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        runs = rec["runs"]
        assert len({r["sum"] for r in runs}) == 1, rec  # the same exchange, three times
        assert [r["simd"] for r in runs] == ["baseline", rec["simd_before"], rec["simd_before"]]
        assert rec["simd_after"] == rec["simd_before"]
        for i, r in enumerate(runs):
            assert r["groups_at_start"] == 0, r
            assert r["group_ids"] == {"h": 0, "g": 1, f"x{i}": 2}, r
            assert r["other_names"] == [f"step:x{i}"], r  # nothing of the earlier runs
            assert r["policy_step"] == 4 and r["steps"] == {"1": 4, "2": 0}, r  # 5 steps: 0..4
            assert r["join_rounds"] == 5, r  # a control round per exchange step: 3 + 2
            assert not r["timeline_left"] and not r["state_left"], r
            assert not r["opt_alive_while_running"], r  # the registry only observes it
            # The tapes' exchanger is the run's (a tape lives one step), dropped at shutdown.
            assert r["responders_after_drop"] == [f"tape{i}"], r
            assert r["tapes_share_an_exchanger"], r
            assert not any(r["alive_after_shutdown"]), r
