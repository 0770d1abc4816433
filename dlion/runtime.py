"""The runtime: ``init``/``shutdown``, topology (rank, size, local rank, site) and the engines.

All of dlion's process-wide state lives in one object, created by :func:`init` and dropped by
:func:`shutdown`: the engines, the configuration, the topology, the emulation in force, and the
run state of the modules that keep some between calls (:func:`run_state`: the peer exchange's
tensor groups and step counts, ``dlion.join``'s rounds and its weak registry of exchangers, the
gradient tapes' exchangers). So ``init(); shutdown(); init()`` starts from step 0 with nothing
left from the first run, and no fused buffer is kept alive past it. (Two things are per
process by nature: the ``atexit`` hook, registered once, and the running timeline's slot in
:mod:`dlion.timeline`, which :func:`shutdown` empties.) The engines run on their own
duplicates of the communicator given to :func:`init` (``MPI.COMM_WORLD`` by default), so user
MPI traffic never mixes with dlion's. Sites come from the ``site`` option (``DLION_SITE``), else
the host name.
"""

from __future__ import annotations

import atexit
import os
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mpi4py import MPI

import dlion_core as _core

from . import timeline
from .config import Config
from .discovery import (
    Topology,
    discover,
    site_labels,
    site_wires,
    warn_if_foreign_launcher,
)
from .emulate_collectives import CollectiveCost, DelayedHandle, cost_of
from .emulate_spec import Spec
from .emulate_spec import parse as parse_emulation
from .errors import InvalidArgumentError, NotInitializedError

T = TypeVar("T")


@dataclass
class _State:
    engine: _core.Engine
    peers: _core.PeerEngine
    comm: MPI.Comm
    config: Config
    topology: Topology
    emulation: Spec
    lan: bool = False
    collective_cost: CollectiveCost | None = None  # emulated cost of MPI's own collectives
    slowest_link_Bps: float | None = None  # the probe's slowest link (None: not measured)
    parts: dict[Callable[[], Any], Any] = field(default_factory=dict)  # see run_state()


_state: _State | None = None
_atexit_registered = False


def init(comm: MPI.Comm | None = None, **options: Any) -> None:
    """Start dlion on ``comm`` (default ``MPI.COMM_WORLD``); idempotent.

    ``options`` override :class:`dlion.config.Config` fields (and their ``DLION_*`` environment
    variables). Every rank of ``comm`` must call it; a rank that does not arrive within
    ``stall_timeout_s`` makes the others raise ``PeerTimeoutError``.
    """
    global _state, _atexit_registered
    if _state is not None:
        return
    refused: Exception | None = None
    try:
        config = Config.from_env(options)
        _core.set_simd(config.simd)
    except (InvalidArgumentError, TypeError) as e:
        # Still take part in init's collectives (with the defaults), so that the other ranks
        # learn of this rank's bad option at once instead of waiting for it until their stall
        # timeout; discover then raises on every rank.
        config, refused = Config(), e
    comm = MPI.COMM_WORLD if comm is None else comm
    if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL:
        raise TypeError(f"comm must be a valid mpi4py.MPI.Comm, got {comm!r}")
    engine = _core.Engine(comm, config.engine_config())
    peers: _core.PeerEngine | None = None
    try:
        peers = _core.PeerEngine(comm, config.engine_config())
        engine.watch_liveness(peers)  # the peer engine's heartbeats name lost and late ranks
        topology = discover(engine, config, refused)
        peers.set_site_names(list(topology.sites))
        labels = site_labels(topology)
        engine.set_sites([labels[s] for s in topology.sites])
        wires = site_wires(engine, topology)
        peers.share_wires(wires)
        engine.share_wires(wires)
        emulation = parse_emulation(config.emulate)
        caps = _caps(emulation, topology)
        peers.set_caps(caps)
        engine.set_caps(caps)  # its ring allreduces are paced on the same links
        lan, slowest = False, None
        if topology.size > 1:
            peers.probe().wait()
            lan, slowest = _all_links_fast(engine, peers, config, topology, emulation)
    except BaseException:
        if peers is not None:
            peers.shutdown()
        engine.shutdown()
        _core.set_simd("auto")  # a failed init leaves nothing of its settings behind
        raise
    warn_if_foreign_launcher(topology.size)
    _state = _State(
        engine=engine,
        peers=peers,
        comm=comm,
        config=config,
        topology=topology,
        emulation=emulation,
        lan=lan,
        collective_cost=_collective_cost(emulation, topology, config),
        slowest_link_Bps=slowest,
    )
    if topology.rank == 0 and topology.size > 1 and not config.quiet:
        from .announce import exchange_mode

        line = exchange_mode(list(topology.sites), config.lan_bandwidth_Bps, slowest, lan)
        print(line, file=sys.stderr, flush=True)
    if config.timeline:
        timeline.start(config.timeline, topology.rank, topology.size)
    if not _atexit_registered:
        atexit.register(_at_exit)
        _atexit_registered = True
    if config.abort_on_exception and sys.excepthook is not _abort_on_exception:
        global _previous_excepthook
        _previous_excepthook = sys.excepthook
        sys.excepthook = _abort_on_exception


def shutdown() -> None:
    """Finish queued work, stop the engine's thread and free its communicator. Idempotent."""
    global _state
    if _state is None:
        return
    timeline.stop()
    state, _state = _state, None
    state.parts.clear()
    # The collective engine first: its queued work finishes, so the peer engine's goodbye (a
    # final heartbeat) tells the others exactly how many collective operations this rank ran.
    state.engine.shutdown()
    state.peers.shutdown()
    _core.set_simd("auto")
    if sys.excepthook is _abort_on_exception:
        sys.excepthook = _previous_excepthook


def is_initialized() -> bool:
    """Whether :func:`init` has been called (and :func:`shutdown` not since)."""
    return _state is not None


def _require() -> _State:
    if _state is None:
        raise NotInitializedError(
            f"dlion is not initialised on this process: call dlion.init() first (pid {os.getpid()})"
        )
    return _state


def _engine_thread_cpu() -> float:
    """CPU seconds used so far by both engines' progress threads (0 when not initialised)."""
    state = _state
    if state is None:
        return 0.0
    return state.engine.thread_cpu_seconds() + state.peers.thread_cpu_seconds()


def run_state(kind: Callable[[], T]) -> T:
    """This run's instance of ``kind`` (a class or factory taking no arguments): created on
    first use, dropped by :func:`shutdown`. Where library modules keep state between calls, so
    that it lives exactly as long as the engines; ``NotInitializedError`` before :func:`init`."""
    parts = _require().parts
    if kind not in parts:
        parts[kind] = kind()
    return parts[kind]  # type: ignore[no-any-return]


def start_timeline(path: str | os.PathLike[str]) -> Path:
    """Start recording a timeline of this rank (see :mod:`dlion.timeline`); returns the file
    this rank will write at :func:`dlion.stop_timeline`, :func:`shutdown` or exit."""
    t = _require().topology
    return timeline.start(path, t.rank, t.size)


def engine() -> _core.Engine:
    """The running engine (for library code; most users never need it)."""
    return _require().engine


def peer_engine() -> _core.PeerEngine:
    """The running peer-exchange engine (for library code; most users never need it)."""
    return _require().peers


def _all_links_fast(
    engine: _core.Engine, peers: _core.PeerEngine, config: Config, topology: Topology, spec: Spec
) -> tuple[bool, float | None]:
    """Whether every link is LAN-fast: all ranks in one site with no emulated link, or every
    rank measured every link at ``lan_bandwidth_Bps`` or more (collective; the same answer on
    every rank, since sites, settings and the gathered measurements are the same); and the
    slowest link any rank measured (``None`` when nothing was measured)."""
    if config.lan_bandwidth_Bps <= 0:
        return False, None
    if len(set(topology.sites)) == 1 and not spec.links:
        return True, None  # one host or one site: not worth a noisy measurement
    me = engine.rank
    slowest = min(
        (s["bandwidth_Bps"] for p, s in enumerate(peers.link_stats()) if p != me), default=0.0
    )
    handle = engine.allgather(pickle.dumps(slowest), "dlion.init.links")
    handle.wait()
    every = [pickle.loads(b) for b in handle.result()]
    return min(every) >= config.lan_bandwidth_Bps, float(min(every))


def all_links_fast() -> bool:
    """Whether the probe at ``init`` found every link of every rank at least
    ``lan_bandwidth_Bps`` fast (the same answer on every rank; False on one rank)."""
    return _require().lan


def slowest_link_Bps() -> float | None:
    """The slowest link the probe at ``init`` measured over all ranks (bytes/s); ``None``
    when it measured none (one rank, one site without emulated links, or the LAN test off)."""
    return _require().slowest_link_Bps


def hosts() -> list[str]:
    """The host (MPI processor name) of every rank, indexed by rank."""
    return list(_require().topology.hosts)


def _caps(spec: Spec, topology: Topology) -> list[tuple[float, float, int]]:
    """(bandwidth, latency, wire) of every link out of this rank: wire is the shared clock of
    the link's site pair (slot ``from_site * sites + to_site`` of :func:`site_wires`' table),
    or -1 for a link of its own (a rank-pair item, or no bandwidth cap)."""
    sites = list(topology.sites)
    try:
        spec.check(sites)  # the ranks and sites the spec names must exist
    except ValueError as e:
        raise InvalidArgumentError(f"rank {topology.rank}: {e}") from None
    labels = site_labels(topology)
    me = topology.rank
    caps = []
    for p, c in enumerate(spec.caps(me, sites)):
        shared = p != me and spec.shared(me, p, sites)
        wire = labels[sites[me]] * len(labels) + labels[sites[p]] if shared else -1
        caps.append((c.bandwidth_Bps, c.latency_s, wire))
    return caps


def _set_emulation(spec: Spec) -> None:
    state = _require()
    caps = _caps(spec, state.topology)
    state.peers.set_caps(caps)
    state.engine.set_caps(caps)
    state.emulation = spec
    state.collective_cost = _collective_cost(spec, state.topology, state.config)


def _collective_cost(spec: Spec, topology: Topology, config: Config) -> CollectiveCost | None:
    sites = list(topology.sites)
    caps = [
        [(c.bandwidth_Bps, c.latency_s) for c in spec.caps(r, sites)] for r in range(len(sites))
    ]
    return cost_of(caps, sites, config.ring_threshold_bytes)


def emulated(handle: _core.Handle, kind: str, nbytes: int) -> _core.Handle:
    """``handle`` of a collective operation of ``kind`` moving ``nbytes`` per rank, held until
    the emulated links would have carried it (:mod:`dlion.emulate_collectives`); as it is when
    no link is emulated."""
    cost = _require().collective_cost
    if cost is None:
        return handle
    release = time.monotonic() + cost.delay(kind, nbytes)
    return DelayedHandle(handle, release)  # type: ignore[return-value]


def _emulation() -> Spec:
    return _require().emulation


def config() -> Config:
    """The configuration the runtime was started with."""
    return _require().config


def rank() -> int:
    """This process's rank in the communicator given to :func:`init`."""
    return _require().topology.rank


def size() -> int:
    """Number of ranks."""
    return _require().topology.size


def local_rank() -> int:
    """Rank among the processes on this host."""
    return _require().topology.local_rank


def local_size() -> int:
    """Number of ranks on this host."""
    return _require().topology.local_size


def site() -> str:
    """This rank's site (the ``site`` option, ``DLION_SITE``; else the host name)."""
    t = _require().topology
    return t.sites[t.rank]


def sites() -> list[str]:
    """The site of every rank, indexed by rank."""
    return list(_require().topology.sites)


_previous_excepthook = sys.excepthook


def _abort_on_exception(kind: type, value: BaseException, tb: Any) -> None:
    """Print the traceback, then end the whole job: the other ranks would otherwise wait."""
    _previous_excepthook(kind, value, tb)
    sys.stderr.flush()
    state = _state
    if state is None or state.topology.size == 1:
        return
    sys.stderr.write(
        f"[dlion rank {state.topology.rank}] uncaught {kind.__name__}: aborting the job so that "
        "the other ranks do not wait for this one (dlion option abort_on_exception)\n"
    )
    sys.stderr.flush()
    time.sleep(0.5)  # let the launcher forward the traceback before the job is torn down
    MPI.COMM_WORLD.Abort(1)


def _at_exit() -> None:
    state = _state
    if state is None:
        return
    why = state.engine.poisoned() or state.peers.poisoned()
    if why:
        # MPI state is inconsistent after a fatal engine error; MPI_Finalize could hang.
        sys.stderr.write(f"[dlion rank {state.topology.rank}] aborting the job: {why}\n")
        sys.stderr.flush()
        time.sleep(0.5)  # let the launcher forward the message before the job is torn down
        MPI.COMM_WORLD.Abort(1)
    shutdown()
