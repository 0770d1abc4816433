"""Decentralized peer exchange over the peer engine: every rank sends every peer its own message.

The policy here is fixed per link (same codec on every link); :class:`dlion.PerLinkExchange`
derives it per link from measured bandwidth. What the engine does with it is specified in
``csrc/engine/peer_engine.h``: per-link encoding and error-feedback residuals in C++, paced
sends when links are emulated, bounded staleness, every message applied exactly once.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

import dlion_core as _core

from .. import links, runtime
from ..errors import InvalidArgumentError
from . import sites as _sites
from .base import Exchange, Pending

Codec = Literal["dense", "topk", "qsgd", "sign", "fp16", "bf16"]
Topology = Literal["auto", "sites", "ranks"]
_TOPOLOGIES = ("auto", "sites", "ranks")
_CODECS = ("dense", "topk", "qsgd", "sign", "fp16", "bf16")
#: One link's plan as the engine takes it: (encoding, k, bits, bucket, error_feedback), or
#: with a selection rule (..., select, threshold, offset); see csrc/wire/encode.h.
LinkPlan = tuple[int, int, int, int, bool] | tuple[int, int, int, int, bool, int, float, int]


@dataclass
class Groups:
    """The peer engine's tensor groups of one run (``dlion.init`` to ``dlion.shutdown``, as the
    engine): every exchange name gets an id, in the order names are first used, which is the
    same on every rank; so is each group's step count. Held by the runtime
    (:func:`dlion.runtime.run_state`), so a new run starts again from group 0, step 0."""

    ids: dict[str, int] = field(default_factory=dict)
    steps: dict[int, int] = field(default_factory=dict)


def group_id(name: str) -> int:
    """The peer engine's tensor-group id of the exchange ``name`` in this run."""
    ids = runtime.run_state(Groups).ids
    return ids.setdefault(name, len(ids))


def last_step(group: int) -> int:
    """The last step the group exchanged in this run (-1: none yet)."""
    return runtime.run_state(Groups).steps.get(group, -1)


class PeerExchange(Exchange):
    """Every rank sends each peer its gradient, compressed per link, and applies the weighted
    aggregate of its own and its peers' contributions (DESIGN.md section 2).

    Args:
        codec: ``"dense"`` (float32), ``"topk"`` (the ``k_ratio * n`` entries of largest
            magnitude; with ``bits=8`` their values are 8-bit quantized), ``"qsgd"`` (all
            values, ``bits`` = 2, 4 or 8), ``"sign"`` (1 bit and a scale), ``"fp16"``, ``"bf16"``.
        k_ratio: fraction of entries ``"topk"`` sends (at least one entry).
        bits: ``"topk"``: 32 (float values) or 8 (quantized); ``"qsgd"``: 2, 4 or 8.
        error_feedback: keep what a link did not carry in that link's residual and send it
            later (default: on for every lossy codec, off for ``"dense"``).
        staleness: 0 is synchronous; ``s > 0`` lets a rank run up to ``s`` steps ahead of its
            slowest peer, applying peers' messages as they arrive (each exactly once).
        weight: this rank's aggregation weight; default ``1 / size`` (plain average). Dynamic
            batching sets it to ``b_i / sum(b)``.
        bucket: values per scale of the quantized codecs.
        topology: ``"ranks"`` (default here): every rank sends every peer its own message (the
            paper's literal form); ``"sites"``: the site-aware exchange
            (:mod:`dlion.exchange.sites`): dense inside a site, each site pair carries the
            site's combined gradient once, sharded over the site's ranks, with ``staleness``
            applying across sites only; ``"auto"``: ``"sites"`` when ``dlion.sites()`` names
            more than one site and some site has several ranks, else ``"ranks"``.
    """

    #: Not a collective: peers are not in lockstep, so per-step agreement rounds (the
    #: non-finite vote, dlion.join's control round) are skipped for it.
    collective = False
    #: The site-aware exchange's wide-area phase runs (False: only the dense in-site average,
    #: as :class:`dlion.OuterSync`'s inner steps use it).
    cross_sites = True

    def __init__(
        self,
        codec: Codec = "dense",
        *,
        k_ratio: float = 0.01,
        bits: int | None = None,
        error_feedback: bool | None = None,
        staleness: int = 0,
        weight: float | None = None,
        bucket: int = 512,
        topology: Topology = "ranks",
    ) -> None:
        if topology not in _TOPOLOGIES:
            raise InvalidArgumentError(
                f"PeerExchange(topology={topology!r}): use one of {_TOPOLOGIES}"
            )
        if codec not in _CODECS:
            raise InvalidArgumentError(f"PeerExchange(codec={codec!r}): use one of {_CODECS}")
        if not 0.0 < k_ratio <= 1.0:
            raise InvalidArgumentError(f"PeerExchange(k_ratio={k_ratio}): must be in (0, 1]")
        allowed: tuple[int, ...] = {"topk": (32, 8), "qsgd": (8, 4, 2)}.get(codec, ())
        if bits is not None and bits not in allowed:
            raise InvalidArgumentError(
                f"PeerExchange(codec={codec!r}, bits={bits}): "
                + (f"allowed bits are {allowed}" if allowed else "this codec takes no bits")
            )
        if not isinstance(staleness, int) or staleness < 0:
            raise InvalidArgumentError(f"PeerExchange(staleness={staleness!r}): must be >= 0")
        if weight is not None and not (math.isfinite(weight) and weight >= 0):
            raise InvalidArgumentError(f"PeerExchange(weight={weight}): must be finite, >= 0")
        if bucket < 1:
            raise InvalidArgumentError(f"PeerExchange(bucket={bucket}): must be >= 1")
        self.codec: Codec = codec
        self.k_ratio = k_ratio
        self.bits: int = bits if bits is not None else (allowed[0] if allowed else 0)
        self.error_feedback = codec != "dense" if error_feedback is None else error_feedback
        self.staleness = staleness
        self.weight = weight
        self.bucket = bucket
        self.topology: Topology = topology
        self._names: dict[str, None] = {}  # the groups this policy ran, in first-use order
        self._tops: dict[str, None] = {}  # the exchanges it was asked for (names of start())
        self._scratch: dict[str, _sites.Scratch] = {}
        self._sync_next = False
        self._synced: set[str] = set()
        self._run: weakref.ref[Groups] | None = None  # the run (dlion.init) the above belong to
        # dlion.checkpoint's restore at another world size: gradient mass (folded residuals)
        # that the next exchange of a name adds to its buffer; and the exchanges' sizes.
        self._pending: dict[str, np.ndarray] = {}
        self._buffer_sizes: dict[str, int] = {}

    # -- policy ---------------------------------------------------------------------------
    def encoding(self) -> int:
        """The wire encoding of this policy's messages (``dlion_core.WIRE_ENCODINGS``)."""
        enc = _core.WIRE_ENCODINGS
        if self.codec == "topk":
            return int(enc["sparse_qsgd8"] if self.bits == 8 else enc["sparse_f32"])
        name = {"dense": "dense_f32", "qsgd": "qsgd", "sign": "sign"}.get(self.codec, self.codec)
        return int(enc[name])

    def k_for(self, n: int) -> int:
        """Entries a ``"topk"`` message of an ``n``-element group carries."""
        return min(n, max(1, int(round(self.k_ratio * n)))) if n else 0

    def plan(self, n: int, group: int) -> Sequence[LinkPlan]:
        """One link plan per rank for a group of ``n`` elements (subclasses vary it per link)."""
        bits = self.bits if self.codec == "qsgd" else 0
        link = (self.encoding(), self.k_for(n), bits, self.bucket, self.error_feedback)
        return [link] * runtime.size()

    def current_weight(self) -> float:
        """This rank's aggregation weight for the next exchange."""
        return 1.0 / runtime.size() if self.weight is None else float(self.weight)

    def _enter_run(self) -> None:
        """Start afresh when this is the policy's first use in a new run (``dlion.init`` to
        ``dlion.shutdown``): a policy object may outlive the run it was used in."""
        groups = runtime.run_state(Groups)
        if self._run is not None and self._run() is not groups:
            self._new_run()
        self._run = weakref.ref(groups)

    def _new_run(self) -> None:
        """Forget what belonged to an earlier run (subclasses extend it)."""
        self._names.clear()
        self._tops.clear()
        self._scratch.clear()
        self._synced.clear()
        self._sync_next = False
        self._pending.clear()
        self._buffer_sizes.clear()

    # -- Exchange ---------------------------------------------------------------------------
    def synchronize_next(self) -> None:
        """Make the next exchange of every group wait for every peer's message of its step
        (as ``staleness=0``): call it before the last step, so that nothing sent is left
        unapplied when training ends."""
        self._sync_next = True
        self._synced = set()

    def plan_step(self, n: int, group: int, step: int) -> Sequence[LinkPlan]:
        """The link plans of ``step`` (default: :meth:`plan`; policies whose plans change with
        the step, like Ako's rotating partition, override this)."""
        return self.plan(n, group)

    def site_plan(self, n: int, group: int, peer: int, step: int) -> Sequence[LinkPlan]:
        """The link plans of one piece of the site-aware exchange, which only the link to
        ``peer`` carries (default: :meth:`plan_step`; :class:`dlion.PerLinkExchange` sizes the
        piece to that link's bandwidth)."""
        return self.plan_step(n, group, step)

    def reference(self, name: str, n: int, plans: Sequence[LinkPlan]) -> np.ndarray | None:
        """The float32 tensor that threshold selection compares against (Gaia's parameter
        magnitudes), or ``None`` when no link of ``plans`` selects by threshold."""
        return None

    def site_layout(self) -> _sites.SiteLayout:
        """The sites the site-aware exchange runs over (default: ``dlion.sites()``)."""
        return _sites.layout()

    def in_site_plan(self) -> LinkPlan:
        """The link plan of the site-aware exchange's in-site phases, the reduce-scatter and
        the allgather (default: dense float32; a dense ``fp16``/``bf16`` plan makes them round
        every term as the wire does, see :mod:`dlion.exchange.sites`)."""
        return _sites.DENSE_PLAN

    def site_aware(self) -> bool:
        """Whether this policy runs the site-aware exchange in this job (see ``topology``)."""
        if self.topology != "auto":
            return self.topology == "sites"
        sites = runtime.sites()
        return len(set(sites)) > 1 and len(set(sites)) < len(sites)

    def _register(self, name: str) -> None:
        """Group ids of the exchange ``name``: its own, then (site-aware) every site's
        sub-exchange in the one order every rank uses."""
        group_id(name)
        if self.site_aware():
            for sub in _sites.group_names(name, self.site_layout()):
                group_id(sub)

    def _sync_for(self, name: str) -> bool:
        sync = self._sync_next
        if sync:
            self._synced.add(name)
            if len(self._synced) == len(self._tops):
                self._sync_next = False
        return sync

    def _add_pending(self, buffer: np.ndarray, name: str) -> None:
        """Add the pending gradient of ``name`` (the residuals a restore at another world size
        folded, :mod:`dlion.checkpoint.elastic`) to this exchange's buffer, once."""
        self._buffer_sizes[name] = buffer.size
        pending = self._pending.pop(name, None)
        if pending is not None:
            if pending.size != buffer.size:
                raise InvalidArgumentError(
                    f"rank {runtime.rank()}: {type(self).__name__} exchange of '{name}': the "
                    f"restored pending gradient has {pending.size} elements, the buffer "
                    f"{buffer.size}"
                )
            buffer += pending.reshape(buffer.shape)

    def start(self, buffer: np.ndarray, *, name: str, signature: int = 0) -> Pending:
        if buffer.dtype != np.float32:
            raise InvalidArgumentError(
                f"rank {runtime.rank()}: {type(self).__name__} exchange of '{name}': dtype "
                f"{buffer.dtype} is not supported; the peer exchange carries float32 gradients"
            )
        self._enter_run()
        self._add_pending(buffer, name)
        if name not in self._tops:
            self._register(name)
        self._tops.setdefault(name)
        self._names.setdefault(name)
        group = group_id(name)
        step = last_step(group) + 1
        if self.site_aware():
            return self._start_sites(buffer, name, group, step)
        plans = self.plan_step(buffer.size, group, step)
        reference = self.reference(name, buffer.size, plans)
        # Only once the plan is made: a bad option fails cleanly.
        runtime.run_state(Groups).steps[group] = step
        return runtime.peer_engine().exchange(
            buffer,
            buffer,
            group,
            step,
            list(plans),
            weight=self.current_weight(),
            staleness=self.staleness,
            sync=self._sync_for(name),
            name=name,
            reference=reference,
        )

    def _start_sites(self, buffer: np.ndarray, name: str, group: int, step: int) -> Pending:
        where = self.site_layout()
        own = _sites.shards(buffer.size, len(where.members[where.site]))[where.index]
        scratch = self._scratch.get(name)
        if scratch is None or scratch.site_sum.size != own[1]:
            scratch = self._scratch[name] = _sites.Scratch(np.empty(own[1], np.float32))
        steps = runtime.run_state(Groups).steps
        steps[group] = step
        for wan in _sites.sent_pieces(name, where, buffer.size) if self.cross_sites else ():
            self._names.setdefault(wan)  # residuals per site pair and piece: checkpointed
            steps[group_id(wan)] = step
        return _sites.SiteRound(
            self,
            buffer,
            name,
            step,
            self._sync_for(name),
            where,
            scratch,
            group_id,
            cross_sites=self.cross_sites,
        )

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray | int | float]:
        """This rank's exchange state for :mod:`dlion.checkpoint`: each group's step count,
        every link's error-feedback residual (call it between steps, when no exchange is in
        flight), and every link's statistics (bytes, bandwidth, latency). The statistics are a
        record: :meth:`set_state` does not restore them, because ``dlion.init`` measures the
        links afresh and an estimate from before the restart may be stale. Also, site-aware,
        each exchange's size (``size:NAME``), and a pending gradient not yet sent
        (``pending:NAME``: what a restore at another world size folded, see
        :mod:`dlion.checkpoint.elastic`)."""
        self._enter_run()
        out: dict[str, np.ndarray | int | float] = {}
        engine = runtime.peer_engine()
        for peer, st in links.link_stats().items():
            for key in ("bytes_sent", "bytes_received", "bandwidth_Bps", "latency_s"):
                out[f"link:{peer}:{key}"] = getattr(st, key)
        for name in self._names:
            group = group_id(name)
            out[f"step:{name}"] = last_step(group)
            for peer in range(runtime.size()):
                residual = engine.residual(group, peer)
                if peer != runtime.rank() and residual.size:
                    out[f"residual:{peer}:{name}"] = residual
        if self.site_aware():
            out.update({f"size:{name}": n for name, n in self._buffer_sizes.items()})
        out.update({f"pending:{name}": p.copy() for name, p in self._pending.items()})
        return out

    def set_state(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state` saved (before the first exchange of the resumed run)."""
        self._enter_run()
        engine = runtime.peer_engine()
        for key in state:  # group ids first, in the order every rank uses (sites: all of them)
            kind, _, rest = key.partition(":")
            if kind == "step" and "@" not in rest and rest not in self._tops:
                self._register(rest)
                self._tops.setdefault(rest)
        for key, value in state.items():
            kind, _, rest = key.partition(":")
            if kind == "step":
                self._names.setdefault(rest)
                steps = runtime.run_state(Groups).steps
                steps[group_id(rest)] = int(value)  # type: ignore[call-overload]
            elif kind == "residual":
                peer, _, name = rest.partition(":")
                self._names.setdefault(name)
                engine.set_residual(group_id(name), int(peer), np.asarray(value, np.float32))
            elif kind == "size":
                self._buffer_sizes[rest] = int(value)  # type: ignore[call-overload]
            elif kind == "pending":
                self._pending[rest] = np.array(value, np.float32).reshape(-1)
            elif kind not in ("compute_s", "link"):
                raise InvalidArgumentError(f"{type(self).__name__}.set_state: unknown key {key!r}")

    def describe(self) -> str:
        extra = f", k={self.k_ratio:g}" if self.codec == "topk" else ""
        bits = f", {self.bits} bit" if self.codec in ("topk", "qsgd") else ""
        return f"peer({self.codec}{extra}{bits}, staleness={self.staleness})"
