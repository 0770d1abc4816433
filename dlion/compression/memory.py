"""Error feedback: what a lossy compressor did not send is kept and sent later."""

from __future__ import annotations

import numpy as np

import dlion_core as _core

from .base import Compressed, Compressor, flat_f32
from .sparse import _Sparse


class ErrorFeedback(Compressor):
    """Wraps a lossy compressor with one residual per key (tensor or link).

    ``compress(x, key)``: compensate (residual += x), compress the compensated tensor, then
    keep what was not sent (residual -= decompress(sent); for sparse selections sent exactly,
    the sent entries are zeroed). Over any run, the sum of everything sent plus the final
    residual equals the sum of the inputs: nothing is lost, only delayed.
    """

    def __init__(self, compressor: Compressor) -> None:
        if isinstance(compressor, ErrorFeedback):
            raise ValueError("error feedback is already applied; wrap the compressor only once")
        if not isinstance(compressor, Compressor):
            raise TypeError(f"ErrorFeedback wraps a dlion compressor, got {compressor!r}")
        if compressor.lossless:
            raise ValueError(
                f"error feedback with the lossless {compressor.describe()} compressor would "
                "keep nothing; use the compressor alone"
            )
        self.compressor = compressor
        self.residuals: dict[str, np.ndarray] = {}

    def compress(self, x: np.ndarray, key: str = "default") -> Compressed:
        v = flat_f32(x, f"{self.describe()}.compress")
        residual = self.residuals.get(key)
        if residual is None or residual.size != v.size:
            if residual is not None:
                raise ValueError(
                    f"{self.describe()}: key {key!r} held a residual of {residual.size} "
                    f"elements, this tensor has {v.size}; use one key per tensor"
                )
            residual = self.residuals[key] = np.zeros(v.size, np.float32)
        _core.ef_compensate(residual, v)
        c = self.compressor.compress(residual)
        sparse = isinstance(self.compressor, _Sparse) and self.compressor.values is None
        if sparse:
            _core.ef_after_sparse(residual, c.arrays["idx"])
        else:
            _core.ef_after_dense(residual, self.compressor.decompress(c))
        return c

    def decompress(self, c: Compressed, out: np.ndarray | None = None) -> np.ndarray:
        return self.compressor.decompress(c, out)

    def residual(self, key: str = "default") -> np.ndarray:
        """The residual kept for ``key`` (zeros before the first call)."""
        return self.residuals[key]

    def describe(self) -> str:
        return f"{self.compressor.describe()}+ef"
