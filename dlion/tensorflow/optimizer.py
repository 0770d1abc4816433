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

from .. import timeline
from ..compression import Compressor
from ..exchange import Exchange
from . import fusion
from .aggregation import LocalAggregation, check_passes
from .exchanger import DEFAULT_FUSION_BYTES, GradientExchanger, evict_oldest, var_name
from .horovod_args import refuse_not_offered, resolve
from .nonfinite import NonFinitePolicy, check_policy
from .parameters import ParameterHooks


class DistributedOptimizer:
    """A Keras optimizer whose ``apply_gradients`` first combines gradients across ranks.

    Args:
        optimizer: any ``keras.optimizers.Optimizer``.
        exchange: how gradients are combined; default :class:`dlion.PerLinkExchange`
            (per-link top-k sized to each link's measured bandwidth; dense on fast links).
            :class:`dlion.Allreduce` is Horovod's dense average.
        fusion_bytes: gradients are packed into flat buffers of at most this many bytes; each
            buffer is one exchange, and packing the next overlaps exchanging the previous.
        compile_apply: apply the combined gradients with the wrapped optimizer inside a
            ``tf.function`` (traced once per set of variables), which is several times faster
            than Keras' eager ``apply_gradients``; ``False`` applies eagerly.
        nonfinite: what every rank does when some rank's gradients hold NaN or infinity (they
            are never sent to peers): ``"raise"`` (default) raises ``NonFiniteGradientError``
            on every rank, naming the ranks, the step and the tensors; ``"skip"`` warns
            (``NonFiniteGradientWarning``) and no rank applies the step (see ``skipped_steps``).
        name: prefix of the engine operation names (shown in errors and stall warnings).
        compression: Horovod's ``compression=``: a :class:`dlion.Compression` choice, which
            picks the exchange that sends it (``Compression.fp16``: :class:`dlion.CastAllreduce`;
            see :mod:`dlion.tensorflow.horovod_args`); ``none`` keeps ``exchange``.
        backward_passes_per_step: add up this many passes' gradients locally, then exchange
            and apply them once (:mod:`dlion.tensorflow.aggregation`); the other calls to
            ``apply_gradients`` apply nothing.
        average_aggregated_gradients: divide the aggregated gradients by
            ``backward_passes_per_step`` (Horovod's default is ``False``: the sum).
        op: ``dlion.Average`` (default) or ``dlion.Sum`` (``Allreduce("sum")``); Adasum is
            refused with advice.
        sparse_as_dense: IndexedSlices gradients are always exchanged densely (``True``, the
            only value).

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
        nonfinite: NonFinitePolicy = "raise",
        name: str = "DistributedOptimizer",
        compression: Compressor | None = None,
        backward_passes_per_step: int = 1,
        average_aggregated_gradients: bool = False,
        op: str = "average",
        sparse_as_dense: bool = True,
        **horovod_only: Any,
    ) -> None:
        if isinstance(optimizer, DistributedOptimizer):
            raise TypeError("the optimizer is already a DistributedOptimizer; wrap it only once")
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                f"DistributedOptimizer wraps a keras.optimizers.Optimizer, got {type(optimizer)}"
            )
        self._optimizer = optimizer
        caller = "dlion.DistributedOptimizer"
        refuse_not_offered(horovod_only, caller)
        exchange = resolve(exchange, compression, op, sparse_as_dense, caller)
        k, average = check_passes(backward_passes_per_step, average_aggregated_gradients, caller)
        self._aggregation = LocalAggregation(k, average) if k > 1 else None
        self._exchanger = GradientExchanger(
            exchange,
            fusion_bytes,
            name,
            f"{caller}.apply_gradients",
            check_policy(nonfinite, caller),
        )
        self._compile_apply = bool(compile_apply)
        self._apply_fns: dict[tuple, Any] = {}  # compiled applies, one per layout and variables
        self._joined_vars: dict[tuple, list[tf.Variable]] = {}  # dlion.join: last vars per layout
        self._exchanger.joined_apply = self._joined_apply
        self._hooks = ParameterHooks(self._exchanger.exchange, name)

    @property
    def optimizer(self) -> keras.optimizers.Optimizer:
        """The wrapped Keras optimizer."""
        return self._optimizer

    @property
    def steps(self) -> int:
        """How many times gradients were exchanged."""
        return self._exchanger.steps

    @property
    def skipped_steps(self) -> int:
        """How many exchanged steps were skipped on every rank for non-finite gradients."""
        return self._exchanger.skipped

    @property
    def exchange(self) -> Exchange:
        """The exchange policy in use."""
        return self._exchanger.exchange

    def __getattr__(self, attr: str) -> Any:
        # Only reached for attributes this class does not define: forward to the optimizer.
        return getattr(self.__dict__["_optimizer"], attr)

    def apply_gradients(self, grads_and_vars: Iterable[tuple[Any, tf.Variable]]) -> Any:
        """Combine the gradients across ranks with the exchange policy, then apply them."""
        tl = timeline.active()
        if tl is None:
            return self._apply_gradients(grads_and_vars)
        started = tl.step_begin()
        result = self._apply_gradients(grads_and_vars)
        tl.step_end(started, optimizer=self._exchanger.name, step=self.steps)
        return result

    def _apply_gradients(self, grads_and_vars: Iterable[tuple[Any, tf.Variable]]) -> Any:
        pairs = list(grads_and_vars)
        grads = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        if self._aggregation is not None:
            aggregated = self._aggregation.add(grads)
            if aggregated is None:  # not the last pass of the group: nothing to apply yet
                return self._optimizer.iterations
            grads = aggregated
        self._hooks.before(variables)
        result = self._exchange_and_apply(grads, variables)
        self._hooks.after(variables)  # also after a skipped step: every rank counts it
        return result

    def flush(self) -> None:
        """Complete and apply what the exchange still has in flight: with
        :class:`dlion.OuterSync` and ``overlap > 0``, call it after the last step."""
        self._hooks.flush()

    def _exchange_and_apply(self, grads: list[Any], variables: list[tf.Variable]) -> Any:
        if not self._compile_apply:
            combined = self.reduce_gradients(grads, variables)
            if combined is None:  # skipped on every rank (nonfinite="skip")
                return self._optimizer.iterations
            keep = [(g, v) for g, v in zip(combined, variables) if g is not None]
            with timeline.span("apply", "apply"):
                return self._optimizer.apply_gradients(keep)
        plan = self._exchange_step(grads, variables)
        if plan is None:  # skipped on every rank (nonfinite="skip")
            return self._optimizer.iterations
        if plan.layout not in self._joined_vars:
            evict_oldest(self._joined_vars)
        self._joined_vars[plan.layout] = variables
        # One copy per fused buffer into TF; split, reshape, cast and apply run in one graph.
        with timeline.span("apply", "apply"):
            self._compiled_apply(plan, variables)(
                [tf.convert_to_tensor(g.buffer) for g in plan.groups]
            )
        return self._optimizer.iterations

    def _joined_apply(self, plan: fusion.FusionPlan) -> None:
        """dlion.join: this rank has joined; apply the active ranks' combined gradients too."""
        variables = self._joined_vars.get(plan.layout)
        if variables is None:  # this layout was never applied here: nothing to keep in step
            return
        with timeline.span("apply", "apply", joined=True):
            if self._compile_apply:
                flats = [tf.convert_to_tensor(g.buffer) for g in plan.groups]
                self._compiled_apply(plan, variables)(flats)
            else:
                out: list[tf.Tensor | None] = [None] * len(variables)
                for group in plan.groups:
                    plan.unpack(group, out)
                keep = [(g, v) for g, v in zip(out, variables) if g is not None]
                self._optimizer.apply_gradients(keep)

    def reduce_gradients(
        self, grads: list[Any], variables: list[tf.Variable]
    ) -> list[tf.Tensor | None] | None:
        """The combined gradients, in order (``None`` stays ``None``); ``None`` instead of the
        list when every rank skips the step (``nonfinite="skip"``)."""
        return self._exchanger.reduce(grads, _names(variables))

    def _exchange_step(
        self, grads: list[Any], variables: list[tf.Variable]
    ) -> fusion.FusionPlan | None:
        return self._exchanger.exchange_step(grads, _names(variables))

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
        evict_oldest(self._apply_fns)
        fn = self._apply_fns[key] = tf.function(apply).get_concrete_function(specs)
        return fn


def _names(variables: list[Any]) -> list[str]:
    return [var_name(v, i) for i, v in enumerate(variables)]
