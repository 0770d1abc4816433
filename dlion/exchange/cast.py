"""A dense average sent in half precision: what ``compression=dlion.Compression.fp16`` runs.

Horovod's ``Compression.fp16`` casts every gradient to float16 before its allreduce and back
after it. dlion's collective engine reduces float32/float64 only, so the half-precision
exchange runs on the peer engine's ``fp16``/``bf16`` wire encodings instead: each rank first
rounds its gradient to the half-precision value (the C++ cast kernels, in place), then sends it
to every peer as one ``fp16``/``bf16`` message (2 bytes per element, half of a dense float32
message), and every rank sums the rounded gradients of all ranks in rank order, each times its
sender's weight. Because every rank's own term is the same rounded value its peers decode, the
result is identical on every rank, as after an allreduce (no error feedback: the rounding is
the loss, as in Horovod).

What a rank sends per step is ``(size - 1) * 2 * n`` bytes: half of what the ring allreduce of
float32 sends on 2 ranks, the same on 4, more beyond. Use it where links are slow and ranks
few, or per site; on a LAN with many ranks :class:`dlion.Allreduce` moves less.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

import dlion_core as _core

from ..errors import InvalidArgumentError
from .base import Pending
from .peer import PeerExchange

_ROUND = {
    "fp16": (_core.to_fp16, _core.from_fp16),
    "bf16": (_core.to_bf16, _core.from_bf16),
}


class CastAllreduce(PeerExchange):
    """Dense weighted average of every rank's gradient, sent as float16 or bfloat16.

    Args:
        codec: ``"fp16"`` (IEEE half; beyond 65504 becomes infinite, which the non-finite
            check then reports) or ``"bf16"`` (float32's range, 8 bits of mantissa).
        weight: this rank's aggregation weight; default ``1 / size`` (plain average). Dynamic
            batching sets it to ``b_i / sum(b)``.

    Every rank ends each step with the same combined gradient (``replicas_identical``).
    """

    def __init__(self, codec: Literal["fp16", "bf16"] = "fp16", *, weight: float | None = None):
        if codec not in _ROUND:
            raise InvalidArgumentError(f"CastAllreduce(codec={codec!r}): use 'fp16' or 'bf16'")
        super().__init__(codec, error_feedback=False, staleness=0, weight=weight, topology="ranks")

    @property
    def replicas_identical(self) -> bool:
        """True: every rank applies the same combined gradient."""
        return True

    def start(self, buffer: np.ndarray, *, name: str, signature: int = 0) -> Pending:
        if buffer.dtype == np.float32 and buffer.size:
            to_half, from_half = _ROUND[self.codec]
            from_half(to_half(buffer), out=buffer)  # this rank's term = what its peers decode
        return super().start(buffer, name=name, signature=signature)

    def describe(self) -> str:
        return f"cast_allreduce({self.codec})"
