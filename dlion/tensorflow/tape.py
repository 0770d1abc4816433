"""DistributedGradientTape: a GradientTape whose gradient() is combined across ranks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import tensorflow as tf

from .. import runtime
from ..compression import Compressor
from ..errors import InvalidArgumentError
from ..exchange import Exchange
from .exchanger import DEFAULT_FUSION_BYTES, GradientExchanger, var_name
from .horovod_args import ExchangeSpec, refuse_not_offered, spec_of
from .nonfinite import check_policy

CALLER = "dlion.DistributedGradientTape.gradient"


class DistributedGradientTape:
    """Wraps a ``tf.GradientTape``: ``gradient()`` returns gradients combined across ranks.

    The same exchange as :class:`dlion.DistributedOptimizer` (default
    :class:`dlion.PerLinkExchange`: a dense average when the probe at ``dlion.init`` found
    every link fast, decentralized per-link top-k otherwise, where replicas differ; ``dlion.init``
    says which on rank 0), for loops that apply gradients themselves (Horovod's
    ``hvd.DistributedGradientTape``)::

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        tape = dlion.DistributedGradientTape(tape)
        grads = tape.gradient(loss, model.trainable_variables)   # averaged over ranks
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    ``gradient()`` works eagerly and inside a ``tf.function`` (there the exchange is one
    ``tf.py_function``, as in Horovod's TF2 examples). Other attributes are the wrapped tape's.
    When some rank's gradients hold NaN or infinity, ``gradient()`` raises
    ``NonFiniteGradientError`` on every rank (nothing non-finite is sent); ``nonfinite="skip"``
    is only for :class:`dlion.DistributedOptimizer`, which can skip the apply.

    ``compression=`` (Horovod's; e.g. ``dlion.Compression.fp16``), ``op=`` (``dlion.Average``
    or ``dlion.Sum``) and ``sparse_as_dense=True`` pick the exchange as for
    :class:`dlion.DistributedOptimizer` (:mod:`dlion.tensorflow.horovod_args`).
    """

    def __init__(
        self,
        tape: tf.GradientTape,
        exchange: Exchange | None = None,
        *,
        fusion_bytes: int = DEFAULT_FUSION_BYTES,
        nonfinite: Literal["raise"] = "raise",
        name: str = "DistributedGradientTape",
        compression: Compressor | None = None,
        op: str = "average",
        sparse_as_dense: bool = True,
        **horovod_only: Any,
    ) -> None:
        if isinstance(tape, DistributedGradientTape):
            raise TypeError("the tape is already a DistributedGradientTape; wrap it only once")
        if not isinstance(tape, tf.GradientTape):
            raise TypeError(f"DistributedGradientTape wraps a tf.GradientTape, got {type(tape)}")
        self._tape = tape
        if nonfinite == "skip":
            raise InvalidArgumentError(
                "dlion.DistributedGradientTape: nonfinite must be 'raise' (a tape cannot skip "
                "the apply; use dlion.DistributedOptimizer(..., nonfinite='skip') for that)"
            )
        check_policy(nonfinite, "dlion.DistributedGradientTape", allowed=("raise",))
        refuse_not_offered(horovod_only, "dlion.DistributedGradientTape")
        spec = spec_of(exchange, compression, op, sparse_as_dense, "dlion.DistributedGradientTape")
        self._exchanger = _exchanger_for(exchange, spec, fusion_bytes, name)
        if self._exchanger.exchange.updates_parameters:
            raise InvalidArgumentError(
                f"dlion.DistributedGradientTape: {self._exchanger.exchange.describe()} changes "
                "the parameters after every apply, which a tape never sees; use it with "
                "dlion.DistributedOptimizer or dlion.keras.DistributedOptimizer"
            )

    def __getattr__(self, attr: str) -> Any:
        # Only reached for attributes this class does not define: forward to the tape.
        return getattr(self.__dict__["_tape"], attr)

    def gradient(self, target: Any, sources: Any, *args: Any, **kwargs: Any) -> Any:
        """``tape.gradient(target, sources, ...)``, combined across ranks, same structure."""
        grads = self._tape.gradient(target, sources, *args, **kwargs)
        flat_sources = tf.nest.flatten(sources)
        flat_grads = tf.nest.flatten(grads, expand_composites=False)
        names = [var_name(v, i) for i, v in enumerate(flat_sources)]
        if tf.executing_eagerly():
            combined = self._exchanger.reduce(list(flat_grads), names)
            assert combined is not None  # only nonfinite="skip" returns None, refused above
            return tf.nest.pack_sequence_as(grads, combined)
        # Inside a tf.function: one py_function exchanges the fused gradients (dlion.keras uses
        # the same path). None gradients stay None; IndexedSlices become dense.
        keep = [i for i, g in enumerate(flat_grads) if g is not None]
        dense = [tf.convert_to_tensor(flat_grads[i]) for i in keep]
        out: list[Any] = list(flat_grads)
        combined, _ = self._exchanger.graph_reduce(dense, [names[i] for i in keep])
        for i, g in zip(keep, combined):
            out[i] = g
        return tf.nest.pack_sequence_as(grads, out)


@dataclass
class _TapeExchangers:
    """The tapes' exchangers of one run, by name, with the exchange (or the spec of
    ``compression=``/``op=``) and fusion size each was made for (held by
    :func:`dlion.runtime.run_state`, dropped at ``dlion.shutdown``). A tape usually lives one
    step; its exchanger (fusion plans, checked layouts, ``dlion.join``'s responder, which holds
    exchangers only weakly) serves every tape of that name."""

    by_name: dict[str, tuple[Exchange | ExchangeSpec | None, int, GradientExchanger]] = field(
        default_factory=dict
    )


def _exchanger_for(
    exchange: Exchange | None, spec: ExchangeSpec | None, fusion_bytes: int, name: str
) -> GradientExchanger:
    """The run's exchanger of the tapes named ``name`` with this ``exchange`` (the same object,
    or both the default) or the same ``spec``, and ``fusion_bytes``; a new one otherwise, or
    before ``dlion.init``."""
    key: Exchange | ExchangeSpec | None = exchange if spec is None else spec

    def make() -> GradientExchanger:
        policy = exchange if spec is None else spec.make()
        return GradientExchanger(policy, fusion_bytes, name, CALLER)

    if not runtime.is_initialized():
        return make()
    cache = runtime.run_state(_TapeExchangers).by_name
    held = cache.get(name)
    if held is not None and held[1] == fusion_bytes:
        same = held[0] is key if spec is None else held[0] == key
        if same:
            return held[2]
    made = make()
    cache[name] = (key, fusion_bytes, made)
    return made
