"""Gaia's significance filter (Hsieh et al., "Gaia: Geo-Distributed Machine Learning
Approaching LAN Speeds", NSDI 2017) as a peer exchange policy.

Gaia keeps the parameters replicated per data center; inside a data center workers synchronize
as usual, and across data centers a parameter's accumulated update is sent only once it is
*significant*: ``|accumulated update_i| > threshold * |param_i|`` (1% in the paper). Mapped onto
the peer engine:

* links between ranks of the same site (:func:`dlion.sites`) carry the dense gradient;
* a link to another site carries every entry ``i`` of ``x = residual + grad`` with
  ``|x_i| > t * |param_i|``, and what it does not carry stays in that link's residual (error
  feedback, in C++): the residual *is* Gaia's local accumulation of insignificant updates, and
  an entry leaves as soon as its accumulation becomes significant.

**Updates vs gradients.** Gaia compares accumulated *updates*; the engine accumulates
*gradients*. With plain SGD an update is ``-lr * grad``, so with ``learning_rate=lr`` the filter
is ``lr * |x_i| > threshold * |param_i|``, i.e. ``t = threshold / lr``. Without a learning rate
the threshold applies to the accumulated gradient directly (``t = threshold``: fold the
learning rate in yourself). Momentum, Adam, or a schedule change the true update; the mapping
then uses the learning rate you pass (a documented approximation).

**The reference.** The parameters' magnitudes must be a float32 vector in the fused layout of
the gradient buffer. The policy takes ``params``: the variables the optimizer applies gradients
to, in the same order (``model.trainable_variables``). :class:`dlion.DistributedOptimizer` packs
gradients of that list, in order, into float32 buffers cut at ``fusion_bytes``; the policy
lays the parameters out the same way: the buffers it sees are given consecutive offsets into the
concatenated parameters, in the order their names are first exchanged (the exchanger's group
order). The values are re-read (one concatenate, no per-element Python) before every exchange
of the first group, so the filter compares with the current parameters. Override
:meth:`GaiaExchange.reference_for` for another layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import runtime
from ..errors import InvalidArgumentError
from ._stepped import SteppedPeerExchange
from .peer import Topology
from .plans import SELECT_THRESHOLD, SelectPlan, dense_plan, sparse_encoding

Params = Sequence[Any] | Callable[[], Sequence[Any]]


class GaiaExchange(SteppedPeerExchange):
    """Gaia's significance filter: dense inside a site, significant entries across sites.

    Args:
        threshold: significance threshold (Gaia: 0.01): an entry crosses sites once its
            accumulated update exceeds ``threshold`` times the parameter's magnitude.
        params: the parameters the gradients belong to, in the optimizer's order
            (``model.trainable_variables``), or a callable returning them. Anything
            ``np.asarray`` reads (TF/Keras variables, numpy arrays). Needed only when ranks
            span several sites.
        learning_rate: the optimizer's learning rate: the filter then compares
            ``learning_rate * |accumulated gradient|`` (the accumulated SGD update) with
            ``threshold * |param|``. ``None``: ``threshold`` applies to the gradient as is.
        bits: 32 (default, Gaia's float values) or 8 (8-bit quantized values of the
            significant entries; the rounding error stays in the residual).
        staleness: 0 is synchronous; ``s > 0`` bounds how far a rank runs ahead of its
            slowest peer (Gaia's mirror clock bounds the staleness between data centers).
        weight: this rank's aggregation weight (default ``1 / size``).
        bucket: values per scale of 8-bit values.
        topology: ``"auto"`` (default): as in Gaia's paper, each site aggregates inside first
            and each site pair carries the site's significant updates once (the site-aware
            exchange of :mod:`dlion.exchange.sites`, with the threshold against the
            parameters of each piece), when there are several sites with several ranks;
            ``"ranks"``: every rank filters and sends its own gradient to every remote rank.
    """

    def __init__(
        self,
        threshold: float = 0.01,
        *,
        params: Params | None = None,
        learning_rate: float | None = None,
        bits: int = 32,
        staleness: int = 0,
        weight: float | None = None,
        bucket: int = 512,
        topology: Topology = "auto",
    ) -> None:
        if isinstance(threshold, bool) or not (
            isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0
        ):
            raise InvalidArgumentError(
                f"GaiaExchange(threshold={threshold!r}): must be a finite number >= 0 "
                "(Gaia uses 0.01: 1% of the parameter's magnitude)"
            )
        if learning_rate is not None and not (
            isinstance(learning_rate, (int, float))
            and math.isfinite(learning_rate)
            and learning_rate > 0
        ):
            raise InvalidArgumentError(
                f"GaiaExchange(learning_rate={learning_rate!r}): must be > 0, or None to "
                "apply the threshold to the gradient itself"
            )
        if bits not in (8, 32):
            raise InvalidArgumentError(f"GaiaExchange(bits={bits!r}): use 32 or 8")
        if params is not None and not (callable(params) or isinstance(params, Sequence)):
            raise InvalidArgumentError(
                f"GaiaExchange(params={type(params).__name__}): pass a list of variables "
                "(model.trainable_variables) or a callable returning one"
            )
        super().__init__(
            "dense", staleness=staleness, weight=weight, bucket=bucket, topology=topology
        )
        self.threshold = float(threshold)
        self.learning_rate = None if learning_rate is None else float(learning_rate)
        self.bits = bits
        self.params = params
        self._offsets: dict[str, int] = {}  # exchange name -> offset into the parameters
        self._sizes: dict[str, int] = {}  # exchange name -> elements
        self._reference = np.empty(0, np.float32)
        self._first: str | None = None  # the group whose exchange refreshes the reference

    def gradient_threshold(self) -> float:
        """``t`` of the engine's rule ``|x_i| > t * |param_i|`` on accumulated gradients."""
        lr = self.learning_rate
        return self.threshold if lr is None else self.threshold / lr

    def plan_step(self, n: int, group: int, step: int) -> list[SelectPlan]:
        sites = runtime.sites()
        mine = sites[runtime.rank()]
        cross: SelectPlan = (
            sparse_encoding(self.bits),
            n,
            0,
            self.bucket,
            True,
            SELECT_THRESHOLD,
            self.gradient_threshold(),
            0,
        )
        dense = dense_plan(self.bucket)
        return [dense if s == mine else cross for s in sites]

    def _values(self) -> list[np.ndarray]:
        if self.params is None:
            raise InvalidArgumentError(
                f"rank {runtime.rank()}: GaiaExchange: ranks span several sites "
                f"({sorted(set(runtime.sites()))}), so the significance filter needs the "
                "parameters: pass params=model.trainable_variables (the optimizer's var_list, "
                "in order), or override reference_for(name, n)"
            )
        params = self.params() if callable(self.params) else self.params
        return [np.asarray(p, dtype=np.float32).reshape(-1) for p in params]

    def reference_for(self, name: str, n: int) -> np.ndarray:
        """The parameters of the fused buffer ``name`` (``n`` elements), as float32.

        Buffers get consecutive offsets in the order their names are first seen; the
        parameters are re-read when the first buffer of a step is exchanged."""
        if self._first is None:
            self._first = name
        if name == self._first or self._reference.size == 0:
            values = self._values()
            total = sum(v.size for v in values)
            if self._reference.size != total:
                self._reference = np.empty(total, np.float32)
            if values:
                np.concatenate(values, out=self._reference)
        if name not in self._offsets:
            self._offsets[name] = sum(self._sizes.values())
            self._sizes[name] = n
        off = self._offsets[name]
        if self._sizes[name] != n or off + n > self._reference.size:
            raise InvalidArgumentError(
                f"rank {runtime.rank()}: GaiaExchange: buffer '{name}' of {n} elements at offset "
                f"{off} does not fit the {self._reference.size} parameter elements given; pass "
                "the variables the optimizer applies gradients to (model.trainable_variables), "
                "in the same order"
            )
        return self._reference[off : off + n]

    def describe(self) -> str:
        lr = f", lr={self.learning_rate:g}" if self.learning_rate is not None else ""
        return f"gaia(threshold={self.threshold:g}{lr}, staleness={self.staleness})"
