"""GradientExchanger: fuse a list of gradients, combine them across ranks, hand them back.

Shared by DistributedOptimizer and DistributedGradientTape. Keeps one fusion plan per gradient
layout (checked across ranks the first time it is seen), packs and checks every fused buffer
(non-finite values), then runs the exchange policy on each; a collective policy's step starts
with dlion.join's control round (:mod:`dlion.joining`), which at a layout's later steps also
carries the non-finite vote and overlaps the buffers instead of preceding them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from .. import joining, links, ops, runtime, timeline
from ..errors import EngineShutdownError, InvalidArgumentError, MismatchError, PeerTimeoutError
from ..exchange import Exchange, PerLinkExchange
from ..joining import StepControl
from . import fusion
from .nonfinite import StepVerdict

DEFAULT_FUSION_BYTES = 64 << 20
_CACHE = 16


class GradientExchanger:
    """Combines gradients across ranks with an exchange policy, through fused buffers."""

    def __init__(
        self,
        exchange: Exchange | None,
        fusion_bytes: int,
        name: str,
        caller: str,
        nonfinite: str = "raise",
    ) -> None:
        if exchange is not None and not isinstance(exchange, Exchange):
            raise TypeError(
                f"exchange must be a dlion Exchange (e.g. dlion.Allreduce()), got {exchange!r}"
            )
        if fusion_bytes < 1024:
            raise ValueError(f"fusion_bytes must be at least 1024, got {fusion_bytes}")
        self.exchange = exchange if exchange is not None else PerLinkExchange()
        self.fusion_bytes = int(fusion_bytes)
        self.name = name
        self.caller = caller
        self.nonfinite = nonfinite
        self.steps = 0
        self.skipped = 0
        # One plan per layout, so alternating variable sets (e.g. a GAN's two halves) neither
        # re-check layouts nor re-plan; at most _CACHE of them.
        self.plans: dict[tuple, fusion.FusionPlan] = {}
        joining.register(self)  # again at every exchange: an exchanger may outlive a run

    def exchange_step(self, grads: list[Any], names: list[str]) -> fusion.FusionPlan | None:
        """Pack, exchange and wait: afterwards the plan's buffers hold the combined gradients.

        Non-finite gradients on any rank (see :mod:`.nonfinite`): raises
        ``NonFiniteGradientError`` on every rank, or with ``nonfinite="skip"`` warns and returns
        ``None`` on every rank (the step must not be applied).
        """
        if not tf.executing_eagerly():
            raise RuntimeError(
                f"{self.caller}: GradientExchanger.exchange_step runs eagerly; inside a "
                "tf.function the exchange goes through graph_reduce (what the optimizers and "
                "the tape do)"
            )
        joining.register(self)
        check_gradients(grads, names, f"{self.caller} at step {self.steps}")
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        layout = fusion.layout_of(grads, names)
        if not self.collective:
            check = layout not in self.plans
            return self._exchange(grads, names, layout, StepControl(runtime.size(), check))
        if layout in self.plans and runtime.size() > 1:  # merged control round: dlion/joining.py
            return self._exchange(grads, names, layout, None)
        try:
            control = joining.before_exchange(self.name, layout)  # uneven data: dlion/joining.py
        except (PeerTimeoutError, EngineShutdownError) as e:
            raise type(e)(f"{e} (at step {self.steps} of {self.caller})") from e
        return self._exchange(grads, names, layout, control)

    def _exchange(
        self, grads: list[Any], names: list[str], layout: tuple, control: StepControl | None
    ) -> fusion.FusionPlan | None:
        """One step: pack, start, wait, vote. ``control`` is the step's finished control round,
        or None to run a merged one (started after packing, before the buffers)."""
        plan = self._plan_for(grads, names, layout, control is not None and control.check_layout)
        verdict = StepVerdict(self.name, self.steps, collective=self.collective)
        self.steps += 1
        links_before = _link_bytes() if not self.collective else None  # before any is queued
        buffers = []
        for gi, group in enumerate(plan.groups):
            with timeline.span("pack", "pack", group=gi):
                buffers.append(plan.pack(grads, group))
            verdict.check(group)  # zeroes a non-finite buffer before it can leave this rank
        merged = None
        pending = []
        try:
            if control is None:
                merged = joining.start_exchange(self.name, layout, verdict.vote())
            try:
                for gi, buffer in enumerate(buffers):
                    name = f"{self.name}.grads[{gi}]"
                    started = _now_us()
                    handle = self.exchange.start(buffer, name=name, signature=plan.signature)
                    pending.append((name, buffer, started, handle))
            except EngineShutdownError:
                if merged is not None:  # the control round failed first: its error says why
                    merged.finish()
                raise
            if merged is not None:
                control = merged.finish()
            assert control is not None
            vote = verdict.start(control.votes)
            for name, buffer, started, handle in pending:
                with timeline.span("wait", "wait", op=name):
                    handle.wait()
                _record_exchange(name, buffer, started, self.exchange.describe(), links_before)
            vote.wait()
        except (PeerTimeoutError, EngineShutdownError) as e:
            # The engine names the ranks and the operation; add the training step.
            raise type(e)(f"{e} (at step {verdict.step} of {self.caller})") from e
        if not verdict.settle(plan, self.nonfinite):
            self.skipped += 1
            return None
        factor = joining.rescale_factor(self.exchange, control.n_active, runtime.size())
        if factor != 1.0:
            for group in plan.groups:
                group.buffer *= group.buffer.dtype.type(factor)
        return plan

    def graph_reduce(self, grads: list[tf.Tensor], names: list[str]) -> tuple[list[Any], Any]:
        """``reduce`` inside a ``tf.function``: one py_function takes the gradients and returns
        the fused, combined buffers and a boolean tensor, False when every rank skips the step
        (``nonfinite="skip"``; the buffers are zeros then); split, reshape and cast stay in the
        graph. The fusion plan is computed at trace time from the static shapes, identically to
        the one the exchange builds on its first step."""
        plan = fusion.plan(grads, names, self.fusion_bytes)

        def exchange(*eager: tf.Tensor) -> list[Any]:
            done = self.exchange_step(list(eager), names)
            if done is None:
                return [tf.zeros([g.buffer.size], g.dtype) for g in plan.groups] + [False]
            return [g.buffer.copy() for g in done.groups] + [True]  # the buffers are reused

        dtypes = [tf.as_dtype(g.dtype) for g in plan.groups]
        *flats, applied = tf.py_function(exchange, grads, Tout=[*dtypes, tf.bool])
        applied.set_shape([])
        out: list[Any] = [None] * len(grads)
        for group, flat in zip(plan.groups, flats):
            flat.set_shape([group.buffer.size])
            parts = tf.split(flat, [s.size for s in group.slots])
            for s, part in zip(group.slots, parts):
                out[s.index] = tf.cast(tf.reshape(part, s.shape), s.dtype)
        return out, applied

    @property
    def collective(self) -> bool:
        """Collective policies (Allreduce) run per-step agreement rounds (join, the non-finite
        vote); decentralized ones (PeerExchange) must not, or every step would be lockstep."""
        return self.exchange.collective

    # dlion.join responder: a joined rank exchanges zeros in the active ranks' layout.
    joined_apply: Callable[[fusion.FusionPlan], None] | None = None

    def known_layouts(self) -> list[tuple]:
        """Layouts this exchanger has plans for (dlion.join's responder protocol)."""
        return list(self.plans)

    def join_step(self, layout: tuple, n_active: int, votes: np.ndarray | None = None) -> None:
        """Take part in one exchange with zero gradients (``votes``: the merged control round's,
        or None to take part in the vote); apply the result if we can."""
        grads = [None if dt == "none" else tf.zeros(shape, dt) for _, shape, dt in layout]
        control = StepControl(n_active, False, votes)
        plan = self._exchange(grads, [n for n, _, _ in layout], layout, control)
        if plan is not None and self.joined_apply is not None:
            self.joined_apply(plan)

    def reduce(self, grads: list[Any], names: list[str]) -> list[tf.Tensor | None] | None:
        """The combined gradients, in order (``None`` stays ``None``); ``None`` for a step that
        every rank skips (``nonfinite="skip"``)."""
        plan = self.exchange_step(grads, names)
        if plan is None:
            return None
        out: list[tf.Tensor | None] = [None] * len(grads)
        for group in plan.groups:
            plan.unpack(group, out)
        return out

    def _plan_for(
        self, grads: list[Any], names: list[str], layout: tuple, check: bool
    ) -> fusion.FusionPlan:
        plan = self.plans.get(layout)
        if check:
            check_same_layout(layout, f"{self.name}.layout")
        if plan is None:
            evict_oldest(self.plans)
            plan = self.plans[layout] = fusion.plan(grads, names, self.fusion_bytes)
        return plan


def _now_us() -> float:
    t = timeline.active()
    return t.now_us() if t is not None else 0.0


def _link_bytes() -> dict[int, int] | None:
    """Bytes sent so far on every peer link, when a timeline records them (else None)."""
    if timeline.active() is None:
        return None
    return {p: s.bytes_sent for p, s in links.link_stats().items()}


def _record_exchange(
    name: str, buffer: Any, started: float, policy: str, before: dict[int, int] | None = None
) -> None:
    t = timeline.active()
    if t is not None:
        extra: dict[str, Any] = {}
        if before is not None:  # a peer exchange: what each link carried, its k and bandwidth
            extra["links"] = {
                str(p): {
                    "bytes": s.bytes_sent - before.get(p, 0),
                    "k": s.last_k,
                    "bandwidth_Bps": s.bandwidth_Bps,
                }
                for p, s in links.link_stats().items()
            }
        t.add(
            "exchange",
            "exchange",
            started,
            t.now_us(),
            op=name,
            bytes=int(buffer.nbytes),
            policy=policy,
            **extra,
        )


def check_gradients(grads: list[Any], names: list[str], caller: str) -> None:
    """Gradients must be TF tensors (or ``None``); name the first that is not, and its variable."""
    for i, (g, n) in enumerate(zip(grads, names, strict=False)):
        if g is None or isinstance(g, tf.Tensor | tf.Variable | tf.IndexedSlices):
            continue
        raise InvalidArgumentError(
            f"rank {runtime.rank()}: {caller}: gradient {i} (for {n!r}) is a "
            f"{type(g).__module__}.{type(g).__name__}, not a TF tensor; pass what "
            "tape.gradient returns, or convert it with tf.convert_to_tensor(g)"
        )


def evict_oldest(cache: dict) -> None:
    """Keep a cache below _CACHE entries (dicts keep insertion order)."""
    while len(cache) >= _CACHE:
        del cache[next(iter(cache))]


def var_name(v: Any, i: int) -> str:
    """A variable's path (Keras 3) or name; ``source{i}`` for plain tensors."""
    return str(getattr(v, "path", None) or getattr(v, "name", None) or f"source{i}")


def check_same_layout(layout: tuple, op_name: str) -> None:
    """Every rank must exchange the same tensors: compare with rank 0's, name what differs."""
    layouts = ops.allgather_object(layout, op_name)
    ref = layouts[0]
    for r, other in enumerate(layouts):
        if other == ref:
            continue
        if len(other) != len(ref):
            detail = f"rank {r} has {len(other)} gradients, rank 0 has {len(ref)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(ref, other)) if a != b)
            detail = (
                f"gradient {i}: rank {r} has {other[i][0]!r} shape {other[i][1]} "
                f"{other[i][2]}, rank 0 has {ref[i][0]!r} shape {ref[i][1]} {ref[i][2]}"
            )
        raise MismatchError(
            f"rank {runtime.rank()}: ranks disagree on the gradients to exchange: {detail}. "
            "Every rank must build the same model and pass the same variables."
        )
