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

from ..compression import Compressor
from ..errors import InvalidArgumentError
from ..exchange import Exchange
from .aggregation import LocalAggregation, check_passes
from .exchanger import DEFAULT_FUSION_BYTES
from .horovod_args import refuse_not_offered, resolve
from .nonfinite import NonFinitePolicy, check_policy
from .step import DistributedStep


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

    Use it in a custom training loop, eagerly (the forward/backward may be a ``tf.function``) or
    inside a ``tf.function``; :mod:`dlion.tensorflow.step` is the path both take (the same as
    :class:`dlion.keras.DistributedOptimizer`'s)::

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
        self._step = DistributedStep(
            optimizer,
            exchange,
            fusion_bytes=fusion_bytes,
            name=name,
            caller=f"{caller}.apply_gradients",
            nonfinite=check_policy(nonfinite, caller),
            compile_apply=compile_apply,
        )
        self._exchanger = self._step.exchanger
        self._apply_fns = self._step.apply_fns

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
        """Combine the gradients across ranks with the exchange policy, then apply them (eagerly,
        or inside a ``tf.function``: see :mod:`dlion.tensorflow.step`)."""
        pairs = list(grads_and_vars)
        grads = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        if self._aggregation is not None:
            if not tf.executing_eagerly():
                raise InvalidArgumentError(
                    "dlion.DistributedOptimizer(backward_passes_per_step>1) sums the passes "
                    "eagerly: call apply_gradients outside the tf.function, or use "
                    "dlion.keras.DistributedOptimizer (which keeps the sums in variables)"
                )
            aggregated = self._aggregation.add(grads)
            if aggregated is None:  # not the last pass of the group: nothing to apply yet
                return self._optimizer.iterations
            grads = aggregated
        self._step.apply(grads, variables)
        return self._optimizer.iterations

    def flush(self) -> None:
        """Complete and apply what the exchange still has in flight: with
        :class:`dlion.OuterSync` and ``overlap > 0``, call it after the last step."""
        self._step.flush()

    def reduce_gradients(
        self, grads: list[Any], variables: list[tf.Variable]
    ) -> list[tf.Tensor | None] | None:
        """The combined gradients, in order (``None`` stays ``None``); ``None`` instead of the
        list when every rank skips the step (``nonfinite="skip"``)."""
        return self._step.reduce(grads, variables)
