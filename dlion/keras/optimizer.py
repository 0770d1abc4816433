"""The Keras ``DistributedOptimizer``: a ``keras.optimizers.Optimizer`` for ``model.fit``.

Keras' ``model.compile`` accepts only ``keras.optimizers.Optimizer`` instances, and ``model.fit``
calls ``apply_gradients`` inside its compiled train step. This class is a Keras optimizer that
wraps the user's by composition (the shape of Keras' own ``LossScaleOptimizer``): ``apply``
combines the gradients across ranks, then hands them to the wrapped optimizer.

Inside the compiled step the exchange runs in one ``tf.py_function`` that takes the gradients
and returns the fused, combined buffers (one per dtype and ``fusion_bytes``); splitting,
reshaping and applying stay in the graph. The step is :mod:`dlion.tensorflow.step`, the path
the custom-loop :class:`dlion.DistributedOptimizer` takes too. The engine releases the GIL
while it waits.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import tensorflow as tf

from .. import runtime
from ..compression import Compressor
from ..exchange import Exchange
from ..exchange import from_config as exchange_from_config
from ..tensorflow.aggregation import check_passes
from ..tensorflow.exchanger import DEFAULT_FUSION_BYTES
from ..tensorflow.horovod_args import refuse_not_offered, resolve
from ..tensorflow.nonfinite import NonFinitePolicy, check_policy
from ..tensorflow.replicas import average_replicas
from ..tensorflow.step import DistributedStep


@keras.saving.register_keras_serializable(package="dlion")
class DistributedOptimizer(keras.optimizers.Optimizer):
    """A Keras optimizer whose updates are combined across ranks first; use it in ``model.fit``.

    Args:
        optimizer: the Keras optimizer to wrap (``keras.optimizers.SGD(...)``, ``Adam``, ...).
        exchange: how gradients are combined; default :class:`dlion.PerLinkExchange`
            (per-link top-k sized to each link's measured bandwidth; dense on fast links).
            :class:`dlion.Allreduce` is Horovod's dense average.
        fusion_bytes: gradients are packed into flat buffers of at most this many bytes.
        exchange_on_one_rank: on a single rank the exchange is the identity and is skipped by
            default; ``True`` runs it anyway (to measure its cost).
        nonfinite: ``"raise"`` (default) or ``"skip"``, as for
            :class:`dlion.DistributedOptimizer`: when some rank's gradients hold NaN or
            infinity, every rank raises, or every rank skips the step (inside ``fit`` too).
        name: the optimizer's name, also the prefix of the engine's operation names.
        compression, op, sparse_as_dense: Horovod's; they pick the exchange as for
            :class:`dlion.DistributedOptimizer` (:mod:`dlion.tensorflow.horovod_args`).
        backward_passes_per_step: add up this many batches' gradients locally (in optimizer
            variables), then exchange and apply them once, inside the compiled step.
        average_aggregated_gradients: divide the sum by ``backward_passes_per_step``.

    ::

        model.compile(optimizer=dlion.keras.DistributedOptimizer(keras.optimizers.SGD(0.01)),
                      loss=..., metrics=[...], jit_compile=False)
        model.fit(x, y, callbacks=[dlion.keras.callbacks.BroadcastGlobalVariablesCallback(0)])

    ``jit_compile`` must be off (the exchange is a ``py_function``, which XLA cannot compile).
    With a decentralized exchange, ``fit`` ends with the replicas' trainable weights averaged
    (``finalize_variable_values``).
    ``learning_rate`` and ``iterations`` are the wrapped optimizer's.
    """

    def __init__(
        self,
        optimizer: keras.optimizers.Optimizer,
        exchange: Exchange | None = None,
        *,
        fusion_bytes: int = DEFAULT_FUSION_BYTES,
        exchange_on_one_rank: bool = False,
        nonfinite: NonFinitePolicy = "raise",
        name: str | None = None,
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
        super().__init__(learning_rate=0.0, name=name or f"Distributed{optimizer.name}")
        self.inner_optimizer = optimizer
        caller = "dlion.keras.DistributedOptimizer"
        refuse_not_offered(horovod_only, caller)
        exchange = resolve(exchange, compression, op, sparse_as_dense, caller)
        self._passes_per_step, self._average_passes = check_passes(
            backward_passes_per_step, average_aggregated_gradients, caller
        )
        self._step = DistributedStep(
            optimizer,
            exchange,
            fusion_bytes=fusion_bytes,
            name=self.name,
            caller=f"{caller}.apply",
            nonfinite=check_policy(nonfinite, caller),
        )
        self._exchanger = self._step.exchanger
        self._nonfinite = nonfinite
        self._exchange_on_one_rank = bool(exchange_on_one_rank)
        self._sums: list[Any] = []

    def build(self, var_list: list[Any]) -> None:
        """Build the wrapped optimizer's slots for ``var_list`` (and, with
        ``backward_passes_per_step > 1``, one gradient sum per variable and a pass counter)."""
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        if self._passes_per_step > 1:
            self._sums = [self.add_variable_from_reference(v, "pass_sum") for v in var_list]
            self._passes = self.add_variable((), dtype="int64", name="passes")

    @property
    def variables(self) -> list[Any]:
        """This optimizer's variables followed by the wrapped optimizer's."""
        return self._variables + self.inner_optimizer.variables

    @property
    def local_variables(self) -> list[Any]:
        """The per-rank gradient sums of ``backward_passes_per_step`` (not to be broadcast:
        each rank keeps its own)."""
        return list(self._sums)

    @property
    def learning_rate(self) -> Any:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self) -> Any:
        return self.inner_optimizer.iterations

    @property
    def exchange(self) -> Exchange:
        """The exchange policy in use."""
        return self._exchanger.exchange

    @property
    def steps(self) -> int:
        """How many times gradients were exchanged."""
        return self._exchanger.steps

    def apply_gradients(self, grads_and_vars: Any) -> Any:
        """Combine the gradients across ranks, then apply them with the wrapped optimizer."""
        grads, variables = zip(*grads_and_vars)
        self.apply(list(grads), list(variables))
        return self.iterations

    def apply(self, grads: Any, trainable_variables: Any = None) -> None:
        """Combine ``grads`` across ranks, then apply them with the wrapped optimizer."""
        variables = list(trainable_variables or self._trainable_variables)
        if not self.built:
            self.build(variables)
        if self._passes_per_step == 1:
            self._hooked_apply(list(grads), variables)
            return
        self._aggregate(list(grads), variables)

    def _hooked_apply(self, grads: list[Any], variables: list[Any]) -> None:
        """Exchange and apply (:mod:`dlion.tensorflow.step`, the path both wrappers share)."""
        if self._exchanges():
            self._step.apply(grads, variables)
        else:
            self.inner_optimizer.apply(grads, variables)

    def _exchanges(self) -> bool:
        return runtime.size() > 1 or self._exchange_on_one_rank

    def _aggregate(self, grads: list[Any], variables: list[Any]) -> None:
        """Add this batch's gradients to the sums; every ``backward_passes_per_step``-th batch,
        exchange and apply them and start the sums afresh (the same branch on every rank)."""
        k = self._passes_per_step
        for s, g in zip(self._sums, grads):
            if g is not None:
                s.assign_add(tf.convert_to_tensor(g))
        self._passes.assign_add(1)
        present = [g is not None for g in grads]

        def exchange_and_apply() -> tf.Tensor:
            scale = 1.0 / k if self._average_passes else 1.0
            summed = [
                tf.convert_to_tensor(s) * scale if p else None for s, p in zip(self._sums, present)
            ]
            self._hooked_apply(summed, variables)
            for s in self._sums:
                s.assign(tf.zeros_like(s))
            return tf.constant(True)

        tf.cond(tf.equal(self._passes % k, 0), exchange_and_apply, lambda: tf.constant(False))

    def reduce_gradients(self, grads: list[Any], variables: list[Any]) -> list[Any]:
        """The gradients combined across ranks (eagerly, or as one py_function in a graph)."""
        if not self._exchanges():
            return grads
        out = self._step.reduce(grads, variables)
        if out is None:
            raise RuntimeError("every rank skipped this step (nonfinite='skip'): nothing to apply")
        return out

    def scale_loss(self, loss: Any) -> Any:
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list: Any) -> None:
        """Keras calls this on every rank at the end of ``model.fit``: with an exchange that
        leaves the replicas different (decentralized), the trainable weights become their mean
        over ranks (:func:`dlion.average_replicas`), so every rank ends with one model."""
        self.inner_optimizer.finalize_variable_values(var_list)
        self._step.flush()  # OuterSync(overlap > 0): the rounds still in flight
        if runtime.size() > 1 and not self.exchange.replicas_identical:
            average_replicas(list(var_list), name=f"{self.name}.average_replicas")

    def get_config(self) -> dict[str, Any]:
        """The wrapped optimizer, the exchange policy (its class and arguments, see
        :meth:`dlion.Exchange.get_config`), ``fusion_bytes`` and the aggregation options."""
        exchange = self.exchange.get_config()
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "exchange": exchange
            if exchange is not None
            else {"class": type(self.exchange).__name__, "unsaved": True},
            "fusion_bytes": self._exchanger.fusion_bytes,
            "nonfinite": self._nonfinite,
            "exchange_on_one_rank": self._exchange_on_one_rank,
            "backward_passes_per_step": self._passes_per_step,
            "average_aggregated_gradients": self._average_passes,
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: Any = None
    ) -> DistributedOptimizer:
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        saved = config.pop("exchange", None)
        exchange = None
        if isinstance(saved, dict) and saved.get("unsaved"):
            warnings.warn(
                f"dlion.keras.DistributedOptimizer: the saved optimizer used {saved['class']}, "
                "whose arguments are not plain data (model variables) and were not saved; it "
                "is rebuilt with the default exchange. Pass the policy again, e.g. "
                "model.optimizer = dlion.keras.DistributedOptimizer(inner, exchange=...).",
                stacklevel=2,
            )
        elif isinstance(saved, dict):
            exchange = exchange_from_config(saved)
        return cls(inner, exchange, **config)
