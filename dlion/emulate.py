"""In-process emulation of a micro-cloud on one machine (no root needed).

``DLION_EMULATE`` (the ``emulate`` option of :class:`dlion.Config`, or :func:`configure`)
holds a spec of items separated by ``;`` or spaces; the grammar, with the dataclasses and the
parser, is in :mod:`dlion.emulate_spec` (re-exported here: ``dlion.emulate.parse`` and the
rest). In short:

``A-B:20mbit:40ms``
    The link between site ``A`` and site ``B`` carries 20 Mbit/s with a one-way latency of
    40 ms, shared by all the ranks of ``A`` sending to ``B``. Endpoints are site names
    (``DLION_SITE``; one with ``-`` in brackets, as in ``[eu-west]-B:20mbit``), ``*`` for any
    site, or ``#N`` for rank N (a link of its own); the most specific item wins. An item naming
    a rank or a site that no rank has is an error at ``dlion.init``.

``compute=1,1,0.5,0.5``
    Relative compute speed per rank (0.5: half as fast). Applied by :func:`slowdown` (which
    :meth:`dlion.DynamicBatcher.compute` uses): a rank of speed ``s < 1`` sleeps
    ``(1/s - 1)`` times the measured compute of the block, so it is, and measures as, slower.

``slow=2:3@200``
    Rank 2 becomes 3x slower from step 200 on (dynamism); several ``slow`` items may be given.

Links are emulated by the peer engine, which paces each link's send queue: a message leaves for
real only when the emulated link would have delivered it (``csrc/engine/link.h``). A site
pair's cap is one wire shared by every rank pair that crosses it (the ranks of one host share
it through a table in shared memory, ``csrc/engine/site_clocks.h``); a rank-pair item is a link
of its own. The collective engine's ring allreduces (``dlion.Allreduce`` above
``ring_threshold_bytes``) are paced on the same links; the operations that run on MPI's own
collectives (small allreduces, allgathers, broadcasts, barriers, every operation's negotiation)
are held for the wide-area latencies they take on a real network (:mod:`dlion.emulate_collectives`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from . import clocks, runtime
from .config import Config
from .emulate_spec import LinkCap, Slowdown, Spec, parse, parse_rate, parse_time
from .emulate_spec import _match as _match  # re-exported, as before the spec moved

__all__ = [
    "ComputeTime",
    "LinkCap",
    "Slowdown",
    "Spec",
    "configure",
    "current",
    "parse",
    "parse_rate",
    "parse_time",
    "slowdown",
    "speed",
]


def configure(spec: str | Spec) -> Spec:
    """Emulate ``spec`` from now on (links: for messages queued afterwards). Call it on every
    rank with the same spec; ``dlion.init`` calls it with ``DLION_EMULATE``. A spec naming a
    rank or a site that does not exist is a ``ValueError`` naming the ones that do."""
    parsed = parse(spec) if isinstance(spec, str) else spec
    runtime._set_emulation(parsed)
    return parsed


def current() -> Spec:
    """The spec in force (empty when nothing is emulated)."""
    return runtime._emulation()


@dataclass
class ComputeTime:
    """What one :func:`slowdown` block took: ``work_s`` measured, ``slept_s`` added to emulate
    a slower rank, ``total_s`` = both (the block's wall time); ``speed`` is the emulated speed."""

    speed: float = 1.0
    work_s: float = 0.0
    slept_s: float = 0.0

    @property
    def total_s(self) -> float:
        """Wall time of the block, emulated slowdown included."""
        return self.work_s + self.slept_s


def speed(step: int, rank: int | None = None) -> float:
    """This rank's (or ``rank``'s) emulated compute speed at ``step`` (1.0: not slowed).

    Uses the spec in force after ``dlion.init``; before it, ``DLION_EMULATE`` (read by
    :meth:`dlion.Config.from_env`) as rank 0."""
    if runtime.is_initialized():
        spec, me = current(), runtime.rank()
    else:
        spec, me = parse(Config.from_env().emulate), 0
    return spec.speed(me if rank is None else rank, step)


Clock = clocks.Clock


@contextlib.contextmanager
def slowdown(step: int, rank: int | None = None, clock: Clock = "wall") -> Iterator[ComputeTime]:
    """Run the block at this rank's emulated speed ``s`` for ``step``: it measures the block's
    time ``t`` and, when ``s < 1``, sleeps ``(1/s - 1) * t`` before leaving it, so the block
    takes ``t / s``. Yields a :class:`ComputeTime`, filled in when the block ends.

    ``clock="wall"`` (default) measures wall time. ``clock="cpu"`` measures this process's CPU
    time, less what dlion's engine threads used meanwhile, and reports the requested sleep
    (``total_s`` is then exactly ``t / s``): for ranks oversubscribing the cores of one
    machine, where wall time mostly measures the OS scheduler. ``clock="auto"`` picks one of
    them (:func:`dlion.clocks.resolve`). A block never measures negative. Wrap
    forward+backward only (not the gradient exchange)::

        with dlion.emulate.slowdown(step):
            grads = compute_gradients(x, y)
    """
    if clock not in clocks.CLOCKS:
        raise ValueError(f"slowdown(clock={clock!r}): use one of {clocks.CLOCKS}")
    if clock == "auto":
        from . import runtime

        clock = clocks.resolve(clock, runtime.local_size() if runtime.is_initialized() else 1)
    now = clocks.CLOCK_FUNCTIONS[clock]
    timing = ComputeTime(speed=speed(step, rank))
    start = now()
    yield timing  # an exception in the block propagates without the emulated sleep
    timing.work_s = max(0.0, now() - start)
    if timing.speed < 1.0:
        pause = (1.0 / timing.speed - 1.0) * timing.work_s
        begin = time.perf_counter()
        time.sleep(pause)
        timing.slept_s = pause if clock == "cpu" else time.perf_counter() - begin
