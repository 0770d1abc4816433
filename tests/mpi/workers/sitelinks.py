"""Shared emulated site links on real ranks: sites A,A,B,B (ranks 0, 1 in A; 2, 3 in B) under
``DLION_EMULATE=A-B:<rate>`` (argv[2], bytes/s, the rate the test set). Scenarios (argv[1]):

flows
    Each phase starts together after a barrier. A flow is a pair (sender in A, receiver in B):
    for ``STEPS`` steps the sender sends its partner a dense message of ``N`` floats and the
    receiver answers with one entry (top-1), each waiting for the other's message of the step;
    the receiver times its flow from the barrier to the last message. Phases:
      alone     0 -> 2 only: the flow has the A->B wire to itself
      together  0 -> 2 and 1 -> 3 at once: both share the A->B wire
      own       0 -> 2 and 1 -> 3 at once, with ``#1-#3:<rate>`` added: 1 -> 3 has a link of
                its own, so neither flow shares
    Reports, per phase, each receiver's rate (message bytes / seconds) and the bandwidth its
    sender's link measured in the phase, and whether the links are on a shared wire.
allreduce
    A dense ``dlion.allreduce`` (sum) of ``N_ALLREDUCE`` floats, paced on the same links:
    reports its seconds (slowest rank) and whether the result is exact.
control
    Small operations on MPI's own collectives (allreduce, allgather, broadcast, barrier):
    reports each one's seconds (the fastest of 3), whether their results are right, and
    whether a wait with a timeout shorter than the emulated latency returns False first.
"""

import os
import sys
import time

from mpi4py import MPI

# Ranks 0, 1: site A; 2, 3: site B.
os.environ["DLION_SITE"] = "AABB"[MPI.COMM_WORLD.rank]

import numpy as np  # noqa: E402
from _report import report  # noqa: E402

import dlion  # noqa: E402
import dlion_core  # noqa: E402

dlion.init()
rank, size = dlion.rank(), dlion.size()
assert size == 4, "run on 4 ranks"
pe = dlion.runtime.peer_engine()
comm = MPI.COMM_WORLD
E = dlion_core.WIRE_ENCODINGS
N, STEPS = 50_000, 16
SCENARIO, RATE = sys.argv[1], float(sys.argv[2])
N_ALLREDUCE = 250_000
PARTNER = {0: 2, 2: 0, 1: 3, 3: 1}


def plans(peer: int, dense: bool) -> list[tuple]:
    """Send to `peer` only: dense, or its one largest entry."""
    enc = E["dense_f32"] if dense else E["sparse_f32"]
    return [(enc, 0 if dense else 1, 0, 512, False, 0, 0.0, 0, p == peer) for p in range(size)]


def flow(group: int) -> float | None:
    """Run this rank's flow of the phase; the receiver returns its rate (bytes/s)."""
    peer = PARTNER[rank]
    sender = rank < 2
    expect = [p == peer for p in range(size)]
    g = np.random.default_rng([group, rank]).standard_normal(N).astype(np.float32)
    out = np.empty_like(g)
    start = time.perf_counter()
    for step in range(STEPS):
        h = pe.exchange(
            g, out, group, step, plans(peer, sender), sync=True, expect=expect, name="flow"
        )
        assert h.wait(120)
    seconds = time.perf_counter() - start
    return None if sender else STEPS * N * 4 / seconds


def measured(peer: int, before: dlion.LinkStats) -> float:
    """Bandwidth the link to `peer` measured since `before` (timed bytes / timed seconds)."""
    after = dlion.link_stats()[peer]
    secs = after.timed_seconds - before.timed_seconds
    return (after.timed_bytes - before.timed_bytes) / secs if secs > 0 else 0.0


def flows() -> dict[str, dict]:
    """The three phases of the flows scenario."""
    result: dict[str, dict] = {}
    for group, (phase, active) in enumerate(
        [("alone", {0, 2}), ("together", {0, 1, 2, 3}), ("own", {0, 1, 2, 3})]
    ):
        if phase == "own":
            dlion.emulate.configure(f"A-B:{RATE}bps #1-#3:{RATE}bps")
        peer = PARTNER[rank]
        before = dlion.link_stats()[peer]
        comm.Barrier()
        rate = flow(group) if rank in active else None
        comm.Barrier()
        stats = dlion.link_stats()[peer]
        result[phase] = {
            "rate": rate,
            "measured": measured(peer, before) if rank < 2 and rank in active else None,
            "shared": stats.emulated_shared,
            "cap": stats.emulated_bandwidth_Bps,
        }
    return result


def allreduce() -> dict:
    """One large dense allreduce across the sites, timed on every rank."""
    x = np.random.default_rng(rank).standard_normal(N_ALLREDUCE).astype(np.float32)
    expected = sum(
        np.random.default_rng(r).standard_normal(N_ALLREDUCE).astype(np.float32)
        for r in range(size)
    )
    dlion.allreduce(np.ones(4, np.float32), op="sum", name="warmup")  # small: MPI, unpaced
    comm.Barrier()
    start = time.perf_counter()
    dlion.allreduce(x, op="sum", name="paced")
    seconds = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    stats = dlion.runtime.engine().stats()
    return {
        "seconds": seconds,
        "max_error": float(np.abs(x - expected).max()),
        "hierarchical": stats["hierarchical_allreduces"],
        "ring": stats["ring_allreduces"],
    }


def control() -> dict:
    """Small operations across the emulated sites: timed, results checked."""
    x = np.full(4, float(rank), np.float32)
    ops = {
        "allreduce": lambda: dlion.allreduce(x.copy(), op="sum", name="c.ar"),
        "allgather": lambda: dlion.allgather_object(rank, name="c.ag"),
        "broadcast": lambda: dlion.broadcast(x.copy(), root_rank=3, name="c.bc"),
        "barrier": lambda: dlion.barrier("c.barrier"),
    }
    out: dict = {}
    for kind, op in ops.items():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            result = op()
            times.append(time.perf_counter() - start)
        out[kind] = min(times)
        out[kind + "_result"] = None if result is None else np.asarray(result).tolist()
    handle = dlion.allreduce_async(np.ones(4, np.float32), "sum", "c.async")
    out["early_wait"] = handle.wait(0.01)
    out["late_wait"] = handle.wait()
    return out


report(rank, {"flows": flows, "allreduce": allreduce, "control": control}[SCENARIO]())
dlion.shutdown()
