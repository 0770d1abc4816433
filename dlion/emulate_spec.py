"""The ``DLION_EMULATE`` spec: its dataclasses, its parser and its check against a topology.

Pure: no dlion imports, no MPI, no environment. :mod:`dlion.emulate` re-exports every name here
and applies a spec to the running engine; :mod:`dlion.config` parses one to validate it.

A spec is items separated by ``;`` or spaces:

``A-B:20mbit:40ms``
    The link between site ``A`` and site ``B`` (both directions, each direction its own link)
    carries 20 Mbit/s with a one-way latency of 40 ms, shared: all ranks of ``A`` sending to
    ranks of ``B`` take turns on the one ``A->B`` wire, as on a real network (two of them
    sending at once get about 10 Mbit/s each). Endpoints are site names (``DLION_SITE``,
    as ``shared/tools/microcloud`` sets it), ``*`` for any site, or ``#N`` for rank N. A site
    name that contains ``-``, ``:`` or ``[`` is written in square brackets:
    ``[eu-west]-[us-east]:20mbit``, ``[eu-west]-#3:1gbit``; brackets may quote any site name
    (``[A]-B`` is ``A-B``); a site cannot be named ``*``, start with ``#`` or contain ``]``,
    spaces or ``;``. Rates follow ``tc``: ``bit``, ``kbit``, ``mbit``, ``gbit`` (bits/s),
    ``bps``, ``kbps``, ``mbps``, ``gbps`` (bytes/s), or ``inf`` for no limit; latencies take
    ``us``, ``ms`` or ``s``. The most specific item wins: rank pair, then site pair, then a site
    with ``*``, then ``*-*``. ``A-A:...`` sets the links inside site A.

    Sharing: an item naming sites (or ``*``) caps each ordered site pair once, as one wire
    for every rank pair that crosses it: ``*-B:20mbit`` gives ``A->B`` and ``C->B`` 20 Mbit/s
    each. Inside a site, ``A-A:1gbit`` (or ``*-*``) is one wire too, shared by every rank pair
    of ``A`` in both directions (a site's LAN as one shared medium, a hub rather than a
    switch): ranks of one site that exchange at once divide its rate. An item naming a rank
    (``#0-#2:...``, ``#0-B:...``) gives each rank pair it decides a link of its own, shared with
    nobody. A message takes the wire whole, in the order messages were queued, and is handed to
    MPI one latency after its last byte left it. Wires are shared between the processes of one
    host (a table in POSIX shared memory); ranks of one site on different hosts pace their
    traffic on separate wires (the in-process emulation is a one-machine tool).

``compute=1,1,0.5,0.5``
    Relative compute speed per rank (0.5: half as fast); ranks not listed run at 1.

``slow=2:3@200``
    Rank 2 becomes 3x slower from step 200 on (dynamism); several ``slow`` items may be given.

:func:`parse` checks the grammar only. Whether the ranks and sites an item names exist is known
once the ranks are: :meth:`Spec.check` (``dlion.init`` and ``dlion.emulate.configure`` call it)
rejects an item that names a rank or a site no rank has, naming the ones that exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["LinkCap", "Slowdown", "Spec", "parse", "parse_rate", "parse_time"]

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
# One endpoint: a bracketed site name, or a bare one (no '-', ':' or brackets).
_ENDPOINT = r"\[[^\[\]]+\]|[^\[\]:-]+"
_LINK = re.compile(rf"({_ENDPOINT})-({_ENDPOINT})(?::(.*))?")
_GRAMMAR = (
    "Items are A-B:rate[:latency] (e.g. A-B:20mbit:40ms; a site name with '-' in brackets: "
    "[eu-west]-B:20mbit), compute=s0,s1,... and slow=rank:factor@step"
)


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
    """A parsed ``DLION_EMULATE`` spec. A link's endpoints are ``#N`` (rank N), ``*`` (any site)
    or a site name as it is (unbracketed)."""

    links: list[tuple[str, str, LinkCap]] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    slowdowns: list[Slowdown] = field(default_factory=list)

    def link(self, a: int, b: int, sites: list[str]) -> LinkCap:
        """The cap of the link from rank ``a`` to rank ``b`` (most specific item wins)."""
        item = self._item(a, b, sites)
        return item[2] if item else LinkCap()

    def shared(self, a: int, b: int, sites: list[str]) -> bool:
        """Whether the link from rank ``a`` to rank ``b`` is its site pair's wire, shared by
        every rank pair from ``a``'s site to ``b``'s: the item that decides it names sites (or
        ``*``), not a rank, and limits the bandwidth."""
        item = self._item(a, b, sites)
        return (
            item is not None
            and not any(e.startswith("#") for e in item[:2])
            and item[2].bandwidth_Bps > 0
        )

    def _item(self, a: int, b: int, sites: list[str]) -> tuple[str, str, LinkCap] | None:
        """The item that decides the link from ``a`` to ``b``: the most specific one, the
        last of equally specific ones."""
        best: tuple[int, tuple[str, str, LinkCap]] | None = None
        for item in self.links:
            x, y, _ = item
            for p, q in ((x, y), (y, x)):
                score = _match(p, a, sites) * _match(q, b, sites)
                if score and (best is None or score >= best[0]):
                    best = (score, item)
        return best[1] if best else None

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

    def check(self, sites: list[str]) -> None:
        """Raise ``ValueError`` naming the first item that names a rank or a site that does not
        exist among ``sites`` (the site of every rank, indexed by rank), and the ones that do."""
        size = len(sites)
        known = sorted(set(sites))
        where = (
            f"the sites are {', '.join(_quote(s) for s in known)} and the ranks #0..#{size - 1} "
            f"({size} rank{'s' if size != 1 else ''})"
        )
        for a, b, _ in self.links:
            for e in (a, b):
                if e.startswith("#") and int(e[1:]) >= size:
                    problem = f"names rank {e}, which does not exist"
                elif not e.startswith("#") and e != "*" and e not in known:
                    problem = f"names site {_quote(e)}, which no rank has"
                else:
                    continue
                item = f"{_quote(a)}-{_quote(b)}:..."
                raise ValueError(f"DLION_EMULATE item {item!r} {problem}: {where}")
        if len(self.compute) > size:
            item = "compute=" + ",".join(f"{v:g}" for v in self.compute)
            raise ValueError(
                f"DLION_EMULATE item {item!r} gives {len(self.compute)} speeds, for ranks that do "
                f"not exist: {where}"
            )
        for s in self.slowdowns:
            if s.rank >= size:
                item = f"slow={s.rank}:{s.factor:g}@{s.step}"
                raise ValueError(
                    f"DLION_EMULATE item {item!r} names rank {s.rank}, which does not exist: "
                    f"{where}"
                )


def _match(endpoint: str, rank: int, sites: list[str]) -> int:
    """How specifically ``endpoint`` names ``rank``: 3 rank, 2 site, 1 wildcard, 0 not at all."""
    if endpoint.startswith("#"):
        return 3 if int(endpoint[1:]) == rank else 0
    if endpoint == "*":
        return 1
    return 2 if sites[rank] == endpoint else 0


def _quote(site: str) -> str:
    """A site name as a spec writes it: bracketed when it holds ``-``, ``:`` or ``[``."""
    return f"[{site}]" if re.search(r"[-:\[]", site) else site


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


def _endpoint(text: str) -> str:
    """One link endpoint as :class:`Spec` keeps it (brackets removed, rank numbers checked)."""
    if text.startswith("["):
        name = text[1:-1]
        if name == "*" or name.startswith("#") or name != name.strip():
            raise ValueError(
                f"site name {text!r}: a site cannot be named '*', start with '#' or have "
                "leading or trailing spaces"
            )
        return name
    if text.startswith("#") and not text[1:].isdigit():
        raise ValueError(f"rank endpoint {text!r} must be # and a rank number")
    return text


def _parse_link(item: str) -> tuple[str, str, LinkCap]:
    m = _LINK.fullmatch(item)
    if not m or m.group(3) is None:
        hint = ""
        if not item.startswith("[") and item.partition(":")[0].count("-") > 1:
            hint = " (a site name that contains '-' goes in brackets: [eu-west]-B:20mbit)"
        raise ValueError(f"not of the form A-B:rate[:latency]{hint}")
    rate, *lat = m.group(3).split(":")
    if len(lat) > 1:
        raise ValueError("not of the form A-B:rate[:latency]")
    cap = LinkCap(parse_rate(rate), parse_time(lat[0]) if lat else 0.0)
    return _endpoint(m.group(1)), _endpoint(m.group(2)), cap


def parse(spec: str) -> Spec:
    """Parse a ``DLION_EMULATE`` spec; ``ValueError`` names the bad item and what is allowed.

    Checks the grammar only: whether the ranks and sites exist is :meth:`Spec.check`'s part."""
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
                out.links.append(_parse_link(item))
        except ValueError as e:
            raise ValueError(f"DLION_EMULATE item {item!r}: {e}. {_GRAMMAR}") from None
    return out
