"""Dense allreduce through dlion's engine vs raw mpi4py Allreduce of the same buffer, and the
per-link peer exchange vs a raw mpi4py all-to-all of the dense buffer.

For each float32 size, both are run alternately on the same data after a warm-up; a sample is
the slowest rank's time of one call (started together after a barrier); the median is reported,
with ratio = dlion_s / mpi4py_s (< 1: dlion is faster). Also reports the CPU use of an idle
engine (the progress thread must sleep, not spin).

Peer rows (op ``peer``): one synchronous peer exchange step (every rank sends every peer its
message and sums what arrives) in each ``--modes`` mode: ``dense`` (float32), ``topk`` (top-1%,
float values, error feedback), ``topk8`` (top-1% with 8-bit values), ``fp16``
(:class:`dlion.CastAllreduce`, what ``compression=dlion.Compression.fp16`` runs: the dense
average as a reduce-scatter + allgather in half precision). The reference is mpi4py
sending the dense buffer to every peer (Isend/Irecv) and summing. The ``topk`` and ``topk8``
rows also time, in the same rounds, the kernels such a step cannot do without on this rank's
gradient (``topk_fast`` of the ``n`` values, and for ``topk8`` the QSGD-8 encode of all ``n``,
the two figures ``bench compress`` reports): ``kernels_s``, and ``vs_kernels`` = ``dlion_s`` /
``kernels_s``, what the pipeline costs beyond its kernels. ``bytes_per_link`` is what
one link carried per step (wire bytes, headers included), ``bytes_per_rank`` what one rank sent
per step over all its links, and ``vs_ring`` that over ``2 (p - 1) / p * 4 n``, what the float32
ring allreduce of the same buffer sends per rank (the allreduce rows' ``bytes_per_rank``: the
ring's segments by construction, the collective engine counts no bytes); the ``fp16`` row's
``vs_ring`` is about 0.5 at any number of ranks. ``achieved_Bps`` the bandwidth the
engine measured on its links during the row, ``emulated_Bps`` the cap from ``DLION_EMULATE``
(0: none). With ranks in more than one site (``dlion.sites()``): ``site_pair_bytes``, the wire
bytes the busiest ordered site pair carried per step (all its rank pairs together), and
``site_pair_Bps`` = that / ``dlion_s``, the site pair's throughput; the same figure in-process
(``DLION_EMULATE``) and on the real network (``../shared/tools/microcloud``) tells whether the
emulation models the shared link::

    DLION_SITE=... DLION_EMULATE=A-B:20mbit:40ms mpiexec -n 4 python -m dlion.bench exchange \
        --sizes --peer-sizes 1e5 --modes dense
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

DEFAULT_SIZES = [1_000, 10_000, 100_000, 1_000_000, 4_000_000, 10_000_000, 16_000_000]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m dlion.bench exchange``."""
    p.add_argument(
        "--sizes",
        type=float,
        nargs="*",
        default=DEFAULT_SIZES,
        help="float32 element counts of the allreduce rows (default 1e3 .. 1.6e7; none: skip)",
    )
    p.add_argument("--reps", type=int, default=30, help="timed repetitions per size (max)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--budget-s",
        type=float,
        default=8.0,
        help="stop repeating a size after this many seconds (min 5 reps)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.add_argument(
        "--peer-sizes",
        type=float,
        nargs="*",
        default=[1_000_000, 10_000_000],
        help="float32 element counts of the peer exchange rows (default 1e6 1e7; none: skip)",
    )
    p.add_argument(
        "--modes",
        nargs="+",
        default=["dense", "topk", "topk8"],
        choices=["dense", "topk", "topk8", "fp16"],
        help="peer exchange modes (fp16: dlion.CastAllreduce, what compression=fp16 runs)",
    )
    p.add_argument("--k-ratio", type=float, default=0.01, help="top-k fraction (default 1%%)")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; rank 0 prints."""
    from mpi4py import MPI

    import dlion

    from .report import Report

    dlion.init()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    rep = Report(
        [
            ("op", "{}"),
            ("elements", "{:.0e}"),
            ("ranks", "{}"),
            ("dlion_s", "{:.3e}"),
            ("mpi4py_s", "{:.3e}"),
            ("ratio", "{:.2f}"),
            ("dlion_GBps", "{:.2f}"),
            ("mode", "{}"),
            ("bytes_per_link", "{:.3g}"),
            ("bytes_per_rank", "{:.3g}"),
            ("vs_ring", "{:.2f}"),
            ("vs_kernels", "{:.2f}"),
            ("achieved_Bps", "{:.3g}"),
            ("site_pair_Bps", "{:.3g}"),
        ],
        args.json,
        rank,
    )
    rep.note(f"# dense allreduce (sum), float32, {size} ranks; busbw = 2(p-1)/p * bytes / time")
    for n in (int(s) for s in args.sizes):
        rng = np.random.default_rng(rank)
        a = rng.standard_normal(n).astype(np.float32)
        b = a.copy()

        def prepare(a: np.ndarray = a, b: np.ndarray = b) -> None:
            np.copyto(a, b)  # keep values bounded and both paths on identical data

        def ours(a: np.ndarray = a) -> None:
            dlion.allreduce(a, op="sum", name="bench")

        def reference(b: np.ndarray = b) -> None:
            comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)

        d, m, reps, _ = alternate(comm, args, ours, reference, prepare)
        rep.row(
            {
                "op": "allreduce",
                "elements": n,
                "ranks": size,
                "dlion_s": d,
                "mpi4py_s": m,
                "ratio": d / m,
                "dlion_GBps": 2 * (size - 1) / size * n * 4 / d / 1e9,
                "reps": reps,
                "bytes_per_rank": ring_bytes(n, size),
                "vs_ring": 1.0 if size > 1 else None,
            }
        )
    for n in (int(x) for x in args.peer_sizes):
        for mode in args.modes:
            row = peer_row(comm, n, mode, args)
            rep.row(row)
            if mode == "fp16":
                rep.note(
                    f"# fp16 (CastAllreduce) at {n:.0e}: {row['bytes_per_rank']:.4g} B per rank "
                    f"per step = {row['vs_ring']:.3f}x the float32 ring allreduce's "
                    f"{ring_bytes(n, size):.4g} B"
                )
    idle = idle_cpu_fraction(2.0)
    worst = comm.allreduce(idle, op=MPI.MAX)
    rep.row(
        {
            "op": "idle_engine_cpu",
            "elements": 0,
            "ranks": size,
            "dlion_s": None,
            "mpi4py_s": None,
            "ratio": None,
            "idle_cpu_fraction": worst,
        }
    )
    rep.note(f"# idle engine: {worst * 100:.2f}% of a core (worst rank, 2 s asleep)")
    dlion.shutdown()
    return 0


def ring_bytes(n: int, size: int) -> float:
    """Bytes one rank sends per float32 ring allreduce of ``n`` elements: ``2 (p - 1) / p * 4n``
    (reduce-scatter then allgather, one segment of ``n / p`` per hop)."""
    return 2 * (size - 1) / size * n * 4


def idle_cpu_fraction(seconds: float) -> float:
    """CPU time the whole process (all threads) used while the caller slept, per second."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    return (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def alternate(
    comm: Any,
    args: argparse.Namespace,
    ours: Callable[[], None],
    reference: Callable[[], None],
    prepare: Callable[[], None],
    extra: Callable[[], None] | None = None,
) -> tuple[float, float, int, float]:
    """Time ``ours`` and ``reference`` alternately on every rank, each started together after
    a barrier, for ``args.warmup`` untimed and up to ``args.reps`` timed rounds (fewer once
    ``args.budget_s`` is spent; rank 0 decides, so all stop together); ``prepare`` runs,
    untimed, before each round. Returns the medians over rounds of the slowest rank's time of
    each, the number of timed rounds, and the same median for ``extra`` (optional, timed the
    same way after ``reference`` in every round; 0.0 without it)."""
    from mpi4py import MPI

    dl, mp, ex = [], [], []
    started = time.perf_counter()
    for i in range(args.warmup + args.reps):
        prepare()
        comm.Barrier()
        t = time.perf_counter()
        ours()
        t_dl = time.perf_counter() - t
        comm.Barrier()
        t = time.perf_counter()
        reference()
        t_mp = time.perf_counter() - t
        t_ex = 0.0
        if extra is not None:
            comm.Barrier()
            t = time.perf_counter()
            extra()
            t_ex = time.perf_counter() - t
        if i >= args.warmup:
            dl.append(t_dl)
            mp.append(t_mp)
            ex.append(t_ex)
        done = i >= args.warmup + 4 and time.perf_counter() - started > args.budget_s
        if comm.bcast(done, root=0):
            break
    dl_max, mp_max = np.array(dl), np.array(mp)
    comm.Allreduce(MPI.IN_PLACE, dl_max, op=MPI.MAX)
    comm.Allreduce(MPI.IN_PLACE, mp_max, op=MPI.MAX)
    ex_max = np.array(ex)
    comm.Allreduce(MPI.IN_PLACE, ex_max, op=MPI.MAX)
    medians = float(np.median(dl_max)), float(np.median(mp_max))
    return medians[0], medians[1], len(dl), float(np.median(ex_max))


def peer_row(comm: Any, n: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One peer exchange row: dlion's per-link step vs mpi4py's dense all-to-all."""
    from mpi4py import MPI

    import dlion

    rank, size = comm.Get_rank(), comm.Get_size()
    policy: dlion.Exchange
    if mode == "dense":
        policy = dlion.PeerExchange("dense")
    elif mode == "fp16":
        policy = dlion.CastAllreduce("fp16")
    else:
        policy = dlion.PeerExchange("topk", k_ratio=args.k_ratio, bits=8 if mode == "topk8" else 32)
    grad = np.random.default_rng(rank).standard_normal(n).astype(np.float32)
    buf = np.empty_like(grad)
    recv = np.empty((size, n), np.float32)
    before = dlion.link_stats()

    def prepare() -> None:
        np.copyto(buf, grad)

    def ours() -> None:
        policy.start(buf, name=f"bench.{mode}.{n}").wait()

    def reference() -> None:
        reqs = []
        for p in range(size):
            if p != rank:
                reqs.append(comm.Irecv(recv[p], source=p, tag=77))
                reqs.append(comm.Isend(grad, dest=p, tag=77))
        MPI.Request.Waitall(reqs)
        np.copyto(buf, grad)
        for p in range(size):
            if p != rank:
                np.add(buf, recv[p], out=buf)

    kernels = None
    if mode in ("topk", "topk8"):
        import dlion_core

        k = policy.k_for(n)  # type: ignore[attr-defined]
        into = dict(zip(("packed_out", "scales_out"), dlion_core.qsgd_encode(grad, 8, 1, 512)))

        def kernels() -> None:
            dlion_core.topk(grad, k, exact=False)
            if mode == "topk8":
                dlion_core.qsgd_encode(grad, 8, 1, 512, **into)

    d, m, reps, kernels_s = alternate(comm, args, ours, reference, prepare, kernels)
    after = dlion.link_stats()
    steps = args.warmup + reps
    peers = [p for p in after if p != rank]
    sent = sum(after[p].bytes_sent - before[p].bytes_sent for p in peers)
    t_bytes = sum(after[p].timed_bytes - before[p].timed_bytes for p in peers)
    t_secs = sum(after[p].timed_seconds - before[p].timed_seconds for p in peers)
    pair_bytes = site_pair_bytes(
        comm, {p: after[p].bytes_sent - before[p].bytes_sent for p in peers}
    )
    return {
        "op": "peer",
        "mode": mode,
        "k_ratio": None if mode in ("dense", "fp16") else args.k_ratio,
        "elements": n,
        "ranks": size,
        "dlion_s": d,
        "mpi4py_s": m,
        "ratio": d / m,
        "dlion_GBps": (size - 1) * n * 4 / d / 1e9,
        "reps": reps,
        "kernels_s": kernels_s if kernels is not None else None,
        "vs_kernels": d / kernels_s if kernels is not None else None,
        "bytes_per_link": sent / max(1, len(peers)) / steps,
        "bytes_per_rank": sent / steps,
        "vs_ring": sent / steps / ring_bytes(n, size) if size > 1 else None,
        "dense_bytes": n * 4,
        "achieved_Bps": t_bytes / t_secs if t_secs > 0 else None,
        "emulated_Bps": max((after[p].emulated_bandwidth_Bps for p in peers), default=0.0),
        "site_pair_bytes": pair_bytes / steps if pair_bytes else None,
        "site_pair_Bps": pair_bytes / steps / d if pair_bytes else None,
    }


def site_pair_bytes(comm: Any, sent: dict[int, int]) -> float:
    """Bytes the busiest ordered pair of distinct sites carried, all ranks together, given
    what this rank sent each peer (collective; 0.0 with one site)."""
    from mpi4py import MPI

    import dlion

    sites = dlion.sites()
    names = list(dict.fromkeys(sites))
    if len(names) < 2:
        return 0.0
    index = {s: i for i, s in enumerate(names)}
    pairs = np.zeros((len(names), len(names)))
    me = index[sites[comm.Get_rank()]]
    for p, b in sent.items():
        pairs[me, index[sites[p]]] += b
    comm.Allreduce(MPI.IN_PLACE, pairs, op=MPI.SUM)
    np.fill_diagonal(pairs, 0.0)
    return float(pairs.max())
