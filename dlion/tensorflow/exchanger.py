"""GradientExchanger: fuse a list of gradients, combine them across ranks, hand them back.

Shared by DistributedOptimizer and DistributedGradientTape. Keeps one fusion plan per gradient
layout (checked across ranks the first time it is seen) and runs the exchange policy on each
fused buffer; packing the next buffer overlaps exchanging the previous one.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from .. import ops, runtime
from ..errors import EngineShutdownError, MismatchError, PeerTimeoutError
from ..exchange import Allreduce, Exchange
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
        self.exchange = exchange if exchange is not None else Allreduce()
        self.fusion_bytes = int(fusion_bytes)
        self.name = name
        self.caller = caller
        self.nonfinite = nonfinite
        self.steps = 0
        self.skipped = 0
        # One plan per layout, so alternating variable sets (e.g. a GAN's two halves) neither
        # re-check layouts nor re-plan; at most _CACHE of them.
        self.plans: dict[tuple, fusion.FusionPlan] = {}

    def exchange_step(self, grads: list[Any], names: list[str]) -> fusion.FusionPlan | None:
        """Pack, exchange and wait: afterwards the plan's buffers hold the combined gradients.

        Non-finite gradients on any rank (see :mod:`.nonfinite`): raises
        ``NonFiniteGradientError`` on every rank, or with ``nonfinite="skip"`` warns and returns
        ``None`` on every rank (the step must not be applied).
        """
        if not tf.executing_eagerly():
            raise RuntimeError(
                f"{self.caller} must run eagerly: keep the forward/backward in a tf.function "
                "but call it outside"
            )
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        plan = self._plan_for(grads, names)
        verdict = StepVerdict(self.name, self.steps)
        self.steps += 1
        pending = []
        for gi, group in enumerate(plan.groups):
            buffer = plan.pack(grads, group)
            verdict.check(group)  # zeroes a non-finite buffer before it can leave this rank
            name = f"{self.name}.grads[{gi}]"
            pending.append(self.exchange.start(buffer, name=name, signature=plan.signature))
        pending.append(verdict.start())
        try:
            for handle in pending:
                handle.wait()
        except (PeerTimeoutError, EngineShutdownError) as e:
            # The engine names the ranks and the operation; add the training step.
            raise type(e)(f"{e} (at step {verdict.step} of {self.caller})") from e
        if verdict.settle(plan, self.nonfinite):
            return plan
        self.skipped += 1
        return None

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

    def _plan_for(self, grads: list[Any], names: list[str]) -> fusion.FusionPlan:
        layout = fusion.layout_of(grads, names)
        plan = self.plans.get(layout)
        if plan is None:
            check_same_layout(layout, f"{self.name}.layout")
            evict_oldest(self.plans)
            plan = self.plans[layout] = fusion.plan(grads, names, self.fusion_bytes)
        return plan


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
