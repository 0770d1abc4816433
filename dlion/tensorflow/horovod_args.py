"""Horovod's optimizer and tape arguments (``compression=``, ``op=``, ``sparse_as_dense=``),
translated into the one exchange policy that does what they ask.

dlion has one compression vocabulary: the compressors of :mod:`dlion.compression` name what the
exchange's wire codecs do, and ``compression=`` picks the exchange that sends them:

========================================  ===================================================
``Compression.none``                      the ``exchange`` given (default: PerLinkExchange)
``Compression.fp16`` / ``.bf16``          :class:`dlion.CastAllreduce` (dense, half precision,
                                          identical on every rank)
``Compression.topk(r)``                   ``PeerExchange("topk", k_ratio=r)`` (values float32;
                                          ``values=Compression.qsgd(8)``: 8-bit values)
``Compression.qsgd(b, bucket)``           ``PeerExchange("qsgd", bits=b, bucket=bucket)``
``Compression.sign()``                    ``PeerExchange("sign")``
``Compression.with_memory(c)``            the same, with the engine's per-link error feedback
                                          (fp16/bf16: ``PeerExchange("fp16")`` with feedback)
``Compression.randomk(r)``                refused: no wire codec; use ``topk``
========================================  ===================================================

The lossy peer exchanges are decentralized: replicas differ during training (see
:func:`dlion.average_replicas`). An ``exchange=`` and a ``compression=`` other than ``none``
together are refused: the exchange carries its own codec.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..compression import BF16, FP16, QSGD, Compressor, ErrorFeedback, NoCompression, Sign, TopK
from ..errors import InvalidArgumentError
from ..exchange import Allreduce, CastAllreduce, Exchange, PeerExchange
from ..ops import ADASUM, ADASUM_ADVICE


@dataclass(frozen=True)
class ExchangeSpec:
    """What ``compression=`` and ``op=`` ask for, hashable (tapes cache their exchangers by it)."""

    kind: str  # "cast", "peer" or "sum"
    codec: str = ""
    k_ratio: float = 1.0
    bits: int | None = None
    bucket: int = 512
    error_feedback: bool = False

    def make(self) -> Exchange:
        """A fresh exchange policy of this spec."""
        if self.kind == "sum":
            return Allreduce("sum")
        if self.kind == "cast":
            return CastAllreduce(self.codec)  # type: ignore[arg-type]
        return PeerExchange(
            self.codec,  # type: ignore[arg-type]
            k_ratio=self.k_ratio,
            bits=self.bits,
            bucket=self.bucket,
            error_feedback=self.error_feedback,
        )


def spec_of(
    exchange: Exchange | None,
    compression: Compressor | None,
    op: str,
    sparse_as_dense: bool,
    where: str,
) -> ExchangeSpec | None:
    """The exchange that ``compression`` and ``op`` ask for; ``None``: use ``exchange`` as given.

    Refuses, naming what to use instead: Adasum, ``sparse_as_dense=False``, an op other than
    average or sum, ``op="sum"`` or a compression together with ``exchange=``, and compressors
    without a wire codec.
    """
    if sparse_as_dense is not True:
        raise InvalidArgumentError(
            f"{where}: sparse_as_dense={sparse_as_dense!r}: dlion always exchanges IndexedSlices "
            "gradients as dense tensors (Horovod's sparse_as_dense=True); drop the argument"
        )
    if isinstance(op, str) and op == ADASUM:
        raise InvalidArgumentError(f"{where}: {ADASUM_ADVICE}")
    if not (isinstance(op, str) and op in ("average", "sum")):
        raise InvalidArgumentError(
            f"{where}: op={op!r}: gradients are combined with op=dlion.Average or dlion.Sum"
        )
    spec = _compression_spec(compression, where)
    if spec is not None and op == "sum":
        raise InvalidArgumentError(
            f"{where}: op=dlion.Sum with compression={compression!r}: compressed exchanges "
            "average; drop one of them"
        )
    if op == "sum":
        spec = ExchangeSpec("sum")
    if spec is not None and exchange is not None:
        raise InvalidArgumentError(
            f"{where}: pass exchange= or compression=/op=, not both: the exchange "
            f"{exchange.describe()} carries its own codec and op (e.g. "
            "dlion.PeerExchange(codec='fp16'), dlion.Allreduce(op='sum'))"
        )
    return spec


def _compression_spec(compression: Compressor | None, where: str) -> ExchangeSpec | None:
    if compression is None or isinstance(compression, NoCompression):
        return None
    memory = isinstance(compression, ErrorFeedback)
    c = compression.compressor if isinstance(compression, ErrorFeedback) else compression
    if isinstance(c, FP16 | BF16):
        codec = "fp16" if isinstance(c, FP16) else "bf16"
        return (
            ExchangeSpec("peer", codec, error_feedback=True)
            if memory
            else ExchangeSpec("cast", codec)
        )
    if isinstance(c, TopK):
        bits = 32
        if c.values is not None:
            if not (isinstance(c.values, QSGD) and c.values.bits == 8):
                raise InvalidArgumentError(
                    f"{where}: top-k values go on the wire as float32 or 8-bit QSGD; use "
                    "values=None or values=dlion.Compression.qsgd(8)"
                )
            bits = 8
        return ExchangeSpec("peer", "topk", k_ratio=c.ratio, bits=bits, error_feedback=memory)
    if isinstance(c, QSGD):
        if c.seed != 0:
            raise InvalidArgumentError(
                f"{where}: qsgd(seed={c.seed}): the exchange's rounding is seeded by the engine; "
                "seed= applies to Compressor.compress only"
            )
        return ExchangeSpec("peer", "qsgd", bits=c.bits, bucket=c.bucket, error_feedback=memory)
    if isinstance(c, Sign):
        return ExchangeSpec("peer", "sign", error_feedback=memory)
    raise InvalidArgumentError(
        f"{where}: compression {c.describe()} has no wire codec in dlion's exchanges; use "
        "dlion.Compression.fp16, bf16, topk(ratio), qsgd(bits) or sign()"
    )


#: Horovod's other optimizer and tape arguments, and what to do instead.
_NOT_OFFERED = {
    "device_dense": "dlion runs CPU ranks and moves host memory; drop it",
    "device_sparse": "dlion runs CPU ranks and moves host memory; drop it",
    "num_groups": "dlion fuses gradients into buffers of fusion_bytes; use fusion_bytes=",
    "groups": "dlion fuses gradients into buffers of fusion_bytes; use fusion_bytes=",
    "gradient_predivide_factor": "scale the loss or the learning rate instead",
    "process_set": "process sets are not offered; dlion.init(comm=...) takes an MPI "
    "sub-communicator for the whole run",
    "scale_local_gradients": "local (unsynchronized) variables are not offered; drop it",
}


def refuse_not_offered(extra: dict[str, object], where: str) -> None:
    """Horovod's arguments that dlion does not offer fail with what to use instead; any other
    unknown keyword is a ``TypeError``, as Python would raise."""
    for key in extra:
        if key in _NOT_OFFERED:
            raise InvalidArgumentError(f"{where}: {key}= is Horovod's; {_NOT_OFFERED[key]}")
    if extra:
        raise TypeError(f"{where}: unexpected keyword argument(s) {sorted(extra)}")


def resolve(
    exchange: Exchange | None,
    compression: Compressor | None,
    op: str,
    sparse_as_dense: bool,
    where: str,
) -> Exchange | None:
    """The exchange to use for these arguments (``None``: the default policy)."""
    spec = spec_of(exchange, compression, op, sparse_as_dense, where)
    return exchange if spec is None else spec.make()
