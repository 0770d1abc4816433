"""Dense allreduce: every rank applies the average (or sum) of all ranks' gradients."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .. import ops, runtime
from ..errors import InvalidArgumentError
from ..gather import Refusal
from .base import Exchange, Pending, checked_weight


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
        self._weight = checked_weight(value, "Allreduce")

    def start(self, buffer: np.ndarray, *, name: str, signature: int = 0) -> Pending:
        if self._weight is None:
            return ops.allreduce_async(buffer, self.op, name, signature)
        ok = isinstance(buffer, np.ndarray) and buffer.dtype in (np.float32, np.float64)
        if not (ok and buffer.flags.c_contiguous and buffer.flags.writeable):
            what = (
                f"{buffer.dtype} array" if isinstance(buffer, np.ndarray) else type(buffer).__name__
            )
            return Refusal(
                InvalidArgumentError(
                    f"rank {runtime.rank()}: Allreduce on '{name}': the buffer must be a "
                    f"writable, C-contiguous float32 or float64 numpy array, got a {what}"
                ),
                name,
            )
        with np.errstate(over="ignore"):
            weight = buffer.dtype.type(self._weight)
        if not np.isfinite(weight):
            # Never sent: a refusal instead, so every rank fails at this step (see dlion.gather).
            return Refusal(self._not_finite(name, buffer.dtype, "the weight"), name)
        with np.errstate(over="ignore", invalid="ignore"):
            buffer *= weight
        if weight > 1 and not np.isfinite(buffer).all():  # w <= 1 cannot overflow a finite g
            return Refusal(self._not_finite(name, buffer.dtype, "weight x gradient"), name)
        return ops.allreduce_async(buffer, "sum", name, signature)

    def _not_finite(self, name: str, dtype: np.dtype, what: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"rank {runtime.rank()}: Allreduce(weight={self._weight!r}) on '{name}': {what} is "
            f"not finite in the buffer's dtype {dtype} (largest finite value "
            f"{np.finfo(dtype).max:.3g}); nothing was sent, and every rank fails at this step. "
            "Use weights in [0, 1] (e.g. b_i / sum(b), as dlion.DynamicBatcher sets them)."
        )

    def describe(self) -> str:
        return f"allreduce({self.op})" if self._weight is None else "allreduce(weighted)"
