"""The compressor contract and the compressed-tensor container."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Compressed:
    """What a compressor produced for one flat float32 tensor of ``n`` elements.

    ``arrays`` holds the payload (e.g. ``idx`` and ``values`` for top-k, ``packed`` and
    ``scales`` for QSGD); ``meta`` small scalars (e.g. a sign scale). ``nbytes`` is what the
    payload costs on the wire.
    """

    kind: str
    n: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, float] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Payload bytes (arrays plus 4 bytes per scalar)."""
        return sum(a.nbytes for a in self.arrays.values()) + 4 * len(self.meta)


class Compressor(abc.ABC):
    """Turns a flat float32 array into a :class:`Compressed` and back.

    Contract (GRACE's, with dlion's checks):
      * ``compress(x)`` takes a float32 array (any shape; it is used flattened, without a
        copy); other dtypes, non-contiguous arrays and NaN/Inf raise
        ``dlion.InvalidArgumentError`` naming what was wrong;
      * ``decompress(c)`` returns a new float32 array of ``c.n`` elements;
        ``decompress(c, out=...)`` adds into ``out`` instead (how peers' contributions sum);
      * ``lossless`` tells error feedback whether there is anything to remember.
    """

    lossless: bool = False

    @abc.abstractmethod
    def compress(self, x: np.ndarray) -> Compressed:
        """Compress ``x`` (float32, used flattened)."""

    @abc.abstractmethod
    def decompress(self, c: Compressed, out: np.ndarray | None = None) -> np.ndarray:
        """The dense float32 values of ``c``; added into ``out`` when given."""

    def describe(self) -> str:
        """Short name for logs and tables."""
        return type(self).__name__


def flat_f32(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` as a flat float32 view, or a clear error (no silent conversion or copy)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise _invalid(
            f"{what}: expected float32, got {x.dtype}; convert with x.astype(np.float32)"
        )
    if not x.flags.c_contiguous:
        raise _invalid(f"{what}: the array is not C-contiguous; pass np.ascontiguousarray(x)")
    return x.reshape(-1)


def add_into(out: np.ndarray | None, dense: np.ndarray) -> np.ndarray:
    """``dense``, or ``out += dense`` (checked) when ``out`` is given."""
    if out is None:
        return dense
    target = flat_f32(out, "decompress(out=...)")
    if target.size != dense.size:
        raise _invalid(
            f"decompress(out=...): out has {target.size} elements, expected {dense.size}"
        )
    target += dense
    return out


def _invalid(message: str) -> Exception:
    from ..errors import InvalidArgumentError

    return InvalidArgumentError(message)
