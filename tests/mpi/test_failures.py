"""Error paths on real ranks: clear errors naming rank and operation, never a hang."""

import pytest
from conftest import run_mpi

pytestmark = pytest.mark.mpi


def test_calls_before_init_raise_and_init_is_idempotent():
    res = run_mpi("failures", 2, "before_init")
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        for name, seen in rec["seen"].items():
            assert seen["error"] == "NotInitializedError", (name, seen)
            assert "dlion.init()" in seen["message"]
        assert rec["rank_ok"]
        assert rec["after_shutdown"]["error"] == "NotInitializedError"
        assert rec["initialized_after"] is False
    assert len(res.records()) == 2


@pytest.mark.parametrize("np_", [2, 3])
def test_mismatched_operations_name_rank_and_tensor(np_):
    res = run_mpi("failures", np_, "mismatch")
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == np_
    last = np_ - 1
    for rec in recs:
        c = rec["count"]
        assert c["error"] == "MismatchError" and c["is_dlion"]
        assert f"rank {last} submitted allreduce 'grads'" in c["message"]
        assert "float32 x 999" in c["message"] and "float32 x 1000" in c["message"]
        assert "rank 1 submitted allreduce 'b'" in rec["name"]["message"]
        assert "rank 0 submitted allreduce 'a'" in rec["name"]["message"]
        assert rec["kind"]["error"] == "MismatchError"
        assert "rank 1 submitted barrier" in rec["kind"]["message"]
        assert rec["usable"]


def test_bad_input_is_rejected_with_clear_errors():
    res = run_mpi("failures", 2, "bad_input")
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        seen = rec["seen"]
        assert "int64 cannot be averaged in place" in seen["int_dtype"]["message"]
        assert "not C-contiguous" in seen["non_contiguous"]["message"]
        assert "read-only" in seen["read_only"]["message"]
        assert "op must be one of" in seen["bad_op"]["message"]
        assert "valid roots: 0..1" in seen["bad_root"]["message"]
        assert "valid roots: 0..1" in seen["bad_object_root"]["message"]
        assert seen["unknown_option"]["error"] == "TypeError"
        assert "stall_timeoutt" in seen["unknown_option"]["message"]
        for s in seen.values():
            assert s["error"] in ("InvalidArgumentError", "TypeError"), s
        assert rec["usable"]


@pytest.mark.parametrize("np_", [2, 4])
def test_missing_rank_times_out_naming_it(np_):
    timeout = 4
    res = run_mpi(
        "failures",
        np_,
        "missing_rank",
        timeout=90,
        env={"DLION_STALL_TIMEOUT_S": str(timeout), "DLION_STALL_WARNING_S": "1"},
    )
    assert res.returncode != 0, res.explain()
    recs = res.records()
    assert len(recs) == np_ - 1, res.explain()
    last = np_ - 1
    for rec in recs:
        assert rec["error"] == "PeerTimeoutError", rec
        assert f"rank {last} to submit allreduce 'grads'" in rec["message"]
        assert timeout <= rec["seconds"] < timeout + 10
        assert rec["later"]["error"] == "EngineShutdownError"
    assert "WARNING: stalled" in res.stderr and f"rank {last}" in res.stderr
    # The job ends soon after the timeout, not when the sleeping rank wakes up (120 s).
    assert res.seconds < 60, res.explain()


def test_uncaught_exception_on_one_rank_ends_the_job_at_once():
    # The stall timeout is long: only abort_on_exception can end this job quickly.
    res = run_mpi("failures", 3, "raise", timeout=120, env={"DLION_STALL_TIMEOUT_S": "100"})
    assert res.returncode != 0, res.explain()
    # The user's traceback and dlion's abort line reach the launcher's stderr. (Once, on a
    # loaded machine, the traceback's last line did not arrive whole: the launcher merges the
    # ranks' streams in chunks; checked in pieces.)
    assert "Traceback" in res.stderr and "failed on purpose" in res.stderr, res.explain()
    assert "[dlion rank 1] uncaught RuntimeError: aborting" in res.stderr, res.explain()
    assert res.records() == []
    assert res.seconds < 60, res.explain()


def test_wait_with_timeout_returns_false_then_completes_and_idle_engine_sleeps():
    res = run_mpi("failures", 2, "late")
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert recs[0]["short"] is False and recs[0]["long"] is True
    assert all(r["sum_ok"] for r in recs)
    # CPU time, not wall time: an idle engine's thread sleeps on a condition variable.
    assert all(r["idle_cpu"] < 0.05 for r in recs), recs


def test_killed_rank_ends_the_job_instead_of_hanging():
    res = run_mpi("failures", 3, "killed", timeout=120, env={"DLION_STALL_TIMEOUT_S": "100"})
    assert res.returncode != 0, res.explain()
    assert res.records() == []
    assert res.seconds < 60, res.explain()


def test_ranks_with_different_engine_settings_are_refused_at_init():
    res = run_mpi("failures", 3, "config_differs")
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == 3
    for r in recs:
        assert r["error"] == "InvalidArgumentError", r
        assert "rank 1 runs dlion with other settings" in r["message"]
        assert "ring_segment_bytes=4096" in r["message"]
        assert r["initialized"] is False


# A rank fails in the middle of training (DistributedOptimizer, real TF): every other rank gets
# an error naming it and the step, and the job ends non-zero instead of hanging. A frozen rank
# is lost within the liveness timeout (plus a margin for 3 ranks on a shared machine); a rank
# that left (its process ended, so dlion said goodbye) is named at once.
STALL_S = 4
LIVE_S = 4
FAST = {
    # Longer than the liveness timeout: a frozen rank must be found by liveness, not by a race.
    "DLION_STALL_TIMEOUT_S": "30",
    "DLION_STALL_WARNING_S": "1",
    "DLION_LIVENESS_TIMEOUT_S": str(LIVE_S),
}
# What the runtime's defaults are (tests/conftest.py shortens them for every other test).
DEFAULTS = {
    "DLION_STALL_TIMEOUT_S": "300",
    "DLION_STALL_WARNING_S": "15",
    "DLION_LIVENESS_TIMEOUT_S": "20",
}


def _survivors_named_the_victim(res, np_, how, live_s=LIVE_S):
    assert res.returncode != 0, res.explain()
    recs = res.records()
    assert len(recs) == np_ - 1, res.explain()
    victim = np_ - 1
    for rec in recs:
        assert rec["error"] == "RankLostError", rec
        assert f"rank {victim} (site " in rec["message"], rec
        assert "at step 3 of dlion.DistributedOptimizer.apply_gradients" in rec["message"], rec
        if how == "stop":  # frozen: found by the missing heartbeats
            assert "no heartbeat for" in rec["message"], rec
            # Silence counts from the last heartbeat, which came up to one interval (1/8 of the
            # timeout) before the step began.
            assert live_s * 7 / 8 - 0.5 <= rec["seconds"] < live_s + 10, rec
            assert rec["later"]["error"] == "RankLostError", rec
        else:  # its process ended: it said goodbye, so the wait ends at once
            assert "shut down dlion before" in rec["message"], rec
            assert rec["seconds"] < STALL_S, rec
            assert rec["later"]["error"] in ("EngineShutdownError", "RankLostError"), rec


@pytest.mark.tf
@pytest.mark.parametrize("policy", ["allreduce", "peer"])
@pytest.mark.parametrize("how", ["exit", "stop"])
def test_rank_that_exits_or_stops_mid_training_is_named(how, policy):
    res = run_mpi("dying_rank", 3, how, policy, timeout=150, env=FAST)
    _survivors_named_the_victim(res, 3, how)
    assert res.seconds < 100, res.explain()  # before the stopped rank's 100 s watchdog


@pytest.mark.tf
def test_frozen_rank_is_lost_within_the_default_liveness_timeout():
    # Every timeout at its default: a SIGSTOPped rank is named within liveness_timeout_s = 20 s.
    res = run_mpi("dying_rank", 3, "stop", timeout=150, env=DEFAULTS)
    _survivors_named_the_victim(res, 3, "stop", live_s=20)
    assert "liveness_timeout_s=20)" in res.stderr + str(res.records())


@pytest.mark.tf
@pytest.mark.parametrize("policy", ["allreduce", "peer"])
def test_slow_but_alive_rank_draws_warnings_naming_it_and_no_error(policy):
    # Alive for 2x the liveness timeout without taking part: warnings, then training goes on.
    env = {**FAST, "DLION_STALL_TIMEOUT_S": "60", "DLION_TEST_SLOW_S": str(2 * LIVE_S)}
    res = run_mpi("dying_rank", 3, "slow", policy, timeout=150, env=env)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == 2 and all(r["error"] is None for r in recs), res.explain()
    assert all(r["later"]["error"] is None for r in recs), res.explain()
    assert all(r["seconds"] >= 2 * LIVE_S - 1 for r in recs), recs
    warnings = [line for line in res.stderr.splitlines() if "WARNING: stalled" in line]
    assert warnings, res.explain()
    assert all("rank 2" in w for w in warnings), warnings
    if policy == "allreduce":  # the heartbeats tell where the late rank is
        assert any("rank 2 (site " in w and "alive: heard from" in w for w in warnings), warnings


@pytest.mark.tf
def test_rank_that_raises_mid_training_without_abort_is_named():
    env = {**FAST, "DLION_ABORT_ON_EXCEPTION": "0"}
    res = run_mpi("dying_rank", 3, "raise", timeout=150, env=env)
    assert "RuntimeError: user code failed on purpose on rank 2" in res.stderr
    _survivors_named_the_victim(res, 3, "raise")
    assert res.seconds < 100, res.explain()


@pytest.mark.tf
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_rank_that_raises_or_is_killed_mid_training_ends_the_job_at_once(how):
    # A long stall timeout: only abort_on_exception (raise) or the launcher (kill) ends it.
    res = run_mpi("dying_rank", 3, how, timeout=150, env={"DLION_STALL_TIMEOUT_S": "100"})
    assert res.returncode != 0, res.explain()
    assert res.records() == []
    if how == "raise":
        assert "[dlion rank 2] uncaught RuntimeError: aborting the job" in res.stderr
    assert res.seconds < 80, res.explain()
