"""Dense compressors: every element is sent, in fewer bits (or as it is)."""

from __future__ import annotations

import numpy as np

import dlion_core as _core

from .base import Compressed, Compressor, add_into, flat_f32


class NoCompression(Compressor):
    """Sends float32 as it is."""

    lossless = True

    def compress(self, x: np.ndarray) -> Compressed:
        v = flat_f32(x, "none.compress")
        return Compressed("none", v.size, {"values": v.copy()})

    def decompress(self, c: Compressed, out: np.ndarray | None = None) -> np.ndarray:
        return add_into(out, c.arrays["values"].copy() if out is None else c.arrays["values"])

    def describe(self) -> str:
        return "none"


class FP16(Compressor):
    """IEEE half precision (round to nearest even; beyond 65504 becomes inf)."""

    def compress(self, x: np.ndarray) -> Compressed:
        v = flat_f32(x, "fp16.compress")
        return Compressed("fp16", v.size, {"half": _core.to_fp16(v)})

    def decompress(self, c: Compressed, out: np.ndarray | None = None) -> np.ndarray:
        return add_into(out, _core.from_fp16(c.arrays["half"]))

    def describe(self) -> str:
        return "fp16"


class BF16(Compressor):
    """bfloat16: float32's range, 8 bits of mantissa (round to nearest even)."""

    def compress(self, x: np.ndarray) -> Compressed:
        v = flat_f32(x, "bf16.compress")
        return Compressed("bf16", v.size, {"bf16": _core.to_bf16(v)})

    def decompress(self, c: Compressed, out: np.ndarray | None = None) -> np.ndarray:
        return add_into(out, _core.from_bf16(c.arrays["bf16"]))

    def describe(self) -> str:
        return "bf16"


class QSGD(Compressor):
    """Unbiased stochastic quantization to 8, 4 or 2 bits, one max-abs scale per bucket.

    Each call draws its rounding from ``seed`` and a call counter, so runs are reproducible
    and successive calls are independent.
    """

    def __init__(self, bits: int = 8, bucket: int = 512, seed: int = 0) -> None:
        if bits not in (2, 4, 8):
            raise ValueError(f"qsgd(bits={bits}): bits must be 2, 4 or 8")
        if bucket < 1:
            raise ValueError(f"qsgd(bucket={bucket}): bucket must be >= 1")
        self.bits, self.bucket, self.seed = bits, bucket, seed
        self._calls = 0

    def compress(self, x: np.ndarray) -> Compressed:
        v = flat_f32(x, f"qsgd{self.bits}.compress")
        seed = (self.seed * 0x9E3779B97F4A7C15 + self._calls) % 2**64
        self._calls += 1
        packed, scales = _core.qsgd_encode(v, self.bits, seed, self.bucket)
        return Compressed(f"qsgd{self.bits}", v.size, {"packed": packed, "scales": scales})

    def decompress(self, c: Compressed, out: np.ndarray | None = None) -> np.ndarray:
        dense = _core.qsgd_decode(
            c.arrays["packed"], c.arrays["scales"], c.n, self.bits, self.bucket
        )
        return add_into(out, dense)

    def describe(self) -> str:
        return f"qsgd{self.bits}"


class Sign(Compressor):
    """One bit per element (the sign) and one scale (mean |x|): decodes to +-scale."""

    def compress(self, x: np.ndarray) -> Compressed:
        v = flat_f32(x, "sign.compress")
        bits, scale = _core.sign_encode(v)
        return Compressed("sign", v.size, {"bits": bits}, {"scale": float(scale)})

    def decompress(self, c: Compressed, out: np.ndarray | None = None) -> np.ndarray:
        return add_into(out, _core.sign_decode(c.arrays["bits"], c.meta["scale"], c.n))

    def describe(self) -> str:
        return "sign"
