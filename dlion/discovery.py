"""What every rank learns at ``dlion.init``: the job's topology (rank, size, local rank, site and
host of every rank), that every rank's options were valid and the same where they must be, and
the table of emulated site-pair wires the ranks of a host share. Used by :mod:`dlion.runtime`.
"""

from __future__ import annotations

import os
import pickle
import secrets
import socket
import warnings
from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

import dlion_core as _core

from .config import Config
from .errors import InvalidArgumentError

# Settings that change which operations run (the engine's algorithms, the LAN decision of
# PerLinkExchange, the emulated links): every rank must use the same values, else init refuses
# on every rank, naming the settings and the ranks.
MUST_AGREE = (
    "ring_threshold_bytes",
    "ring_segment_bytes",
    "hierarchical",
    "probe_bytes",
    "lan_bandwidth_Bps",
    "emulate",
    "liveness_timeout_s",  # heartbeats go out at a rate the others' timeout expects
)


@dataclass(frozen=True)
class Topology:
    """Where this rank is in the job, and where every rank is (sites and hosts in rank order)."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    sites: tuple[str, ...]
    hosts: tuple[str, ...]
    wires: str = ""  # name of the job's shared table of emulated site-pair wires (rank 0's)


def discover(engine: _core.Engine, config: Config, refused: Exception | None) -> Topology:
    """Every rank's site and host; checks that every rank's options were valid (``refused``:
    this rank's were not) and that all ranks run with the same settings (``MUST_AGREE``)."""
    site = config.site or socket.gethostname()
    host = MPI.Get_processor_name()
    settings = {name: getattr(config, name) for name in MUST_AGREE}
    why = f"{type(refused).__name__}: {refused}" if refused is not None else ""
    # Rank 0's name for the shared wires is the job's (unique to this job and communicator).
    wires = f"/dlion-{os.getuid()}-{os.getpid()}-{secrets.token_hex(8)}"
    handle = engine.allgather(
        pickle.dumps((site, host, settings, why, wires)), "dlion.init.topology"
    )
    handle.wait()
    gathered = [pickle.loads(b) for b in handle.result()]
    if refused is not None:
        raise type(refused)(f"rank {engine.rank}: {refused}") from refused
    bad = [(r, g[3]) for r, g in enumerate(gathered) if g[3]]
    if bad:
        detail = "; ".join(f"rank {r}: {w}" for r, w in bad)
        raise InvalidArgumentError(
            f"rank {engine.rank}: dlion.init failed on {_ranks(r for r, _ in bad)}, whose "
            f"options are invalid ({detail})"
        )
    check_same_settings(engine.rank, settings, [g[2] for g in gathered])
    sites = tuple(g[0] for g in gathered)
    hosts = tuple(g[1] for g in gathered)
    same_host = [r for r, h in enumerate(hosts) if h == host]
    return Topology(
        rank=engine.rank,
        size=engine.size,
        local_rank=same_host.index(engine.rank),
        local_size=len(same_host),
        sites=sites,
        hosts=hosts,
        wires=gathered[0][4],
    )


def site_labels(topology: Topology) -> dict[str, int]:
    """Every site's number, in order of first appearance among the ranks."""
    return {s: i for i, s in enumerate(dict.fromkeys(topology.sites))}


def site_wires(engine: _core.Engine, topology: Topology) -> _core.SiteClocks:
    """The pacing clocks of the emulated site pairs, one per ordered pair of sites, shared by
    the processes of this host (collective: every rank takes part; see site_clocks.h).

    Every rank maps the job's table (the first of a host creates it), then, after a barrier,
    removes its name, so none is left behind however the job ends. Where shared memory cannot
    be had, the rank paces its site links on clocks of its own, and says so."""
    slots = len(site_labels(topology)) ** 2
    if topology.size == 1:
        return _core.SiteClocks.local(slots)
    problem = ""
    try:
        # A rank alone on its host has nobody to share with.
        if topology.local_size > 1:
            clocks = _core.SiteClocks.open(topology.wires, slots)
        else:
            clocks = _core.SiteClocks.local(slots)
    except _core.DlionError as e:
        clocks, problem = _core.SiteClocks.local(slots), str(e)
    engine.barrier("dlion.init.site_wires").wait()  # every rank of every host has mapped it
    if clocks.shared:
        _core.SiteClocks.unlink(topology.wires)
    if problem:
        warnings.warn(
            f"rank {topology.rank}: {problem}; the emulated site links of this rank are paced "
            "on clocks of its own, not shared with the other ranks of its site",
            RuntimeWarning,
            stacklevel=3,
        )
    return clocks


def check_same_settings(me: int, mine: dict[str, Any], every: list[dict[str, Any]]) -> None:
    """InvalidArgumentError on every rank when some rank's ``MUST_AGREE`` settings differ from
    rank 0's, naming the settings (with their environment variables) and the ranks."""
    ref = every[0]
    differ = {r: sorted(k for k in mine if s.get(k) != ref.get(k)) for r, s in enumerate(every)}
    ranks = [r for r, keys in differ.items() if keys]
    if not ranks:
        return
    detail = "; ".join(
        f"rank {r}: "
        + ", ".join(
            f"{k}={every[r].get(k)!r} (DLION_{k.upper()}; rank 0: {ref.get(k)!r})"
            for k in differ[r]
        )
        for r in ranks
    )
    verb = "runs" if len(ranks) == 1 else "run"
    raise InvalidArgumentError(
        f"rank {me}: {_ranks(ranks)} {verb} dlion with other settings than rank 0: {detail}. "
        "These choose which operations every rank runs (algorithms, the LAN decision, emulated "
        "links); set them the same everywhere (same DLION_* environment or dlion.init keywords)."
    )


def _ranks(ranks: Any) -> str:
    rs = list(ranks)
    return ("rank " if len(rs) == 1 else "ranks ") + ", ".join(str(r) for r in rs)


# Variables through which launchers announce the job size: Open MPI's mpirun, PMI (Hydra/MPICH).
LAUNCHER_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def warn_if_foreign_launcher(size: int) -> None:
    """A launcher of another MPI starts N singletons of size 1: say so instead of training N
    unconnected copies in silence."""
    for var in LAUNCHER_SIZE_VARS:
        value = os.environ.get(var, "")
        if size == 1 and value.isdigit() and int(value) > 1:
            warnings.warn(
                f"dlion sees 1 rank, but {var}={value}: the job was probably started with the "
                "launcher of another MPI than the one mpi4py and dlion use, so every process "
                "runs alone. Use the mpiexec of the same installation (e.g. .venv/bin/mpiexec).",
                RuntimeWarning,
                stacklevel=3,
            )
            return
