"""Local gradient aggregation: Horovod's ``backward_passes_per_step``.

With ``backward_passes_per_step=k`` the optimizer adds up the gradients of ``k`` backward
passes on this rank and exchanges (and applies) them once, on the ``k``-th: ``k`` times fewer
exchanges for the same samples. With ``average_aggregated_gradients=True`` the sum is divided by
``k``, so ``k`` passes over batches of ``b`` samples apply what one pass over the ``k * b``
samples would (for a loss that is a mean over the batch); with ``False`` (Horovod's default)
the sum is applied. Passes that do not complete a group apply nothing. The custom-loop
optimizer's sums of a group in progress are not part of a ``dlion.checkpoint``: save at a group
boundary (a step count that ``backward_passes_per_step`` divides); ``dlion.keras`` keeps them
in optimizer variables, which are.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from ..errors import InvalidArgumentError


def check_passes(k: Any, average: Any, where: str) -> tuple[int, bool]:
    """``backward_passes_per_step`` and ``average_aggregated_gradients``, checked."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidArgumentError(
            f"{where}: backward_passes_per_step must be an int >= 1, got {k!r}"
        )
    if not isinstance(average, bool):
        raise InvalidArgumentError(
            f"{where}: average_aggregated_gradients must be True or False, got {average!r}"
        )
    return k, average


class LocalAggregation:
    """Sums ``k`` passes' gradients eagerly (the custom-loop ``DistributedOptimizer``)."""

    def __init__(self, k: int, average: bool) -> None:
        self.k = k
        self.average = average
        self.passes = 0
        self._sums: list[Any] | None = None

    def add(self, grads: list[Any]) -> list[Any] | None:
        """Add one pass; the aggregated gradients on the ``k``-th pass, else ``None``."""
        dense = [None if g is None else tf.convert_to_tensor(g) for g in grads]
        if self._sums is None:
            self._sums = dense
        else:
            if len(dense) != len(self._sums):
                raise InvalidArgumentError(
                    f"backward_passes_per_step: pass {self.passes + 1} has {len(dense)} "
                    f"gradients, the first of the group had {len(self._sums)}; every pass of a "
                    "group must give gradients for the same variables"
                )
            self._sums = [_add(s, g) for s, g in zip(self._sums, dense)]
        self.passes += 1
        if self.passes % self.k:
            return None
        sums, self._sums = self._sums, None
        if not self.average:
            return sums
        return [None if s is None else s / tf.cast(self.k, s.dtype) for s in sums]


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None else a + b
