"""DLion's per-link prioritized gradient exchange (DESIGN.md section 2).

Each step, for every peer link l, the link carries the ``k_l`` entries of largest magnitude of
(gradient + the link's residual), with

    k_l = BW_l * T * (n_g / n_total) / bytes_per_entry,

``BW_l`` the link's measured bandwidth (EWMA, :func:`dlion.link_stats`; seeded by the probe at
``dlion.init``), ``T`` the step's time budget (by default a tenth of the recent compute time of
a step: the time from the end of one exchange to the start of the next, EWMA), ``n_g / n_total``
the share of this tensor group in the step's gradients, and ``bytes_per_entry`` what one entry
costs on the wire (8 bytes with float values, about 5 with 8-bit values). ``k_l`` is clipped to
``[k_min, n_g]``; when the sparse message would be at least as large as the dense one the link
carries the dense float32 gradient instead. What a link did not carry stays in its residual and
goes later (error feedback, in C++): nothing is lost, only delayed. Fast links (inside a site)
carry nearly dense updates, slow wide-area links only the most important entries, and the
budgets follow the measured bandwidths as they change.

Why a tenth: a synchronous step costs about compute + one-way latency + ``T`` where the
wide-area link is slow, so ``T`` equal to the compute time (the paper's choice,
``budget_fraction=1``) nearly doubles the step. On the real-network testbed (2 sites, 20 Mbit/s,
40 ms one way, about 130 ms between exchanges), 3 seeds each, the time to 85% test accuracy was
33.1 s at a tenth, 35.1 s at a twentieth (more steps), 40.9 s at a fifth and 74.5 s at the
whole compute time (slower steps): docs/peer.md.
"""

from __future__ import annotations

import math
import time

import numpy as np

import dlion_core as _core

from .. import links, runtime
from ..errors import InvalidArgumentError
from .allreduce import Allreduce
from .base import Pending
from .peer import LinkPlan, PeerExchange, Topology

_ENC = _core.WIRE_ENCODINGS


class PerLinkExchange(PeerExchange):
    """Per-link prioritized (top-k) exchange with per-link budgets from measured bandwidth.

    Args:
        budget_s: the step's time budget ``T`` in seconds; ``None`` (default) uses
            ``budget_fraction`` times the recent compute time of a step (EWMA), and
            ``initial_budget_s`` until one was measured.
        budget_fraction: ``T`` as a fraction of the measured compute time when ``budget_s``
            is ``None`` (default 0.1; 1.0 is the paper's ``T`` = compute time).
        bits: 8 (default) quantizes the values of sparse links to 8 bits (QSGD, unbiased; the
            rounding error goes to the residual), 32 sends them as float32. Dense links always
            carry float32.
        k_min: the fewest entries a link carries per group and step (default 1).
        staleness: 0 is synchronous; ``s > 0`` lets a rank run up to ``s`` steps ahead of its
            slowest peer (see :class:`dlion.PeerExchange`).
        weight: this rank's aggregation weight (default ``1 / size``; dynamic batching sets it).
        initial_budget_s: ``T`` before a compute time was measured.
        ewma: weight of the newest compute-time sample.
        topology: ``"auto"`` (default): the site-aware exchange when ``dlion.sites()`` names
            more than one site and some site has several ranks (dense inside a site; each site
            pair carries the site's combined gradient once, as the per-link top-k of that site
            pair, sharded over the site's ranks; see :mod:`dlion.exchange.sites`), else rank to
            rank; ``"sites"`` or ``"ranks"`` force one (``"ranks"`` is the paper's literal
            form, every rank a message to every peer).
        lan_allreduce: when the probe at ``dlion.init`` found every link of every rank at
            least ``lan_bandwidth_Bps`` fast (one host, a LAN), every link would carry the dense
            gradient anyway: then run as :class:`dlion.Allreduce` (weighted by ``weight``),
            which moves dense gradients faster than per-link messages. The decision is the
            same on every rank and holds for the whole run.
    """

    @property
    def collective(self) -> bool:  # type: ignore[override]
        """True when this policy runs as a dense allreduce (see ``lan_allreduce``)."""
        if not (self.lan_allreduce and runtime.is_initialized()):
            return False  # (before dlion.init nothing is measured: describe() still works)
        return runtime.size() > 1 and runtime.all_links_fast()

    def __init__(
        self,
        *,
        budget_s: float | None = None,
        bits: int = 8,
        k_min: int = 1,
        staleness: int = 0,
        weight: float | None = None,
        budget_fraction: float = 0.1,
        initial_budget_s: float = 0.01,
        ewma: float = 0.3,
        bucket: int = 512,
        topology: Topology = "auto",
        lan_allreduce: bool = True,
    ) -> None:
        if bits not in (8, 32):
            raise InvalidArgumentError(f"PerLinkExchange(bits={bits}): use 8 or 32")
        super().__init__(
            "topk",
            bits=bits,
            staleness=staleness,
            weight=weight,
            bucket=bucket,
            k_ratio=1.0,
            topology=topology,
        )
        for name, value in (
            ("budget_s", budget_s),
            ("budget_fraction", budget_fraction),
            ("initial_budget_s", initial_budget_s),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidArgumentError(f"PerLinkExchange({name}={value}): must be > 0")
        if k_min < 1:
            raise InvalidArgumentError(f"PerLinkExchange(k_min={k_min}): must be >= 1")
        if not 0 < ewma <= 1:
            raise InvalidArgumentError(f"PerLinkExchange(ewma={ewma}): must be in (0, 1]")
        self.lan_allreduce = lan_allreduce
        self._dense = Allreduce()
        self.budget_s = budget_s
        self.budget_fraction = budget_fraction
        self.k_min = k_min
        self.initial_budget_s = initial_budget_s
        self.ewma = ewma
        self.compute_s: float | None = None  # EWMA of the measured compute time of a step
        self._sizes: dict[int, int] = {}
        self._link_sizes: dict[int, dict[int, int]] = {}  # site-aware: peer -> group -> n
        self._last_done: float | None = None
        self.last_plan: dict[int, dict[int, tuple[str, int]]] = {}
        """Per group: peer -> (``"dense"`` or ``"sparse"``, entries) of the latest step."""

    def bytes_per_entry(self) -> float:
        """Wire bytes of one sparse entry: index + value (+ its share of a bucket's scale)."""
        return 4 + 4 if self.bits == 32 else 4 + 1 + 4 / self.bucket

    def budget(self) -> float:
        """The step's time budget ``T`` in use."""
        if self.budget_s is not None:
            return self.budget_s
        if self.compute_s is None:
            return self.initial_budget_s
        return self.budget_fraction * self.compute_s

    def _link(self, n: int, share: float, bw: float) -> tuple[LinkPlan, tuple[str, int]]:
        """The plan of one link of measured bandwidth ``bw`` for ``share`` of the step's bytes."""
        k = n if bw <= 0 else int(bw * self.budget() * share / self.bytes_per_entry())
        if k * self.bytes_per_entry() >= 4 * n:
            return (int(_ENC["dense_f32"]), 0, 0, self.bucket, True), ("dense", n)
        k = min(n, max(self.k_min, k))
        sparse_enc = int(_ENC["sparse_qsgd8"] if self.bits == 8 else _ENC["sparse_f32"])
        return (sparse_enc, k, 0, self.bucket, True), ("sparse", k)

    def plan(self, n: int, group: int) -> list[LinkPlan]:
        self._sizes[group] = n
        share = n / max(1, sum(self._sizes.values()))
        stats = links.link_stats()
        dense: LinkPlan = (int(_ENC["dense_f32"]), 0, 0, self.bucket, True)
        plans: list[LinkPlan] = []
        chosen: dict[int, tuple[str, int]] = {}
        for p in range(runtime.size()):
            s = stats.get(p)
            if s is None:  # this rank
                plans.append(dense)
                continue
            plan, chosen[p] = self._link(n, share, s.bandwidth_Bps)
            plans.append(plan)
        self.last_plan[group] = chosen
        return plans

    def site_plan(self, n: int, group: int, peer: int, step: int) -> list[LinkPlan]:
        """A piece of the site-aware exchange on the link to ``peer``: its ``k`` is that
        link's bandwidth times the budget, times the piece's share of what the link carries."""
        sizes = self._link_sizes.setdefault(peer, {})
        sizes[group] = n
        share = n / max(1, sum(sizes.values()))
        stats = links.link_stats().get(peer)
        plan, chosen = self._link(n, share, stats.bandwidth_Bps if stats else 0.0)
        self.last_plan[group] = {peer: chosen}
        return [plan] * runtime.size()

    def start(self, buffer: np.ndarray, *, name: str, signature: int = 0) -> Pending:
        if self.collective:
            self._dense.weight = self.weight
            self._add_pending(buffer, name)  # a dense weighted sum: every rank gets it once
            return self._dense.start(buffer, name=name, signature=signature)
        self._enter_run()
        now = time.perf_counter()
        first = not self._names or next(iter(self._names)) == name
        if first and self._last_done is not None:
            sample = now - self._last_done
            self.compute_s = (
                sample
                if self.compute_s is None
                else (1 - self.ewma) * self.compute_s + self.ewma * sample
            )
        return _Timed(super().start(buffer, name=name, signature=signature), self)

    def _new_run(self) -> None:
        """A new run: its groups, sizes and plans are new, and the time since the last run's
        last exchange is no compute-time sample (``compute_s``, the model's, is kept)."""
        super()._new_run()
        self._sizes.clear()
        self._link_sizes.clear()
        self.last_plan.clear()
        self._last_done = None

    def state(self) -> dict[str, np.ndarray | int | float]:
        out = super().state()
        if self.compute_s is not None:
            out["compute_s"] = self.compute_s
        return out

    def set_state(self, state: dict[str, object]) -> None:
        super().set_state(state)
        if "compute_s" in state:
            self.compute_s = float(state["compute_s"])  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.collective:
            return "perlink(all links fast: dense allreduce)"
        if self.budget_s is not None:
            t = f"{self.budget_s:g}s"
        elif self.budget_fraction == 1.0:
            t = "compute"
        else:
            t = f"{self.budget_fraction:g} x compute"
        if runtime.is_initialized():
            where = "site-aware" if self.site_aware() else "rank to rank"
        else:
            where = f"topology {self.topology}"
        return f"perlink({where}, T={t}, {self.bits} bit, staleness={self.staleness})"


class _Timed:
    """A pending exchange that notes when it completed (the end of the step's exchange)."""

    def __init__(self, inner: Pending, owner: PerLinkExchange) -> None:
        self._inner = inner
        self._owner = owner

    def wait(self, timeout: float | None = None) -> bool:
        done = self._inner.wait(timeout)
        if done:
            self._owner._last_done = time.perf_counter()
        return done
