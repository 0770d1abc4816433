"""Local steps with outer synchronization across sites (DiLoCo-class; DESIGN.md section 2).

Inside a site every step is a dense weighted average of the site's gradients (the site-aware
exchange's in-site phases only: a reduce-scatter and an allgather over the LAN); at a step
nothing crosses the wide area. Every ``every`` steps (H) the sites synchronize their
parameters instead: each site's pseudo-gradient ``d_S = anchor - theta_S`` (how far it moved
since the last synchronization) is combined across sites, weighted by the samples each rank
processed, as one site-aware exchange (each site pair carries the site's ``d_S`` once, sharded
over its ranks, with the policy's codec and error feedback per site pair), and an outer
optimizer applies the combination ``d``::

    m <- mu m + d;   u = d + mu m (Nesterov) or m;   anchor <- anchor - lr_out u;   theta <- anchor

(``lr_out = 1``, ``mu = 0``: plain parameter averaging). The inner optimizer's slots stay local.

Streaming (``fragments = F > 1``): the trainable tensors are cut into ``F`` contiguous
fragments of about equal size; fragment ``f`` synchronizes at the steps ``t`` with
``t mod H = f H / F``, so the wide area carries one fragment at a time instead of the whole
model in a burst. Overlap (``overlap = tau > 0``): a fragment's round starts after step ``t``
and its result is applied after step ``t + tau`` while the inner steps go on; the progress made
in between is kept, ``theta_f <- anchor_f + (theta_f(t + tau) - theta_f(t))``, and the next
round's pseudo-gradient carries it, so no local step is lost.

Every rank starts and applies the same rounds at the same steps (the schedule depends only on
the step count), so the ranks of a site stay bit-identical and the sites differ only by what
the codec rounds away (which error feedback sends later).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import runtime
from ..errors import InvalidArgumentError
from . import sites as _sites
from .base import Exchange, Parameters, Pending, checked_weight
from .peer import Codec, PeerExchange


class _InSite(PeerExchange):
    """The inner step: a dense weighted average inside the site, nothing across sites."""

    cross_sites = False

    def __init__(self) -> None:
        super().__init__("dense", topology="sites")


@dataclass
class _Round:
    """One fragment's synchronization in flight."""

    fragment: int
    due: int  # the step after whose apply the result is written
    handle: Pending
    delta: np.ndarray  # what is exchanged; the combined pseudo-gradient once complete
    snapshot: np.ndarray | None  # the fragment at the start (overlap > 0)
    result: np.ndarray | None = None  # the new anchor, once complete


def fragment_bounds(sizes: list[int], parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (first, end) ranges of tensors whose element counts are as even
    as whole tensors allow; every tensor is in exactly one range, none is empty."""
    n = len(sizes)
    if not 1 <= parts <= n:
        raise InvalidArgumentError(
            f"OuterSync(fragments={parts}): the model has {n} trainable tensors; use 1 to {n}"
        )
    cum = np.concatenate([[0], np.cumsum(sizes, dtype=np.float64)])
    out, lo = [], 0
    for f in range(parts - 1):
        target = cum[-1] * (f + 1) / parts
        candidates = np.arange(lo + 1, n - (parts - f - 1) + 1)
        hi = int(candidates[np.argmin(np.abs(cum[candidates] - target))])
        out.append((lo, hi))
        lo = hi
    out.append((lo, n))
    return out


def due_fragments(step: int, every: int, fragments: int) -> list[int]:
    """The fragments whose round starts after ``step`` (counted from 1): fragment ``f`` at the
    steps ``t`` with ``t mod every = f * every // fragments``, so each fragment starts exactly
    once in every ``every`` consecutive steps, and the fragments in turn."""
    return [f for f in range(fragments) if step % every == (f * every) // fragments]


class OuterSync(Exchange):
    """Local steps inside each site, outer synchronization across sites every ``every`` steps.

    The DiLoCo family (DiLoCo 2023; Streaming DiLoCo 2025 with ``fragments`` and ``overlap``)
    on dlion's site structure; see :mod:`dlion.exchange.outer` for the algorithm. Use it with
    :class:`dlion.DistributedOptimizer` or :class:`dlion.keras.DistributedOptimizer` (they
    call it after every apply; the gradient tape cannot, and refuses it).

    Args:
        every: H, inner steps between two synchronizations of a fragment.
        outer_lr: the outer optimizer's learning rate (DiLoCo: 0.7).
        momentum: the outer optimizer's momentum (DiLoCo: 0.9); 0 with ``outer_lr=1`` is
            plain model averaging.
        nesterov: Nesterov momentum (default, as DiLoCo) or heavy ball.
        fragments: F, fragments of the model synchronized in turn (1: the whole model at
            once); at most ``every`` and the number of trainable tensors.
        overlap: tau, steps a round may take while the inner steps go on (0: applied at once);
            less than ``every``. With ``overlap > 0`` call
            :meth:`dlion.DistributedOptimizer.flush` at the end of training (``model.fit``
            does it itself).
        codec, bits, k_ratio, error_feedback: how the pseudo-gradients cross each site pair,
            as for :class:`dlion.PeerExchange` (default 4-bit QSGD with error feedback:
            what the rounding drops is sent in later rounds; ``bits`` None: 4 for
            ``"qsgd"``, 8 for ``"topk"``).
        weight: this rank's share of the outer combination, default ``1 / size``;
            :class:`dlion.DynamicBatcher` sets the batch sizes instead (``set_batches``), and
            then the in-site average weights each rank by its batch and the outer combination
            by the samples each rank processed during the round.
    """

    collective = False
    updates_parameters = True
    #: The policy's bytes are on the peer links (:func:`dlion.link_stats`).
    peer_links = True

    def __init__(
        self,
        every: int = 25,
        *,
        outer_lr: float = 0.7,
        momentum: float = 0.9,
        nesterov: bool = True,
        fragments: int = 1,
        overlap: int = 0,
        codec: Codec = "qsgd",
        bits: int | None = None,
        k_ratio: float = 0.01,
        error_feedback: bool | None = None,
        weight: float | None = None,
    ) -> None:
        where = "OuterSync"
        for key, value, low in (("every", every, 1), ("fragments", fragments, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidArgumentError(f"{where}({key}={value!r}): must be an int >= {low}")
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < every:
            raise InvalidArgumentError(
                f"{where}(overlap={overlap!r}): must be an int in [0, every={every})"
            )
        if fragments > every:
            raise InvalidArgumentError(
                f"{where}(fragments={fragments}): at most every={every} (one fragment per step)"
            )
        if not (isinstance(outer_lr, (int, float)) and math.isfinite(outer_lr) and outer_lr > 0):
            raise InvalidArgumentError(f"{where}(outer_lr={outer_lr!r}): must be finite and > 0")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise InvalidArgumentError(f"{where}(momentum={momentum!r}): must be in [0, 1)")
        self.every, self.fragments, self.overlap = every, fragments, overlap
        self.outer_lr, self.momentum, self.nesterov = float(outer_lr), float(momentum), nesterov
        if bits is None:  # 4-bit QSGD (as Streaming DiLoCo), 8-bit top-k values
            bits = {"qsgd": 4, "topk": 8}.get(codec)
        self._outer = PeerExchange(
            codec,
            bits=bits if codec in ("qsgd", "topk") else None,
            k_ratio=k_ratio,
            error_feedback=error_feedback,
            topology="sites",
        )
        self._inner = _InSite()
        self.weight = weight
        self.batches: list[int] | None = None
        self.step = 0
        self.rounds_done = 0
        self.waited_s = 0.0
        """Seconds the training thread blocked at due steps for rounds still in flight (a
        slower site, or a round longer than ``overlap`` steps)."""
        self._cuts: list[tuple[int, int]] | None = None
        self._anchor: list[np.ndarray] | None = None
        self._moment: list[np.ndarray | None] = []
        self._share = np.zeros(fragments)  # summed per-step shares since each fragment's round
        self._count = np.zeros(fragments, np.int64)
        self._rounds: list[_Round] = []

    # -- weights ------------------------------------------------------------------------------
    @property
    def weight(self) -> float | None:
        """This rank's share of the outer combination (``None``: ``1 / size``)."""
        return self._weight

    @weight.setter
    def weight(self, value: float | None) -> None:
        self._weight = checked_weight(value, "OuterSync")

    def set_batches(self, batches: list[int]) -> None:
        """Every rank's batch size (:class:`dlion.DynamicBatcher` calls it at each rebalance)."""
        if len(batches) != runtime.size() or min(batches) < 0 or sum(batches) <= 0:
            raise InvalidArgumentError(
                f"rank {runtime.rank()}: OuterSync.set_batches({batches}): need one batch size "
                f">= 0 per rank ({runtime.size()} ranks), not all zero"
            )
        self.batches = [int(b) for b in batches]

    def _inner_weight(self) -> float:
        mates = _sites.layout().members[_sites.layout().site]
        if self.batches is None:
            return 1.0 / len(mates)
        total = sum(self.batches[q] for q in mates)
        return self.batches[runtime.rank()] / total if total else 1.0 / len(mates)

    def _step_share(self) -> float:
        if self.batches is not None:
            return self.batches[runtime.rank()] / sum(self.batches)
        return 1.0 / runtime.size() if self._weight is None else self._weight

    # -- Exchange: the inner step ----------------------------------------------------------
    def start(self, buffer: np.ndarray, *, name: str, signature: int = 0) -> Pending:
        self._inner.weight = self._inner_weight()
        return self._inner.start(buffer, name=name, signature=signature)

    # -- the outer synchronization ---------------------------------------------------------
    def before_apply(self, params: Parameters, *, name: str) -> None:
        """The first call takes the starting parameters as the anchor."""
        if self._cuts is None:
            self._cuts = fragment_bounds(list(params.sizes), self.fragments)
            sizes = [sum(params.sizes[lo:hi]) for lo, hi in self._cuts]
            if self._anchor is not None and [a.size for a in self._anchor] != sizes:
                raise InvalidArgumentError(
                    f"rank {runtime.rank()}: OuterSync: the restored state has fragments of "
                    f"{[a.size for a in self._anchor]} elements, this model {sizes}"
                )
        if self._anchor is None:
            self._anchor = [params.read(lo, hi) for lo, hi in self._cuts]
            self._moment = [None] * self.fragments

    def after_apply(self, params: Parameters, *, name: str) -> None:
        """Count the step; start the rounds due now, apply those due now."""
        if self._anchor is None:
            self.before_apply(params, name=name)
        self.step += 1
        self._share += self._step_share()
        self._count += 1
        for r in self._rounds:  # let the rounds in flight move on (their phases)
            self._complete(r, block=False)
        for f in due_fragments(self.step, self.every, self.fragments):
            self._start(f, params, name)
        for r in [r for r in self._rounds if r.due <= self.step]:
            self._apply(r, params)

    def flush(self, params: Parameters) -> None:
        """Complete and apply every round still in flight (the end of training)."""
        for r in list(self._rounds):
            self._apply(r, params)

    def _start(self, f: int, params: Parameters, name: str) -> None:
        assert self._cuts is not None and self._anchor is not None
        lo, hi = self._cuts[f]
        theta = params.read(lo, hi)
        delta = self._anchor[f] - theta
        self._outer.weight = float(self._share[f] / self._count[f])
        self._share[f], self._count[f] = 0.0, 0
        handle = self._outer.start(delta, name=f"{name}.outer[{f}]")
        snapshot = theta if self.overlap else None
        self._rounds.append(_Round(f, self.step + self.overlap, handle, delta, snapshot))

    def _complete(self, r: _Round, block: bool) -> bool:
        """The outer optimizer's step once the round's exchange is complete."""
        if r.result is not None:
            return True
        started = time.perf_counter()
        if not r.handle.wait(None if block else 0.0):
            return False
        if block:
            self.waited_s += time.perf_counter() - started
        assert self._anchor is not None
        d = r.delta
        if self.momentum:
            m = self._moment[r.fragment]
            m = d.copy() if m is None else np.float32(self.momentum) * m + d
            self._moment[r.fragment] = m
            update = d + np.float32(self.momentum) * m if self.nesterov else m
        else:
            update = d
        anchor = self._anchor[r.fragment] - np.float32(self.outer_lr) * update
        self._anchor[r.fragment] = r.result = anchor
        self.rounds_done += 1
        return True

    def _apply(self, r: _Round, params: Parameters) -> None:
        self._complete(r, block=True)
        assert self._cuts is not None and r.result is not None
        lo, hi = self._cuts[r.fragment]
        new = r.result if r.snapshot is None else r.result + (params.read(lo, hi) - r.snapshot)
        params.write(lo, hi, new)
        self._rounds.remove(r)

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The outer state for :mod:`dlion.checkpoint`: the step, every fragment's anchor and
        momentum, the rounds in flight (completed first: their results wait for their step),
        and the exchanges' own state (group steps, error-feedback residuals)."""
        out: dict[str, Any] = {
            "every": self.every,
            "fragments": self.fragments,
            "overlap": self.overlap,
            "step": self.step,
            "rounds_done": self.rounds_done,
            "share": self._share.copy(),
            "count": self._count.copy(),
        }
        for r in self._rounds:
            self._complete(r, block=True)
            out[f"round:{r.fragment}:due"] = r.due
            out[f"round:{r.fragment}:result"] = r.result
            if r.snapshot is not None:
                out[f"round:{r.fragment}:snapshot"] = r.snapshot
        for f, a in enumerate(self._anchor or []):
            out[f"anchor:{f}"] = a
            if self._moment[f] is not None:
                out[f"moment:{f}"] = self._moment[f]
        out.update({f"outer:{k}": v for k, v in self._outer.state().items()})
        out.update({f"inner:{k}": v for k, v in self._inner.state().items()})
        return out

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved (before the first step of the resumed run)."""
        where = f"rank {runtime.rank()}: OuterSync.set_state"
        for key in ("every", "fragments", "overlap"):
            if int(state[key]) != getattr(self, key):
                raise InvalidArgumentError(
                    f"{where}: the state is for {key}={int(state[key])}, this policy has "
                    f"{key}={getattr(self, key)}"
                )
        self.step, self.rounds_done = int(state["step"]), int(state["rounds_done"])
        self._share = np.array(state["share"], np.float64).reshape(-1)
        self._count = np.array(state["count"], np.int64).reshape(-1)
        self._anchor = [np.array(state[f"anchor:{f}"], np.float32) for f in range(self.fragments)]
        self._moment = [
            np.array(state[f"moment:{f}"], np.float32) if f"moment:{f}" in state else None
            for f in range(self.fragments)
        ]
        self._rounds = []
        for f in range(self.fragments):
            if f"round:{f}:due" in state:
                snap = state.get(f"round:{f}:snapshot")
                result = np.array(state[f"round:{f}:result"], np.float32)
                r = _Round(f, int(state[f"round:{f}:due"]), _Done(), result.copy(), None)
                r.snapshot = None if snap is None else np.array(snap, np.float32)
                r.result = result
                self._rounds.append(r)
        for prefix, policy in (("outer:", self._outer), ("inner:", self._inner)):
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            policy.set_state(sub)

    def describe(self) -> str:
        codec = self._outer.codec + (f" {self._outer.bits} bit" if self._outer.bits else "")
        return (
            f"outer(H={self.every}, lr={self.outer_lr:g}, momentum={self.momentum:g}"
            f"{' nesterov' if self.nesterov and self.momentum else ''}, "
            f"fragments={self.fragments}, overlap={self.overlap}, {codec})"
        )


class _Done:
    """A restored round's exchange: already complete."""

    def wait(self, timeout: float | None = None) -> bool:
        return True
