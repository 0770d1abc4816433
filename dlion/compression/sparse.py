"""Sparse compressors: a subset of the elements (indices and values) is sent."""

from __future__ import annotations

import numpy as np

import dlion_core as _core

from .base import Compressed, Compressor, flat_f32


def _k_of(ratio: float, n: int) -> int:
    return 0 if n == 0 else min(n, max(1, int(round(ratio * n))))


class _Sparse(Compressor):
    """Shared decode: the selected values (optionally compressed again) scattered into zeros."""

    def __init__(self, ratio: float, values: Compressor | None) -> None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"{type(self).__name__}: ratio must be in (0, 1], got {ratio}")
        if isinstance(values, _Sparse):
            raise ValueError("the values of a sparse compressor cannot be sparse again")
        if values is not None and not isinstance(values, Compressor):
            raise TypeError(f"values must be a dlion compressor, got {values!r}")
        self.ratio = ratio
        self.values = values

    def _pack(self, kind: str, n: int, idx: np.ndarray, vals: np.ndarray) -> Compressed:
        if self.values is None:
            return Compressed(kind, n, {"idx": idx, "values": vals})
        inner = self.values.compress(vals)
        arrays = {"idx": idx, **{f"values.{k}": a for k, a in inner.arrays.items()}}
        meta = {f"values.{k}": m for k, m in inner.meta.items()}
        return Compressed(kind, n, arrays, meta)

    def selected_values(self, c: Compressed) -> np.ndarray:
        """The values sent (after the values compressor's round trip, if any)."""
        if self.values is None:
            return c.arrays["values"]
        k = c.arrays["idx"].size
        inner = Compressed(
            self.values.describe(),
            k,
            {name[7:]: a for name, a in c.arrays.items() if name.startswith("values.")},
            {name[7:]: m for name, m in c.meta.items() if name.startswith("values.")},
        )
        return self.values.decompress(inner)

    def decompress(self, c: Compressed, out: np.ndarray | None = None) -> np.ndarray:
        target = np.zeros(c.n, np.float32) if out is None else out
        _core.scatter_add(c.arrays["idx"], self.selected_values(c), flat_f32(target, "out"))
        return target


class TopK(_Sparse):
    """The ``ratio * n`` entries of largest magnitude (ties: lower index first).

    ``exact=False`` uses the fast selection (exactly k entries, recall >= 0.99 of the exact
    set); ``values`` optionally compresses the selected values (e.g. ``Compression.qsgd(8)``).
    """

    def __init__(self, ratio: float, exact: bool = False, values: Compressor | None = None):
        self.exact = exact
        super().__init__(ratio, values)

    def compress(self, x: np.ndarray) -> Compressed:
        v = flat_f32(x, "topk.compress")
        idx, vals = _core.topk(v, _k_of(self.ratio, v.size), self.exact)
        return self._pack("topk", v.size, idx, vals)

    def describe(self) -> str:
        inner = f"+{self.values.describe()}" if self.values else ""
        return f"topk({self.ratio}){inner}"


class RandomK(_Sparse):
    """``ratio * n`` entries chosen uniformly at random (seeded; a new draw every call)."""

    def __init__(self, ratio: float, seed: int = 0, values: Compressor | None = None):
        self.seed = seed
        self._calls = 0
        super().__init__(ratio, values)

    def compress(self, x: np.ndarray) -> Compressed:
        v = flat_f32(x, "randomk.compress")
        seed = (self.seed * 0x9E3779B97F4A7C15 + self._calls) % 2**64
        self._calls += 1
        idx, vals = _core.randomk(v, _k_of(self.ratio, v.size), seed)
        return self._pack("randomk", v.size, idx, vals)

    def describe(self) -> str:
        inner = f"+{self.values.describe()}" if self.values else ""
        return f"randomk({self.ratio}){inner}"
