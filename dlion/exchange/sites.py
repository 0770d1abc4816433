"""Site-aware peer exchange (DESIGN.md section 2, "Sites, not only ranks").

All ranks of a site share that site's wide-area link to another site, so instead of every rank
sending every remote rank its own message, one exchange of buffer ``x`` (n elements) on the
``i``-th rank of site ``S`` (``N_S`` ranks) runs in three phases, all on the peer engine (one
communicator, one progress thread, every message validated):

1. **Reduce-scatter inside the site** (dense, synchronous). Site ``S`` cuts the vector
   into ``N_S`` contiguous shards; shard ``j`` of every site mate goes to the site's ``j``-th
   rank, which ends with ``s_i = sum over the site's ranks q of w_q * x_q[shard i]`` (the
   batch-share weights ``w_q``; the rank of a one-rank site just scales its own).
2. **Each site pair carries the site's sum once.** Rank ``j`` of site ``T`` needs shard ``j``
   of ``T``'s cut of every other site's sum; rank ``i`` of ``S`` sends it the overlap of its
   shard with that (with sites of equal size: its whole shard to rank ``i`` of ``T``; with
   uneven sites one or two pieces), with the policy's codec for that link (DLion: the per-link
   prioritized top-k sized to the link's measured bandwidth) and error feedback in a residual
   per link, i.e. per site pair and piece. This phase may run ``staleness`` steps ahead of the
   other sites (bounded staleness across sites, each message applied exactly once): the
   wide-area transfer then overlaps the next steps' compute. Inside a site it is synchronous.
3. **Allgather inside the site** (dense, synchronous): rank ``j`` adds the pieces it received
   to ``s_j``, which gives shard ``j`` of the result, and sends it to its site mates: every
   rank of the site ends with the site's sum plus every other site's (decoded) contribution,
   the same bits on every rank of the site.

The in-site phases carry float32 (``DENSE_PLAN``) unless the policy's ``in_site_plan`` names
another dense encoding: :class:`dlion.CastAllreduce` runs them in ``fp16``/``bf16`` over all
ranks as one site. Then every contribution is rounded once to half precision before it is sent
or summed (a rank rounds its own shard itself, as the encoder rounds the others), the shard
owner's sum is rounded once more before the allgather, and the owner keeps the rounded values
it sends, so every rank ends with the same bits.

The ``S -> T`` link so carries ``S``'s combined gradient once per step, spread over ``S``'s
ranks, instead of ``N_S * N_T`` messages; each rank encodes about ``n / N_S`` elements per
other site and keeps the residuals of those pieces only. Inside the site every rank sends and
receives about ``2 n`` floats per step, whatever the site's size (reduce-scatter + allgather).

Every rank must name the same groups in the same order, so a top-level exchange registers
the groups of every site (including those this rank never joins) at its first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import dlion_core as _core

from .. import runtime
from .plans import dense_plan

DENSE_PLAN = dense_plan(512)  # dense float32, no error feedback

#: The dense half-precision wire encodings and the rounding their encoder applies (the same
#: C++ kernels): what a value becomes on the wire, rounded here through the same cast.
_CASTS = {
    int(_core.WIRE_ENCODINGS["fp16"]): (_core.to_fp16, _core.from_fp16),
    int(_core.WIRE_ENCODINGS["bf16"]): (_core.to_bf16, _core.from_bf16),
}


@dataclass(frozen=True)
class SiteLayout:
    """Which rank is where: sites in order of first appearance, their ranks in rank order."""

    sites: tuple[str, ...]
    members: dict[str, tuple[int, ...]]
    rank: int

    @classmethod
    def of(cls, site_of_rank: list[str], rank: int) -> SiteLayout:
        order = tuple(dict.fromkeys(site_of_rank))
        members = {s: tuple(r for r, t in enumerate(site_of_rank) if t == s) for s in order}
        return cls(order, members, rank)

    @classmethod
    def one_site(cls, size: int, rank: int) -> SiteLayout:
        """Every rank of the job in one site, whatever ``dlion.sites()`` says (a dense
        exchange over all ranks: :class:`dlion.CastAllreduce`)."""
        return cls.of(["*"] * size, rank)

    @property
    def site(self) -> str:
        """This rank's site."""
        return next(s for s, m in self.members.items() if self.rank in m)

    @property
    def index(self) -> int:
        """This rank's position among its site's ranks."""
        return self.members[self.site].index(self.rank)

    def mates(self) -> tuple[int, ...]:
        """The other ranks of this rank's site."""
        return tuple(q for q in self.members[self.site] if q != self.rank)

    def counterpart(self, shard: int, site: str) -> int:
        """The rank of ``site`` that receives shard ``shard`` of every other site's sum."""
        ranks = self.members[site]
        return ranks[shard % len(ranks)]


def shards(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (offset, length) pieces of ``n`` elements, lengths differing by
    at most one (the first ``n % parts`` pieces are the longer)."""
    base, extra = divmod(n, parts)
    out, offset = [], 0
    for j in range(parts):
        length = base + (1 if j < extra else 0)
        out.append((offset, length))
        offset += length
    return out


def overlap(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """The (offset, length) where two (offset, length) pieces overlap; length 0: none."""
    lo, hi = max(a[0], b[0]), min(a[0] + a[1], b[0] + b[1])
    return (lo, max(0, hi - lo))


def group_names(name: str, layout: SiteLayout) -> list[str]:
    """Every sub-exchange name of the top-level exchange ``name``, in the one order every rank
    registers them: reduce-scatter shards, wide-area pieces (sender site, receiver site,
    sender's shard, receiver's shard), then allgather shards, site by site."""
    sizes = {s: len(m) for s, m in layout.members.items()}
    out = [f"{name}@{s}#rs{j}" for s in layout.sites for j in range(sizes[s])]
    out += [
        f"{name}@{s}>{t}#{i}.{j}"
        for s in layout.sites
        for t in layout.sites
        if t != s
        for i in range(sizes[s])
        for j in range(sizes[t])
    ]
    out += [f"{name}@{s}#ag{j}" for s in layout.sites for j in range(sizes[s])]
    return out


def sent_pieces(name: str, layout: SiteLayout, n: int) -> list[str]:
    """The names of the wide-area pieces this rank sends for an ``n``-element exchange."""
    site, i = layout.site, layout.index
    mine = shards(n, len(layout.members[site]))[i]
    return [
        f"{name}@{site}>{t}#{i}.{j}"
        for t in layout.sites
        if t != site
        for j, shard in enumerate(shards(n, len(layout.members[t])))
        if overlap(mine, shard)[1] > 0
    ]


def with_send(plan: tuple, send: bool) -> tuple:
    """A link plan (5 or 8 fields) with the engine's ``send`` flag as its 9th field."""
    full = tuple(plan) if len(plan) == 8 else (*plan, 0, 0.0, 0)
    return (*full, send)


@dataclass
class Scratch:
    """The buffers one top-level exchange reuses every step (the engine reads and writes them
    while a phase is in flight, so they must outlive the handles)."""

    site_sum: np.ndarray  # this rank's shard of the site's weighted sum
    send_out: dict[int, np.ndarray] = field(default_factory=dict)  # unused outputs, per group
    zeros: dict[int, np.ndarray] = field(default_factory=dict)  # receive-only inputs
    pieces: dict[int, np.ndarray] = field(default_factory=dict)  # received remote pieces


def layout() -> SiteLayout:
    """The site layout of the running job."""
    return SiteLayout.of(runtime.sites(), runtime.rank())


def round_in_place(values: np.ndarray, encoding: int) -> None:
    """Round ``values`` (float32, contiguous) to what the dense ``encoding`` carries: a no-op
    for float32, the fp16/bf16 cast and back for those. A value that rounds to -0.0 becomes
    +0.0: a receiver of the allgather adds the decoded value to +0.0, which gives +0.0, so the
    owner keeps that too (the same bits everywhere)."""
    cast = _CASTS.get(int(encoding))
    if cast is not None and values.size:
        to_half, from_half = cast
        from_half(to_half(values), out=values)
        np.add(values, np.float32(0.0), out=values)  # -0.0 + 0.0 = +0.0; all else unchanged


class SiteRound:
    """One step of the site-aware exchange of one buffer (phase 1 starts at construction;
    ``wait`` runs phases 2 and 3). ``policy`` is the :class:`dlion.PeerExchange` whose
    per-link plans the wide-area shards follow; its ``in_site_plan()`` is the plan of phases
    1 and 3."""

    def __init__(
        self,
        policy,  # PeerExchange (not imported: it imports this module)
        buffer: np.ndarray,
        name: str,
        step: int,
        sync: bool,
        where: SiteLayout,
        scratch: Scratch,
        group_id,
        cross_sites: bool = True,
    ) -> None:
        self.policy, self.buffer, self.name, self.step, self.sync = policy, buffer, name, step, sync
        self.where, self.scratch, self.gid = where, scratch, group_id
        self.cross_sites = cross_sites  # False: phases 1 and 3 only (a dense in-site average)
        self.size = runtime.size()
        self.engine = runtime.peer_engine()
        self.weight = policy.current_weight()
        self.local = tuple(policy.in_site_plan())  # phases 1 and 3
        site, i = where.site, where.index
        self.parts = shards(buffer.size, len(where.members[site]))
        self.own = self.parts[i]
        self._handles: list = []
        self._stage = 1
        # This rank's own term of its shard = what its mates' shards become on the wire.
        round_in_place(buffer[self.own[0] : self.own[0] + self.own[1]], self.local[0])
        if len(where.members[site]) == 1:
            np.multiply(buffer, np.float32(self.weight), out=scratch.site_sum)
            return
        for j, (off, ln) in enumerate(self.parts):
            if ln == 0:
                continue
            group = group_id(f"{name}@{site}#rs{j}")
            target = where.members[site][j]
            send: tuple[int, ...]
            expect: tuple[int, ...]
            if j == i:
                out = scratch.site_sum
                send, expect = (), where.mates()
            else:
                out = scratch.send_out.setdefault(group, np.empty(ln, np.float32))
                send, expect = (target,), ()
            self._handles.append(
                self._exchange(buffer[off : off + ln], out, group, send, expect, self.weight)
            )

    # -- one engine exchange over a subset of the peers ---------------------------------------
    def _exchange(
        self, grad, out, group, send, expect, weight, plans=None, wide=False, reference=None
    ):
        base = plans if plans is not None else [self.local] * self.size
        links = [with_send(base[p], p in send) for p in range(self.size)]
        mask = [p in expect for p in range(self.size)]
        return self.engine.exchange(
            grad,
            out,
            group,
            self.step,
            links,
            weight=weight,
            staleness=self.policy.staleness if wide else 0,
            sync=self.sync or not wide,
            name=self.name,
            reference=reference,
            expect=mask,
        )

    def _wide_area(self) -> None:
        w, s, n = self.where, self.scratch, self.buffer.size
        site, i = w.site, w.index
        mine = self.own
        ref: np.ndarray | None = None
        for t in w.sites:
            if t == site:
                continue
            theirs = shards(n, len(w.members[t]))
            # Send: the overlap of this rank's shard with each shard of t's cut.
            for j, shard in enumerate(theirs):
                off, ln = overlap(mine, shard)
                if ln == 0:
                    continue
                group = self.gid(f"{self.name}@{site}>{t}#{i}.{j}")
                peer = w.members[t][j]
                plans = self.policy.site_plan(ln, group, peer, self.step)
                out = s.send_out.setdefault(group, np.empty(ln, np.float32))
                seg = s.site_sum[off - mine[0] : off - mine[0] + ln]
                if ref is None:  # Gaia's |parameters|, read once per step
                    ref = self.policy.reference(self.name, n, plans)
                self._handles.append(
                    self._exchange(
                        seg,
                        out,
                        group,
                        (peer,),
                        (),
                        1.0,
                        plans=plans,
                        wide=True,
                        reference=None if ref is None else ref[off : off + ln],
                    )
                )
            # Receive: the overlap of each of t's shards with this rank's shard of site's cut.
            for j, shard in enumerate(theirs):
                off, ln = overlap(shard, mine)
                if ln == 0:
                    continue
                group = self.gid(f"{self.name}@{t}>{site}#{j}.{i}")
                zeros = s.zeros.setdefault(group, np.zeros(ln, np.float32))
                piece = s.pieces.setdefault(group, np.empty(ln, np.float32))
                sender = (w.members[t][j],)
                self._handles.append(
                    self._exchange(zeros, piece, group, (), sender, 0.0, wide=True)
                )

    def _combine(self) -> None:
        w, s, n = self.where, self.scratch, self.buffer.size
        site, i = w.site, w.index
        off, ln = self.own
        mine = self.buffer[off : off + ln]
        mine[...] = s.site_sum
        for t in w.sites:
            if t == site or not self.cross_sites:
                continue
            for j, shard in enumerate(shards(n, len(w.members[t]))):
                o, length = overlap(shard, self.own)
                if length:
                    group = self.gid(f"{self.name}@{t}>{site}#{j}.{i}")
                    mine[o - off : o - off + length] += s.pieces[group]
        round_in_place(mine, self.local[0])  # what the allgather carries, kept here too
        if len(w.members[site]) == 1:
            return
        for j, (o, length) in enumerate(self.parts):
            if length == 0:
                continue
            group = self.gid(f"{self.name}@{site}#ag{j}")
            if j == i:
                out = s.send_out.setdefault(group, np.empty(length, np.float32))
                self._handles.append(self._exchange(mine, out, group, w.mates(), (), 1.0))
            else:
                zeros = s.zeros.setdefault(group, np.zeros(length, np.float32))
                owner = (w.members[site][j],)
                target = self.buffer[o : o + length]
                self._handles.append(self._exchange(zeros, target, group, (), owner, 0.0))

    def wait(self, timeout: float | None = None) -> bool:
        """Run the exchange to its end; False if ``timeout`` passed first (call again)."""
        while self._stage <= 3:
            while self._handles:
                if not self._handles[0].wait(timeout):
                    return False
                self._handles.pop(0)
            self._stage += 1
            if self._stage == 2 and self.cross_sites:
                self._wide_area()
            elif self._stage == 3:
                self._combine()
        return True
