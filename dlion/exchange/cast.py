"""A dense average sent in half precision: what ``compression=dlion.Compression.fp16`` runs.

Horovod's ``Compression.fp16`` casts every gradient to float16 before its allreduce and back
after it. dlion's collective engine reduces float32/float64 only, so the half-precision
exchange runs on the peer engine's ``fp16``/``bf16`` wire encodings instead, as a
reduce-scatter and an allgather over all ranks: the in-site phases of the site-aware exchange
(:mod:`dlion.exchange.sites`) with every rank of the job in one site, whatever
``dlion.sites()`` says, and half-precision link plans.

1. **Reduce-scatter.** The buffer (``n`` elements) is cut into ``size`` contiguous shards;
   rank ``j`` owns shard ``j``. Every rank rounds its own shard to the half-precision value
   (the C++ cast kernels, in place) and sends every other shard to its owner as one
   ``fp16``/``bf16`` message (2 bytes per element), which rounds it the same way. The owner
   sums, in rank order, every rank's rounded shard times that rank's weight (float32).
2. **Allgather.** The owner rounds its sum once more to half precision, keeps the rounded
   values and sends them to every other rank as one ``fp16``/``bf16`` message, which decodes
   them exactly.

Every term is rounded once before it is sent or summed and every shard is summed on one rank
only, then rounded and carried exactly, so every rank ends with the same bits, as after an
allreduce (no error feedback: the rounding is the loss, as in Horovod). The result is
``half(sum over ranks r in rank order of w_r * half(x_r))`` per element (a sum that rounds
to -0.0 gives +0.0 on every rank).

What a rank sends per step is about ``2 (size - 1) / size * n * 2`` bytes (plus a header per
message, ``2 (size - 1)`` messages): half of what the float32 ring allreduce sends
(``2 (size - 1) / size * n * 4``) at any number of ranks.
"""

from __future__ import annotations

from typing import Literal

from .. import runtime
from ..errors import InvalidArgumentError
from . import sites as _sites
from .peer import LinkPlan, PeerExchange
from .plans import dense_plan

_CODECS = ("fp16", "bf16")


class CastAllreduce(PeerExchange):
    """Dense weighted average of every rank's gradient, sent as float16 or bfloat16.

    Args:
        codec: ``"fp16"`` (IEEE half; a gradient or sum beyond 65504 becomes infinite, which
            the rank receiving it rejects: ``ProtocolError``, the job stops) or ``"bf16"``
            (float32's range, 8 bits of mantissa).
        weight: this rank's aggregation weight; default ``1 / size`` (plain average). Dynamic
            batching sets it to ``b_i / sum(b)``.

    A reduce-scatter and an allgather in half precision over all ranks (see
    :mod:`dlion.exchange.cast`): half the bytes of a float32 ring allreduce at any size.
    Every rank ends each step with the same combined gradient (``replicas_identical``).
    """

    #: Only the reduce-scatter and the allgather: all ranks are one site.
    cross_sites = False

    def __init__(self, codec: Literal["fp16", "bf16"] = "fp16", *, weight: float | None = None):
        if codec not in _CODECS:
            raise InvalidArgumentError(f"CastAllreduce(codec={codec!r}): use 'fp16' or 'bf16'")
        super().__init__(codec, error_feedback=False, staleness=0, weight=weight, topology="sites")

    @property
    def replicas_identical(self) -> bool:
        """True: every rank applies the same combined gradient."""
        return True

    def site_layout(self) -> _sites.SiteLayout:
        """All ranks of the job as one site (a dense average over all ranks)."""
        return _sites.SiteLayout.one_site(runtime.size(), runtime.rank())

    def in_site_plan(self) -> LinkPlan:
        """Dense ``fp16``/``bf16`` messages, no residual."""
        return dense_plan(self.bucket, self.codec)

    def describe(self) -> str:
        return f"cast_allreduce({self.codec})"
