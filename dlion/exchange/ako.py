"""Ako's partial gradient exchange (Watcharapichat et al., "Ako: Decentralised Deep Learning
with Partial Gradient Exchange", SoCC 2016) as a peer exchange policy.

Ako splits the gradient into ``p`` partitions. At step ``t`` each worker sends every peer one
partition, ``t mod p``, round-robin; the partition carries the sum of that partition's
gradients since it was last sent, i.e. of its last ``p`` gradients, so every gradient reaches
every peer within ``p`` steps, and a link carries ``1/p`` of the dense traffic. Mapped onto the
peer engine:

* the fused buffer of ``n`` elements is cut into ``p`` contiguous partitions, partition ``j``
  being ``[j * n // p, (j + 1) * n // p)`` (sizes differ by at most one element);
* at step ``t`` (the group's engine step) every link sends the range of partition ``t mod p`` of
  ``x = residual + grad`` (selection 2, a range); the rest stays in the link's residual (error
  feedback, in C++). So the residual restricted to a partition is exactly "the sum of that
  partition's gradients not yet sent", and nothing is lost.

Faithfulness: Ako is asynchronous (workers never wait for each other) and chooses ``p`` from the
network and compute capacity; here ``p`` is given, and synchronization is the engine's
``staleness`` (0: synchronous; ``s > 0``: bounded-staleness, closer to Ako). Ako's own wire format
sends a partition as a dense slice, and so does this one: a range is one run of consecutive
indices, which the wire format carries as flags CONTIGUOUS with the first index alone
(csrc/wire/format.h), so a message is its values only (64 + 4 + 4 * length bytes with float
values). Ako treats all links alike: links inside a site send partitions too.
"""

from __future__ import annotations

from .. import runtime
from ..errors import InvalidArgumentError
from ._stepped import SteppedPeerExchange
from .plans import SELECT_RANGE, SelectPlan, sparse_encoding


def partition(n: int, p: int, j: int) -> tuple[int, int]:
    """``(offset, length)`` of partition ``j`` of ``p`` of an ``n``-element buffer."""
    start, stop = j * n // p, (j + 1) * n // p
    return start, stop - start


class AkoExchange(SteppedPeerExchange):
    """Ako's partial exchange: partition ``step mod p`` of (residual + gradient) on every link.

    Args:
        partitions: ``p`` >= 1, the number of partitions (1: dense every step).
        bits: 32 (default, float values) or 8 (8-bit quantized values; the rounding error
            stays in the residual).
        staleness: 0 is synchronous; ``s > 0`` lets a rank run up to ``s`` steps ahead of its
            slowest peer (Ako itself is fully asynchronous).
        weight: this rank's aggregation weight (default ``1 / size``).
        bucket: values per scale of 8-bit values.
    """

    def __init__(
        self,
        partitions: int = 4,
        *,
        bits: int = 32,
        staleness: int = 0,
        weight: float | None = None,
        bucket: int = 512,
    ) -> None:
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise InvalidArgumentError(
                f"AkoExchange(partitions={partitions!r}): must be an int >= 1 (1 sends the "
                "whole gradient every step)"
            )
        if bits not in (8, 32):
            raise InvalidArgumentError(f"AkoExchange(bits={bits!r}): use 32 or 8")
        super().__init__("dense", staleness=staleness, weight=weight, bucket=bucket)
        self.partitions = partitions
        self.bits = bits

    def partition_at(self, n: int, step: int) -> tuple[int, int]:
        """``(offset, length)`` of the partition sent at ``step`` for ``n`` elements."""
        return partition(n, self.partitions, step % self.partitions)

    def plan_step(self, n: int, group: int, step: int) -> list[SelectPlan]:
        offset, length = self.partition_at(n, step)
        link: SelectPlan = (
            sparse_encoding(self.bits),
            length,
            0,
            self.bucket,
            True,
            SELECT_RANGE,
            0.0,
            offset,
        )
        return [link] * runtime.size()

    def describe(self) -> str:
        return f"ako(p={self.partitions}, staleness={self.staleness})"
