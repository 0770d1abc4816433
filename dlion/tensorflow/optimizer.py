"""DistributedOptimizer: wraps a Keras 3 optimizer; gradients are exchanged before they apply.

Composition, not subclassing: the wrapper holds the user's optimizer and forwards every
attribute it does not define (``learning_rate``, ``iterations``, ``variables``, ...), so any
Keras optimizer works unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import tensorflow as tf

from .. import ops, runtime
from ..errors import MismatchError
from ..exchange import Allreduce, Exchange
from . import fusion

DEFAULT_FUSION_BYTES = 64 << 20


class DistributedOptimizer:
    """A Keras optimizer whose ``apply_gradients`` first combines gradients across ranks.

    Args:
        optimizer: any ``keras.optimizers.Optimizer``.
        exchange: how gradients are combined; default :class:`dlion.Allreduce` (dense average).
        fusion_bytes: gradients are packed into flat buffers of at most this many bytes; each
            buffer is one exchange, and packing the next overlaps exchanging the previous.
        compile_apply: apply the combined gradients with the wrapped optimizer inside a
            ``tf.function`` (traced once per set of variables), which is several times faster
            than Keras' eager ``apply_gradients``; ``False`` applies eagerly.
        name: prefix of the engine operation names (shown in errors and stall warnings).

    Use it in a custom training loop, eagerly (the forward/backward may be a ``tf.function``)::

        opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.05))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
    """

    def __init__(
        self,
        optimizer: keras.optimizers.Optimizer,
        exchange: Exchange | None = None,
        *,
        fusion_bytes: int = DEFAULT_FUSION_BYTES,
        compile_apply: bool = True,
        name: str = "DistributedOptimizer",
    ) -> None:
        if isinstance(optimizer, DistributedOptimizer):
            raise TypeError("the optimizer is already a DistributedOptimizer; wrap it only once")
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                f"DistributedOptimizer wraps a keras.optimizers.Optimizer, got {type(optimizer)}"
            )
        if exchange is not None and not isinstance(exchange, Exchange):
            raise TypeError(
                f"exchange must be a dlion Exchange (e.g. dlion.Allreduce()), got {exchange!r}"
            )
        if fusion_bytes < 1024:
            raise ValueError(f"fusion_bytes must be at least 1024, got {fusion_bytes}")
        self._optimizer = optimizer
        self._exchange = exchange if exchange is not None else Allreduce()
        self._fusion_bytes = int(fusion_bytes)
        self._name = name
        self._compile_apply = bool(compile_apply)
        # Plans and compiled applies are kept per gradient layout, so alternating variable sets
        # (e.g. a GAN's two halves) neither re-check layouts nor retrace; at most _CACHE each.
        self._plans: dict[tuple, fusion.FusionPlan] = {}
        self._apply_fns: dict[tuple, Any] = {}
        self._step = 0

    @property
    def optimizer(self) -> keras.optimizers.Optimizer:
        """The wrapped Keras optimizer."""
        return self._optimizer

    @property
    def steps(self) -> int:
        """How many times gradients were exchanged."""
        return self._step

    @property
    def exchange(self) -> Exchange:
        """The exchange policy in use."""
        return self._exchange

    def __getattr__(self, attr: str) -> Any:
        # Only reached for attributes this class does not define: forward to the optimizer.
        return getattr(self.__dict__["_optimizer"], attr)

    def apply_gradients(self, grads_and_vars: Iterable[tuple[Any, tf.Variable]]) -> Any:
        """Combine the gradients across ranks with the exchange policy, then apply them."""
        pairs = list(grads_and_vars)
        grads = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        if not self._compile_apply:
            combined = self.reduce_gradients(grads, variables)
            keep = [(g, v) for g, v in zip(combined, variables) if g is not None]
            return self._optimizer.apply_gradients(keep)
        plan = self._exchange_step(grads, variables)
        # One copy per fused buffer into TF; split, reshape, cast and apply run in one graph.
        self._compiled_apply(plan, variables)([tf.convert_to_tensor(g.buffer) for g in plan.groups])
        return self._optimizer.iterations

    def reduce_gradients(
        self, grads: list[Any], variables: list[tf.Variable]
    ) -> list[tf.Tensor | None]:
        """The combined gradients, in order (``None`` stays ``None``)."""
        plan = self._exchange_step(grads, variables)
        out: list[tf.Tensor | None] = [None] * len(grads)
        for group in plan.groups:
            plan.unpack(group, out)
        return out

    def _exchange_step(self, grads: list[Any], variables: list[tf.Variable]) -> fusion.FusionPlan:
        """Pack, exchange and wait: afterwards the plan's buffers hold the combined gradients."""
        if not tf.executing_eagerly():
            raise RuntimeError(
                "dlion.DistributedOptimizer.apply_gradients must run eagerly: keep the "
                "forward/backward in a tf.function but call apply_gradients outside it"
            )
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        plan = self._plan_for(grads, [_var_name(v) for v in variables])
        self._step += 1
        pending = []
        for gi, group in enumerate(plan.groups):  # packing group i+1 overlaps exchanging group i
            buffer = plan.pack(grads, group)
            name = f"{self._name}.grads[{gi}]"
            pending.append(self._exchange.start(buffer, name=name, signature=plan.signature))
        for handle in pending:
            handle.wait()
        return plan

    def _compiled_apply(self, plan: fusion.FusionPlan, variables: list[tf.Variable]) -> Any:
        """A tf.function (one per plan and variable list) that applies the fused buffers."""
        key = (plan.layout, *(id(v) for v in variables))
        fn = self._apply_fns.get(key)
        if fn is not None:
            return fn
        applied = [variables[s.index] for g in plan.groups for s in g.slots]
        if not self._optimizer.built:
            self._optimizer.build(applied)  # slot variables are made eagerly, once
        opt = self._optimizer

        def apply(flats: list[tf.Tensor]) -> None:
            grads = []
            for group, flat in zip(plan.groups, flats):
                parts = tf.split(flat, [s.size for s in group.slots])
                grads += [
                    tf.cast(tf.reshape(p, s.shape), s.dtype) for p, s in zip(parts, group.slots)
                ]
            opt.apply(grads, applied)

        # A concrete function: calling it skips tf.function's per-call signature matching.
        specs = [tf.TensorSpec([g.buffer.size], tf.as_dtype(g.dtype)) for g in plan.groups]
        _evict_oldest(self._apply_fns)
        fn = self._apply_fns[key] = tf.function(apply).get_concrete_function(specs)
        return fn

    def _plan_for(self, grads: list[Any], names: list[str]) -> fusion.FusionPlan:
        layout = fusion.layout_of(grads, names)
        plan = self._plans.get(layout)
        if plan is None:
            _check_same_layout(layout, f"{self._name}.layout")
            _evict_oldest(self._plans)
            plan = self._plans[layout] = fusion.plan(grads, names, self._fusion_bytes)
        return plan
        _check_same_layout(layout, f"{self._name}.layout")
        self._plan = fusion.plan(grads, names, self._fusion_bytes)
        return self._plan


_CACHE = 16


def _evict_oldest(cache: dict) -> None:
    """Keep a cache below _CACHE entries (dicts keep insertion order)."""
    while len(cache) >= _CACHE:
        del cache[next(iter(cache))]


def _var_name(v: Any) -> str:
    return str(getattr(v, "path", None) or getattr(v, "name", "?"))


def _check_same_layout(layout: tuple, op_name: str) -> None:
    """Every rank must exchange the same tensors: compare with rank 0's, name what differs."""
    layouts = ops.allgather_object(layout, op_name)
    ref = layouts[0]
    for r, other in enumerate(layouts):
        if other == ref:
            continue
        if len(other) != len(ref):
            detail = f"rank {r} has {len(other)} gradients, rank 0 has {len(ref)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(ref, other, strict=False)) if a != b)
            detail = (
                f"gradient {i}: rank {r} has {other[i][0]!r} shape {other[i][1]} "
                f"{other[i][2]}, rank 0 has {ref[i][0]!r} shape {ref[i][1]} {ref[i][2]}"
            )
        raise MismatchError(
            f"rank {runtime.rank()}: ranks disagree on the gradients to exchange: {detail}. "
            "Every rank must build the same model and pass the same variables."
        )
