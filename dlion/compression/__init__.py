"""Gradient compression in the spirit of GRACE: compressors and error-feedback memory compose.

    c = dlion.Compression.topk(0.01)                       # top 1% by magnitude
    c = dlion.Compression.topk(0.01, values=dlion.Compression.qsgd(8))   # ... values in 8 bits
    ef = dlion.Compression.with_memory(c)                  # error feedback, one residual per key
    sent = ef.compress(grad, key="layer1")                 # numpy float32 in
    dense = ef.decompress(sent)                            # numpy float32 out

Every kernel runs in C++ (``dlion_core``) on zero-copy views with the GIL released.
"""

from __future__ import annotations

from .base import Compressed, Compressor
from .dense import BF16, FP16, QSGD, NoCompression, Sign
from .memory import ErrorFeedback
from .sparse import RandomK, TopK


class Compression:
    """The compressors by name, Horovod-style (``dlion.Compression.fp16``)."""

    none: Compressor = NoCompression()
    fp16: Compressor = FP16()
    bf16: Compressor = BF16()

    @staticmethod
    def topk(ratio: float, exact: bool = False, values: Compressor | None = None) -> TopK:
        """The ``ratio`` share of entries of largest magnitude."""
        return TopK(ratio, exact, values)

    @staticmethod
    def randomk(ratio: float, seed: int = 0, values: Compressor | None = None) -> RandomK:
        """A random ``ratio`` share of the entries (seeded)."""
        return RandomK(ratio, seed, values)

    @staticmethod
    def qsgd(bits: int = 8, bucket: int = 512, seed: int = 0) -> QSGD:
        """Unbiased stochastic quantization to ``bits`` (8, 4 or 2)."""
        return QSGD(bits, bucket, seed)

    @staticmethod
    def sign() -> Sign:
        """1 bit per element plus one scale."""
        return Sign()

    @staticmethod
    def with_memory(compressor: Compressor) -> ErrorFeedback:
        """``compressor`` with error feedback (a residual per key)."""
        return ErrorFeedback(compressor)


__all__ = [
    "BF16",
    "FP16",
    "QSGD",
    "Compressed",
    "Compression",
    "Compressor",
    "ErrorFeedback",
    "NoCompression",
    "RandomK",
    "Sign",
    "TopK",
]
