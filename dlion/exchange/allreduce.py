"""Dense allreduce: every rank applies the average (or sum) of all ranks' gradients."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from .. import ops
from ..errors import InvalidArgumentError
from .base import Exchange, Pending


class Allreduce(Exchange):
    """Horovod's behaviour: dense average of gradients over all ranks, through the C++ engine.

    Args:
        op: ``"average"`` (default) or ``"sum"``.
        weight: this rank's aggregation weight ``w_i``. When set, each rank scales its buffer by
            ``w_i`` and the ranks sum, so every rank gets ``sum_i w_i g_i`` (``op`` is then not
            used). :class:`dlion.DynamicBatcher` sets it to ``b_i / sum(b)``, which makes the
            result the mean gradient over the global batch. ``None`` (default): plain ``op``.
    """

    def __init__(
        self, op: Literal["average", "sum"] = "average", weight: float | None = None
    ) -> None:
        if op not in ("average", "sum"):
            raise ValueError(f"Allreduce(op={op!r}): op must be 'average' or 'sum'")
        self.op = op
        self.weight = weight

    @property
    def weight(self) -> float | None:
        """This rank's aggregation weight, or ``None`` for the plain ``op``."""
        return self._weight

    @weight.setter
    def weight(self, value: float | None) -> None:
        if value is not None and not (
            isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
        ):
            raise InvalidArgumentError(f"Allreduce(weight={value!r}): must be finite and >= 0")
        self._weight = None if value is None else float(value)

    def start(self, buffer: np.ndarray, *, name: str, signature: int = 0) -> Pending:
        if self._weight is None:
            return ops.allreduce_async(buffer, self.op, name, signature)
        buffer *= buffer.dtype.type(self._weight)
        return ops.allreduce_async(buffer, "sum", name, signature)

    def describe(self) -> str:
        return f"allreduce({self.op})" if self._weight is None else "allreduce(weighted)"
