"""Dense allreduce: every rank applies the average (or sum) of all ranks' gradients."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .. import ops
from .base import Exchange, Pending


class Allreduce(Exchange):
    """Horovod's behaviour: dense average of gradients over all ranks, through the C++ engine.

    Args:
        op: ``"average"`` (default) or ``"sum"``.
    """

    def __init__(self, op: Literal["average", "sum"] = "average") -> None:
        if op not in ("average", "sum"):
            raise ValueError(f"Allreduce(op={op!r}): op must be 'average' or 'sum'")
        self.op = op

    def start(self, buffer: np.ndarray, *, name: str, signature: int = 0) -> Pending:
        return ops.allreduce_async(buffer, self.op, name, signature)

    def describe(self) -> str:
        return f"allreduce({self.op})"
