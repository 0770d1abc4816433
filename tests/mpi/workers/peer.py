"""Peer exchange (the per-link engine) on real ranks, against numpy references.

Every rank regenerates every other rank's gradients from (seed, rank, step), so each can
compute the exact expected aggregate locally. Scenarios (argv[1]):
  exact       dense and top-k (no error feedback): aggregate == weighted rank-order sum;
              then dlion.CastAllreduce (fp16/bf16 reduce-scatter + allgather) == the numpy
              model, and the bytes it sent per step
  feedback    top-k (+8-bit) with error feedback: received + sender residual == sent gradients
  staleness S rank 1 is slow; with staleness S the others run ahead by at most S steps, and
              every message is applied exactly once
  emulated    a link capped by DLION_EMULATE is measured at about its cap
  kill        rank 1 SIGKILLs itself mid-exchange; the others raise within the timeout
  bad_input   invalid requests are rejected with clear errors
"""

import hashlib
import os
import signal
import sys
import time

import numpy as np
from _report import report

import dlion
import dlion_core

dlion.init()
rank, size = dlion.rank(), dlion.size()
pe = dlion.runtime.peer_engine()
E = dlion_core.WIRE_ENCODINGS


def grad(seed: int, r: int, step: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, r, step]).standard_normal(n).astype(np.float32)


def topk_ref(x: np.ndarray, k: int) -> np.ndarray:
    """Dense vector holding x's k entries of largest magnitude (lower index wins ties)."""
    idx = np.sort(np.argsort(-np.abs(x), kind="stable")[:k])
    out = np.zeros_like(x)
    out[idx] = x[idx]
    return out


def weight_of(r: int) -> float:
    return (r + 1) / (size * (size + 1) / 2)  # uneven weights that sum to 1


def links(encoding: str, k: int = 0, bits: int = 0, ef: bool = False):
    return [(E[encoding], k, bits, 512, ef)] * size


RAW = 1000  # the engine groups used directly here: clear of those dlion's policies number


def exact() -> dict:
    checked = 0
    cases = [("dense_f32", 0), ("sparse_f32", 1), ("sparse_f32", 37), ("sparse_f32", 1000)]
    group = RAW
    for n in (1, 1000, 65537):
        for encoding, k in cases:
            k = min(k, n)
            for step in range(3):
                seed = 7 + group - RAW
                g = grad(seed, rank, step, n)
                out = np.full(n, np.nan, np.float32)
                h = pe.exchange(
                    g, out, group, step, links(encoding, k), weight=weight_of(rank), name="g"
                )
                assert h.wait(30)
                ref = np.zeros(n, np.float32)
                for p in range(size):
                    gp = grad(seed, p, step, n)
                    sent = gp if p == rank or encoding == "dense_f32" else topk_ref(gp, k)
                    ref += np.float32(weight_of(p)) * sent
                np.testing.assert_array_equal(out, ref, err_msg=f"{encoding} n={n} k={k}")
                checked += 1
            group += 1
    # In place (out is grad), as the optimizer uses it.
    g = grad(99, rank, 0, 5000)
    pe.exchange(g, g, group, 0, links("dense_f32"), weight=0.5, name="inplace").wait(30)
    ref = sum(np.float32(0.5) * grad(99, p, 0, 5000) for p in range(size))
    np.testing.assert_allclose(g, ref, rtol=1e-6)
    stats = dlion.link_stats()
    return {
        "checked": checked,
        "sent": {p: s.messages_sent for p, s in stats.items()},
        "received": {p: s.messages_received for p, s in stats.items()},
        "staleness_max": max(s.staleness_max for s in stats.values()),
        "cast": cast(),
    }


def half(x: np.ndarray, codec: str) -> np.ndarray:
    """x rounded to fp16 / bf16 (round to nearest even) and back, in numpy (finite x)."""
    if codec == "fp16":
        return x.astype(np.float16).astype(np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def bytes_sent() -> int:
    return sum(s.bytes_sent for p, s in dlion.link_stats().items() if p != rank)


def cast() -> dict:
    """dlion.CastAllreduce == half(rank-order sum of w_r * half(x_r)), the same bits on every
    rank (-0.0 too: +0.0 everywhere); and what a rank sent per step, against the old
    all-to-all of fp16 messages."""
    digests, checked = [], 0
    for codec in ("fp16", "bf16"):
        for weighted in (False, True):
            policy = dlion.CastAllreduce(codec, weight=weight_of(rank) if weighted else None)
            for n in (1, 1001, 65537):
                for step in range(2):
                    seed = 50 + n + step
                    x = [grad(seed, p, step, n) * np.float32(30) for p in range(size)]
                    for p in range(size):  # fp16: a sum that rounds to -0.0
                        x[p][0] = -(2.0**-24) if p == 0 else 0.0
                    buf = x[rank].copy()
                    policy.start(buf, name=f"cast.{codec}.{weighted}.{n}").wait(30)
                    ref = np.zeros(n, np.float32)
                    for p in range(size):
                        w = weight_of(p) if weighted else 1.0 / size
                        ref += np.float32(w) * half(x[p], codec)
                    ref = half(ref, codec)
                    np.testing.assert_array_equal(buf, ref, err_msg=f"{codec} {weighted} n={n}")
                    digests.append(hashlib.sha256(buf.tobytes()).hexdigest())
                    checked += 1
    n, steps = 100_000, 3
    per_step = {}
    for label, policy in (
        ("fp16", dlion.CastAllreduce("fp16")),
        ("all_to_all", dlion.PeerExchange("fp16", error_feedback=False)),
    ):
        before = bytes_sent()
        for step in range(steps):
            policy.start(grad(5, rank, step, n), name=f"cast.bytes.{label}").wait(30)
        per_step[label] = (bytes_sent() - before) / steps
    return {
        "checked": checked,
        "digests": digests,
        "n": n,
        "bytes_per_step": per_step["fp16"],
        "all_to_all_bytes_per_step": per_step["all_to_all"],
    }


def feedback() -> dict:
    """Weight 1 everywhere: out - own gradient is exactly what the peers sent this step."""
    n, steps, k = 20000, 12, 200
    result = {}
    for group, (encoding, bits) in enumerate((("sparse_f32", 0), ("sparse_qsgd8", 0))):
        received = np.zeros(n, np.float64)
        for step in range(steps):
            g = grad(3, rank, step, n)
            out = np.empty_like(g)
            pe.exchange(g, out, group, step, links(encoding, k, bits, ef=True), name="ef").wait(30)
            received += out.astype(np.float64) - g.astype(np.float64)
        # What each peer still holds for this rank: the residual of its link to us.
        mine = {p: pe.residual(group, p) for p in range(size) if p != rank}
        gathered = dlion.allgather_object(mine)
        residual_to_me = sum(gathered[p][rank].astype(np.float64) for p in range(size) if p != rank)
        sent = sum(
            grad(3, p, s, n).astype(np.float64)
            for p in range(size)
            if p != rank
            for s in range(steps)
        )
        err = np.abs(received + residual_to_me - sent).max()
        result[encoding] = {
            "max_error": float(err),
            "scale": float(np.abs(sent).max()),
            "residual_nonzero": int(np.count_nonzero(residual_to_me)),
            "last_k": dlion.link_stats()[(rank + 1) % size].last_k,
        }
    return result


def staleness(s: int) -> dict:
    n, steps = 1000, 14
    total = np.zeros(n, np.float64)
    lags = []
    for step in range(steps):
        if rank == 1:
            time.sleep(0.05)  # the slow rank: emulated compute
        g = np.full(n, (rank + 1) * (step + 1), np.float32)
        out = np.empty_like(g)
        pe.exchange(
            g,
            out,
            0,
            step,
            links("dense_f32"),
            weight=1.0,
            staleness=s,
            sync=step == steps - 1,
            name="stale",
        ).wait(30)
        total += out
        if rank != 1:
            lags.append(step - dlion.link_stats()[1].last_step_received)
    expected = sum((p + 1) * (t + 1) for p in range(size) for t in range(steps))
    stats = dlion.link_stats()
    return {
        "total_min": float(total.min()),
        "total_max": float(total.max()),
        "expected": float(expected),
        "lags": lags,
        "staleness_max": {p: st.staleness_max for p, st in stats.items()},
        "received": {p: st.messages_received for p, st in stats.items()},
    }


def emulated() -> dict:
    n = 100_000  # 400 KB dense messages
    for step in range(8):
        g = grad(1, rank, step, n)
        pe.exchange(g, g, 0, step, links("dense_f32"), name="capped").wait(60)
    s = dlion.link_stats()[1 - rank]
    return {
        "bandwidth": s.bandwidth_Bps,
        "achieved": s.achieved_bandwidth_Bps,
        "latency": s.latency_s,
        "emulated_bandwidth": s.emulated_bandwidth_Bps,
        "emulated_latency": s.emulated_latency_s,
        "samples": s.bandwidth_samples,
    }


def kill() -> dict:
    n = 10000
    start = time.monotonic()
    try:
        for step in range(1000):
            if rank == 1 and step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            g = grad(1, rank, step, n)
            start = time.monotonic()
            pe.exchange(g, g, 0, step, links("sparse_f32", 100), name="doomed").wait()
    except dlion.DlionError as e:
        report(
            rank,
            {"error": type(e).__name__, "message": str(e), "seconds": time.monotonic() - start},
        )
        sys.stdout.flush()
        os._exit(3)  # the job is broken: leave without MPI_Finalize
    return {"error": None}


def stopped(s: int) -> dict:
    """Rank 1 stops exchanging after step 2 (it sleeps); with staleness s the others go on up
    to step 2 + s, then wait for it and time out naming it."""
    from mpi4py import MPI

    # The others' own communicator, made while everyone is still there: they all report
    # before any of them exits (and the launcher ends the job, the others with it).
    others = MPI.COMM_WORLD.Split(MPI.UNDEFINED if rank == 1 else 0, rank)
    n, done = 1000, -1
    start = time.monotonic()
    try:
        for step in range(100):
            if rank == 1 and step == 3:
                time.sleep(60)  # stopped; the job is torn down before this ends
            g = np.full(n, 1.0, np.float32)
            start = time.monotonic()
            pe.exchange(g, g, 0, step, links("dense_f32"), staleness=s, name="stale").wait()
            done = step
    except dlion.DlionError as e:
        report(
            rank,
            {
                "error": type(e).__name__,
                "message": str(e),
                "last_done": done,
                "seconds": time.monotonic() - start,
            },
        )
        sys.stdout.flush()
        others.Barrier()
        os._exit(3)
    return {"error": None}


def bad_input() -> dict:
    seen = {}

    def attempt(name, fn):
        try:
            fn()
            seen[name] = {"error": None}
        except Exception as e:
            seen[name] = {"error": type(e).__name__, "message": str(e)}

    g = np.zeros(10, np.float32)
    attempt("float64", lambda: pe.exchange(g.astype(np.float64), g, 0, 0, links("dense_f32")))
    attempt("links", lambda: pe.exchange(g, g, 0, 0, links("dense_f32")[:-1]))
    attempt("weight", lambda: pe.exchange(g, g, 0, 0, links("dense_f32"), weight=float("nan")))
    attempt("bits", lambda: pe.exchange(g, g, 0, 0, [(E["qsgd"], 0, 3, 512, False)] * size))
    attempt("encoding", lambda: pe.exchange(g, g, 0, 0, [(9, 0, 0, 512, False)] * size))
    attempt("staleness", lambda: pe.exchange(g, g, 0, 0, links("dense_f32"), staleness=-1))
    attempt("codec", lambda: dlion.PeerExchange("zip"))
    attempt("peer_bits", lambda: dlion.PeerExchange("dense", bits=8))
    attempt("emulate", lambda: dlion.emulate.parse("A-B:fast:1ms"))
    # The engine still works afterwards.
    pe.exchange(g, g, 0, 0, links("dense_f32"), name="after").wait(30)
    return {"seen": seen, "usable": True}


scenario = sys.argv[1]
if scenario == "staleness":
    record = staleness(int(sys.argv[2]))
elif scenario == "stopped":
    record = stopped(int(sys.argv[2]))
else:
    record = globals()[scenario]()
report(rank, record)
dlion.shutdown()
