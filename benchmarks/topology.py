"""One topology description for both emulation modes of the micro-cloud benchmark.

A topology is a string of space-separated items:

``A:2,B:2``
    sites and their rank counts, in rank order (ranks 0-1 in A, 2-3 in B); required, first.
``A-B:20mbit:40ms``
    the link between two sites (both directions, one link per direction shared by every rank
    pair that crosses it): a ``tc``-style rate and a one-way latency; any number of them.
``compute=1,1,0.5,0.5``
    relative compute speed per rank (emulated in-process in both modes).
``cpu=B:0.5``
    a CPU quota per rank of a site, in cores (comma-separated for several sites). On the real
    network it is a cgroup quota (``microcloud up --cpu``); in-process it multiplies those
    ranks' compute speed.
``slow=2:3@150``
    rank 2 becomes 3x slower from step 150 on (dynamism; several allowed).

:func:`parse` gives a :class:`Topology`, which renders the ``DLION_EMULATE`` spec of each mode
and the ``microcloud up`` arguments, so a scenario means the same in both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace


@dataclass
class Topology:
    """A parsed topology string (see the module docstring)."""

    sites: list[tuple[str, int]]
    links: list[tuple[str, str, str, str]] = field(default_factory=list)  # a, b, rate, delay
    compute: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    slow: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Number of ranks."""
        return sum(n for _, n in self.sites)

    def site_of_rank(self) -> list[str]:
        """The site of every rank, in rank order."""
        return [name for name, n in self.sites for _ in range(n)]

    def speeds(self, with_quota: bool) -> list[float]:
        """Compute speed per rank; ``with_quota``: times the site's CPU quota (in-process)."""
        base = self.compute or [1.0] * self.size
        sites = self.site_of_rank()
        return [
            s * (self.cpu.get(sites[r], 1.0) if with_quota else 1.0) for r, s in enumerate(base)
        ]

    def _compute_items(self, with_quota: bool) -> list[str]:
        speeds = self.speeds(with_quota)
        items = (
            []
            if all(s == 1.0 for s in speeds)
            else ["compute=" + ",".join(f"{s:g}" for s in speeds)]
        )
        return items + [f"slow={s}" for s in self.slow]

    def emulate_inprocess(self) -> str:
        """``DLION_EMULATE`` for the in-process mode: links, compute speeds, quotas as speeds."""
        links = [f"{a}-{b}:{rate}:{delay}" for a, b, rate, delay in self.links]
        return " ".join(links + self._compute_items(with_quota=True))

    def emulate_realnet(self) -> str:
        """``DLION_EMULATE`` under the real-network testbed: only what the testbed does not do
        (compute speeds, slowdowns); links and quotas are real there."""
        return " ".join(self._compute_items(with_quota=False))

    def microcloud_up(self) -> list[str]:
        """Arguments of ``microcloud up`` for this topology."""
        out = ["--sites", ",".join(f"{name}:{n}" for name, n in self.sites)]
        for a, b, rate, delay in self.links:
            out += ["--link", f"{a}-{b}:{rate}:{delay}"]
        for site, quota in self.cpu.items():
            out += ["--cpu", f"{site}:{quota:g}"]
        return out

    def with_link_rate(self, rate: str) -> Topology:
        """This topology with every site-to-site link's rate replaced by ``rate`` (``tc``
        style, e.g. ``5mbit``); latencies and everything else unchanged."""
        if not re.fullmatch(r"[0-9.]+[kmg]?bit", rate):
            raise ValueError(f"link rate {rate!r}: want a tc-style rate such as 5mbit")
        return replace(self, links=[(a, b, rate, delay) for a, b, _, delay in self.links])

    def on_sites(self, present: list[str]) -> Topology:
        """The part of this topology that ranks of sites ``present`` (one entry per rank, in
        rank order, e.g. ``["A", "A"]`` when site B has left) run: the k-th present rank of a
        site has the compute speed of that site's k-th rank here; links and quotas of absent
        sites are dropped, and so are ``slow`` items (they name ranks of the full layout).
        ``ValueError`` for a site this topology lacks or more ranks of a site than it has."""
        full, speeds = dict(self.sites), self.speeds(with_quota=False)
        first = {name: sum(n for s, n in self.sites[:i]) for i, (name, _) in enumerate(self.sites)}
        sites: list[tuple[str, int]] = []
        compute: list[float] = []
        for name in present:
            if name not in full:
                raise ValueError(f"site {name!r} is not in the topology {self.describe()!r}")
            if sites and sites[-1][0] == name:
                sites[-1] = (name, sites[-1][1] + 1)
            elif name in dict(sites):
                raise ValueError(f"the ranks of site {name!r} are not contiguous in {present}")
            else:
                sites.append((name, 1))
            k = dict(sites)[name] - 1
            if k >= full[name]:
                raise ValueError(f"site {name!r} has {full[name]} ranks, not {k + 1}")
            compute.append(speeds[first[name] + k])
        names = set(dict(sites))
        return Topology(
            sites,
            links=[x for x in self.links if x[0] in names and x[1] in names],
            compute=compute if self.compute else [],
            cpu={s: q for s, q in self.cpu.items() if s in names},
        )

    def describe(self) -> str:
        """The topology string back (normalised)."""
        parts = [",".join(f"{name}:{n}" for name, n in self.sites)]
        parts += [f"{a}-{b}:{rate}:{delay}" for a, b, rate, delay in self.links]
        if self.compute:
            parts.append("compute=" + ",".join(f"{s:g}" for s in self.compute))
        if self.cpu:
            parts.append("cpu=" + ",".join(f"{s}:{q:g}" for s, q in self.cpu.items()))
        parts += [f"slow={s}" for s in self.slow]
        return " ".join(parts)


def parse(text: str) -> Topology:
    """Parse a topology string; ``ValueError`` names the bad item and what is accepted."""
    items = text.split()
    if not items:
        raise ValueError("empty topology: start with the sites, e.g. 'A:2,B:2 A-B:20mbit:40ms'")
    sites: list[tuple[str, int]] = []
    for part in items[0].split(","):
        m = re.fullmatch(r"([A-Za-z0-9]{1,10}):([1-9][0-9]*)", part)
        if not m:
            raise ValueError(f"topology sites {items[0]!r}: want NAME:RANKS,... (e.g. A:2,B:2)")
        sites.append((m.group(1), int(m.group(2))))
    names = [s for s, _ in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"topology sites {items[0]!r}: a site is named twice")
    topo = Topology(sites)
    for item in items[1:]:
        if item.startswith("compute="):
            topo.compute = [float(v) for v in item[8:].split(",")]
            if len(topo.compute) != topo.size or any(not v > 0 for v in topo.compute):
                raise ValueError(f"topology {item!r}: one speed > 0 per rank ({topo.size})")
        elif item.startswith("cpu="):
            for part in item[4:].split(","):
                site, _, q = part.partition(":")
                if site not in names or not q or not float(q) > 0:
                    raise ValueError(f"topology {item!r}: want cpu=SITE:CORES,... of {names}")
                topo.cpu[site] = float(q)
        elif item.startswith("slow="):
            if not re.fullmatch(r"[0-9]+:[0-9.]+x?(@[0-9]+)?", item[5:]):
                raise ValueError(f"topology {item!r}: want slow=RANK:FACTOR@STEP")
            topo.slow.append(item[5:])
        else:
            m = re.fullmatch(
                r"([A-Za-z0-9]+)-([A-Za-z0-9]+):([0-9.]+[kmg]?bit):([0-9.]+(?:us|ms|s))", item
            )
            if (
                not m
                or m.group(1) not in names
                or m.group(2) not in names
                or m.group(1) == m.group(2)
            ):
                raise ValueError(
                    f"topology item {item!r}: want SITE-SITE:RATE:DELAY between two of {names} "
                    "(e.g. A-B:20mbit:40ms), compute=..., cpu=SITE:CORES or slow=RANK:FACTOR@STEP"
                )
            topo.links.append((m.group(1), m.group(2), m.group(3), m.group(4)))
    return topo
