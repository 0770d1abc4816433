"""Statistics of the peer links, as the peer engine measures them.

Every message a rank sends to a peer is acknowledged by the peer's progress thread as soon as it
arrives; the time from when the link starts sending the message (once its own previous messages have
left; on an emulated site pair's shared wire it may still wait there for other rank pairs' messages,
as on a real shared link) to its acknowledgement gives the link's latency (small messages: half the
round trip) and bandwidth (large messages: bytes over the round trip less two latencies), kept as
exponential moving averages. ``dlion.init`` seeds them with a short probe of every link
(``probe_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from . import runtime


@dataclass(frozen=True)
class LinkStats:
    """One link, from this rank to ``peer``. Bytes count whole wire messages, headers included."""

    peer: int
    bytes_sent: int
    messages_sent: int
    bytes_received: int
    messages_received: int
    control_bytes_sent: int
    """Probes and acknowledgements (not in ``bytes_sent``, which counts gradient messages)."""
    bandwidth_Bps: float
    """Measured bandwidth (EWMA, bytes/s); 0.0 until a large enough message was timed."""
    latency_s: float
    """Measured one-way latency (EWMA, seconds); 0.0 until measured."""
    bandwidth_samples: int
    latency_samples: int
    timed_bytes: float
    timed_seconds: float
    last_k: int
    """Entries carried by the last gradient message sent on this link."""
    last_step_received: int
    """Newest step received from the peer (-1: none)."""
    staleness_last: int
    """Steps between when the last applied message was sent and the step it was applied at."""
    staleness_max: int
    emulated_bandwidth_Bps: float
    """The emulated cap (0.0: not emulated), see :mod:`dlion.emulate`."""
    emulated_latency_s: float
    emulated_shared: bool
    """Whether the emulated cap is the site pair's wire, shared with every rank pair that
    crosses it (False: the link's own, from a rank-pair item, or not emulated)."""

    @property
    def achieved_bandwidth_Bps(self) -> float:
        """Bytes over seconds of every timed transfer so far (0.0 when none)."""
        return self.timed_bytes / self.timed_seconds if self.timed_seconds > 0 else 0.0


_FIELDS = [f.name for f in fields(LinkStats) if f.name != "peer"]


def link_stats() -> dict[int, LinkStats]:
    """The statistics of every link out of this rank, keyed by peer rank."""
    raw = runtime.peer_engine().link_stats()
    me = runtime.rank()
    return {
        p: LinkStats(peer=p, **{k: d[k] for k in _FIELDS}) for p, d in enumerate(raw) if p != me
    }
