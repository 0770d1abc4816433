"""Site-aware vs rank-to-rank peer exchange: wide-area bytes per site pair and CPU per rank.

Run under mpiexec with the ranks split into two sites (the first half is site A, the rest site
B; ``--sites`` to choose), e.g. ``mpiexec -n 4 python -m dlion.bench sites`` and again with
``-n 6`` and ``-n 8``: for each ``--topology`` it runs ``--steps`` synchronous steps of the
same policy (``PeerExchange("topk")``, top-``--k-ratio`` with 8-bit values and error feedback,
or ``--codec dense``) on an ``--n``-float buffer and reports, per step: the wide-area bytes of
the busiest ordered site pair (every message between ranks of different sites, headers
included), the mean per-rank CPU of the exchange (the peer engine's thread, which encodes,
plus the calling thread), and the step time. The two rows of one run are the comparison; the
scaling claim is about how they change when the ranks per site double (rank to rank: WAN bytes
about 4x, CPU about 2x; site-aware: about flat).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m dlion.bench sites``."""
    p.add_argument("--n", type=float, default=1_000_000, help="float32 elements per buffer")
    p.add_argument("--steps", type=int, default=20, help="timed steps per topology")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--k-ratio", type=float, default=0.01)
    p.add_argument("--codec", choices=["topk", "dense"], default="topk")
    p.add_argument("--sites", default=None, help="site of each rank (default: halves A and B)")
    p.add_argument("--topology", nargs="+", default=["sites", "ranks"], choices=["sites", "ranks"])
    p.add_argument("--json", action="store_true", help="one JSON object per row")


def run(args: argparse.Namespace) -> int:
    """Initialise dlion with the sites, run each topology, print one row each."""
    from mpi4py import MPI

    import dlion

    from .report import Report

    world = MPI.COMM_WORLD
    sites = (
        args.sites.split(",")
        if args.sites
        else ["A" if r < world.size // 2 else "B" for r in range(world.size)]
    )
    dlion.init(site=sites[world.rank])
    rep = Report(
        [
            ("topology", "{}"),
            ("ranks", "{}"),
            ("sites", "{}"),
            ("wan_bytes_per_pair_step", "{:.4g}"),
            ("cpu_per_rank_step_s", "{:.3e}"),
            ("step_s", "{:.3e}"),
        ],
        args.json,
        dlion.rank(),
    )
    for topology in args.topology:
        rep.row(_row(dlion, world, sites, topology, args))
    dlion.shutdown()
    return 0


def _row(dlion: Any, world: Any, sites: list[str], topology: str, args: argparse.Namespace):
    n = int(args.n)
    rank = dlion.rank()
    ex = dlion.PeerExchange(
        args.codec,
        k_ratio=args.k_ratio,
        bits=8 if args.codec == "topk" else None,
        topology=topology,
    )
    buf = np.random.default_rng(rank).standard_normal(n).astype(np.float32)
    name = f"bench.sites.{topology}"
    for _ in range(args.warmup):
        ex.start(buf.copy(), name=name).wait()
    engine = dlion.runtime.peer_engine()
    world.Barrier()
    before = {p: s.bytes_sent for p, s in dlion.link_stats().items()}
    cpu0, thread0, t0 = engine.thread_cpu_seconds(), time.thread_time(), time.perf_counter()
    for _ in range(args.steps):
        ex.start(buf.copy(), name=name).wait()
    world.Barrier()
    step_s = (time.perf_counter() - t0) / args.steps
    cpu = (engine.thread_cpu_seconds() - cpu0 + time.thread_time() - thread0) / args.steps
    after = dlion.link_stats()
    # Bytes this rank sent to each other site, per step; summed over the ranks of each site.
    out: dict[str, float] = {}
    for p, s in after.items():
        if sites[p] != sites[rank]:
            out[sites[p]] = out.get(sites[p], 0.0) + (s.bytes_sent - before[p]) / args.steps
    pairs: dict[tuple[str, str], float] = {}
    for src, sent in zip(sites, world.allgather(out)):
        for dst, b in sent.items():
            pairs[(src, dst)] = pairs.get((src, dst), 0.0) + b
    cpus = world.allgather(cpu)
    return {
        "op": "sites",
        "topology": topology,
        "ranks": world.size,
        "sites": ",".join(dict.fromkeys(sites)),
        "n": n,
        "codec": args.codec,
        "wan_bytes_per_pair_step": max(pairs.values(), default=0.0),
        "cpu_per_rank_step_s": float(np.mean(cpus)),
        "step_s": step_s,
    }
