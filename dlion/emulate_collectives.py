"""The wide-area cost of the collective engine's operations under in-process emulation.

The in-process emulation (``DLION_EMULATE``) paces peer messages and the collective engine's
ring between sites on the emulated links, message by message (``csrc/engine/link.h``). The
collective engine's other operations run on MPI's own algorithms, which it cannot pace message
by message: small allreduces, allgathers (the dynamic batcher's speeds, knowledge transfer's
scores, the optimizer's join control), broadcasts (knowledge transfer's parameters), barriers,
and the negotiation round every operation starts with. On a real network each of these costs a
few wide-area latencies, and a training step pays several of them; left out, the emulation
flatters every policy that runs control rounds.

So an operation on a job whose ranks are joined by emulated links completes no sooner than
``rounds * latency + wire_bytes / bandwidth`` after it started, with the largest one-way latency
and the smallest bandwidth among the job's links. The rounds were measured on the real-network
testbed (``../shared/tools/microcloud``, sites A:2,B:2 joined by 20 Mbit/s with 40 ms one-way,
MPICH over TCP; median of 12 calls of 4 floats): dlion allreduce 84 ms (a small allreduce's data
rides in its negotiation round, csrc/engine/small_allreduce.h; 127 ms before), allgather 126 ms,
broadcast 83 ms, barrier 84 ms, an mpi4py ``Allreduce`` 84 ms; that is 2, 3, 2 and 2 one-way
latencies. A ring allreduce (at or above ``ring_threshold_bytes``) has its ring paced message by
message and is not held further; its negotiation and in-site phases are left out, which is
most of what separates it from the testbed (an allreduce of 225,034 floats, 0.9 MB: 445 ms
in-process, 553 ms on the testbed).

The bytes do not queue on the shared site-pair wires (control rounds are small; a parameter
broadcast is the exception and is charged its bytes over the slowest link).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

#: One-way latencies an operation of each kind costs across sites (measured, see above).
ROUNDS = {"allreduce": 2, "allgather": 3, "broadcast": 2, "barrier": 2}


@dataclass(frozen=True)
class CollectiveCost:
    """The emulated cost of collective operations on one job."""

    latency_s: float  # the largest one-way latency between two ranks
    bandwidth_Bps: float  # the smallest capped bandwidth between two ranks; 0: none capped
    remote_ranks: int  # the most ranks outside one rank's site (an allgather's copies)
    ring_threshold_bytes: int  # allreduces at or above it run the paced ring

    def delay(self, kind: str, nbytes: int) -> float:
        """Seconds an operation of ``kind`` moving ``nbytes`` (per rank) takes at least."""
        if kind == "allreduce" and nbytes >= self.ring_threshold_bytes:
            return 0.0  # the engine paces its ring on the links themselves
        wire = {
            "allreduce": 2 * nbytes,  # reduced toward one rank, the result sent back
            "allgather": nbytes * self.remote_ranks,
            "broadcast": nbytes,
            "barrier": 0,
        }[kind]
        transfer = wire / self.bandwidth_Bps if self.bandwidth_Bps > 0 else 0.0
        return ROUNDS[kind] * self.latency_s + transfer


def cost_of(
    caps: list[list[tuple[float, float]]], sites: list[str], ring_threshold_bytes: int
) -> CollectiveCost | None:
    """The cost model for a job with ``caps[a][b]`` = (bandwidth, latency) of the link from
    rank ``a`` to rank ``b``; None when no link is emulated (nothing to add)."""
    pairs = [caps[a][b] for a in range(len(caps)) for b in range(len(caps)) if a != b]
    latency = max((lat for _, lat in pairs), default=0.0)
    capped = [bw for bw, _ in pairs if bw > 0]
    if latency <= 0 and not capped:
        return None
    remote = max((sum(s != site for s in sites) for site in sites), default=0)
    return CollectiveCost(latency, min(capped, default=0.0), remote, ring_threshold_bytes)


class DelayedHandle:
    """A collective engine handle that completes no sooner than its emulated release time."""

    __slots__ = ("_inner", "_release")

    def __init__(self, inner: Any, release: float) -> None:
        self._inner = inner
        self._release = release  # time.monotonic()

    def wait(self, timeout: float | None = None) -> bool:
        """As the engine handle's ``wait``: True when done (errors raise as there)."""
        start = time.monotonic()
        if not self._inner.wait(timeout):
            return False
        rest = self._release - time.monotonic()
        if rest <= 0:
            return True
        if timeout is not None and start + timeout < self._release:
            time.sleep(max(0.0, start + timeout - time.monotonic()))
            return False
        time.sleep(rest)
        return True

    def done(self) -> bool:
        """Whether the operation completed and its emulated time has passed."""
        return self._inner.done() and time.monotonic() >= self._release

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
