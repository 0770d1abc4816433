"""In-process emulation of a micro-cloud on one machine (no root needed).

``DLION_EMULATE`` (or :func:`configure`) holds a spec of items separated by ``;`` or spaces:

``A-B:20mbit:40ms``
    The link between site ``A`` and site ``B`` (both directions, each direction its own link)
    carries 20 Mbit/s with a one-way latency of 40 ms. Endpoints are site names (``DLION_SITE``,
    as ``shared/tools/microcloud`` sets it), ``*`` for any site, or ``#N`` for rank N. Rates
    follow ``tc``: ``bit``, ``kbit``, ``mbit``, ``gbit`` (bits/s), ``bps``, ``kbps``, ``mbps``,
    ``gbps`` (bytes/s), or ``inf`` for no limit; latencies take ``us``, ``ms`` or ``s``. The
    most specific item wins: rank pair, then site pair, then a site with ``*``, then ``*-*``.
    ``A-A:...`` sets the links inside site A.

``compute=1,1,0.5,0.5``
    Relative compute speed per rank (0.5: half as fast). Applied by :func:`slowdown` (which
    :meth:`dlion.DynamicBatcher.compute` uses): a rank of speed ``s < 1`` sleeps
    ``(1/s - 1)`` times the measured compute of the block, so it is, and measures as, slower.

``slow=2:3@200``
    Rank 2 becomes 3x slower from step 200 on (dynamism); several ``slow`` items may be given.

Links are emulated by the peer engine, which paces each link's send queue: a message leaves for
real only when the emulated link would have delivered it (``csrc/engine/link.h``). Dense
collectives (``dlion.Allreduce``) are not paced.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import clocks

_RATE_UNITS = {
    "bit": 1 / 8,
    "kbit": 1e3 / 8,
    "mbit": 1e6 / 8,
    "gbit": 1e9 / 8,
    "bps": 1.0,
    "kbps": 1e3,
    "mbps": 1e6,
    "gbps": 1e9,
}
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class LinkCap:
    """An emulated link: bandwidth in bytes/s (0: unlimited) and one-way latency in seconds."""

    bandwidth_Bps: float = 0.0
    latency_s: float = 0.0


@dataclass(frozen=True)
class Slowdown:
    """Rank ``rank`` computes ``factor`` times slower from step ``step`` on."""

    rank: int
    factor: float
    step: int


@dataclass
class Spec:
    """A parsed ``DLION_EMULATE`` spec."""

    links: list[tuple[str, str, LinkCap]] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    slowdowns: list[Slowdown] = field(default_factory=list)

    def link(self, a: int, b: int, sites: list[str]) -> LinkCap:
        """The cap of the link from rank ``a`` to rank ``b`` (most specific item wins)."""
        best: tuple[int, LinkCap] | None = None
        for x, y, cap in self.links:
            for p, q in ((x, y), (y, x)):
                score = _match(p, a, sites) * _match(q, b, sites)
                if score and (best is None or score >= best[0]):
                    best = (score, cap)
        return best[1] if best else LinkCap()

    def caps(self, rank: int, sites: list[str]) -> list[LinkCap]:
        """The cap of every link out of ``rank`` (own entry unlimited)."""
        return [LinkCap() if p == rank else self.link(rank, p, sites) for p in range(len(sites))]

    def speed(self, rank: int, step: int) -> float:
        """Relative compute speed of ``rank`` at ``step`` (1.0: full speed)."""
        speed = self.compute[rank] if rank < len(self.compute) else 1.0
        for s in self.slowdowns:
            if s.rank == rank and step >= s.step:
                speed /= s.factor
        return speed


def _match(endpoint: str, rank: int, sites: list[str]) -> int:
    """How specifically ``endpoint`` names ``rank``: 3 rank, 2 site, 1 wildcard, 0 not at all."""
    if endpoint.startswith("#"):
        return 3 if int(endpoint[1:]) == rank else 0
    if endpoint == "*":
        return 1
    return 2 if sites[rank] == endpoint else 0


def parse_rate(text: str) -> float:
    """Bytes/s of a ``tc``-style rate (``20mbit``, ``1gbps``, ``inf``)."""
    t = text.strip().lower()
    if t in ("inf", "0", "none", "unlimited"):
        return 0.0
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]+)", t)
    if not m or m.group(2) not in _RATE_UNITS or float(m.group(1)) <= 0:
        raise ValueError(
            f"bad rate {text!r}: use a positive number with one of {sorted(_RATE_UNITS)} "
            "(e.g. 20mbit), or inf"
        )
    return float(m.group(1)) * _RATE_UNITS[m.group(2)]


def parse_time(text: str) -> float:
    """Seconds of a latency such as ``40ms``, ``250us`` or ``0.1s``."""
    t = text.strip().lower()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(us|ms|s)", t)
    if not m:
        raise ValueError(f"bad latency {text!r}: use a number with us, ms or s (e.g. 40ms)")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def parse(spec: str) -> Spec:
    """Parse a ``DLION_EMULATE`` spec; ``ValueError`` names the bad item and what is allowed."""
    out = Spec()
    for item in re.split(r"[;\s]+", spec.strip()):
        if not item:
            continue
        try:
            if item.startswith("compute="):
                out.compute = [float(v) for v in item[len("compute=") :].split(",")]
                if any(not v > 0 for v in out.compute):
                    raise ValueError("speeds must be > 0")
            elif item.startswith("slow="):
                who, rest = item[len("slow=") :].split(":")
                factor, _, step = rest.partition("@")
                s = Slowdown(int(who), float(factor.rstrip("x")), int(step or 0))
                if s.factor <= 0 or s.rank < 0 or s.step < 0:
                    raise ValueError("rank, factor and step must be >= 0 (factor > 0)")
                out.slowdowns.append(s)
            else:
                ends, rate, *lat = item.split(":")
                a, sep, b = ends.partition("-")
                if not sep or not a or not b or len(lat) > 1:
                    raise ValueError("not of the form A-B:rate[:latency]")
                for e in (a, b):
                    if e.startswith("#") and not e[1:].isdigit():
                        raise ValueError(f"rank endpoint {e!r} must be # and a rank number")
                cap = LinkCap(parse_rate(rate), parse_time(lat[0]) if lat else 0.0)
                out.links.append((a, b, cap))
        except ValueError as e:
            raise ValueError(
                f"DLION_EMULATE item {item!r}: {e}. Items are A-B:rate[:latency] "
                "(e.g. A-B:20mbit:40ms), compute=s0,s1,... and slow=rank:factor@step"
            ) from None
    return out


def configure(spec: str | Spec) -> Spec:
    """Emulate ``spec`` from now on (links: for messages queued afterwards). Call it on every
    rank with the same spec; ``dlion.init`` calls it with ``DLION_EMULATE``."""
    from . import runtime

    parsed = parse(spec) if isinstance(spec, str) else spec
    runtime._set_emulation(parsed)
    return parsed


def current() -> Spec:
    """The spec in force (empty when nothing is emulated)."""
    from . import runtime

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

    Uses the spec in force after ``dlion.init``; before it, ``DLION_EMULATE`` as rank 0."""
    from . import runtime

    if runtime.is_initialized():
        spec, me = current(), runtime.rank()
    else:
        spec, me = parse(os.environ.get("DLION_EMULATE", "")), 0
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
