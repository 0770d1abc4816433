"""Horovod's ``reducescatter`` and ``alltoall`` on numpy arrays, over dlion's collectives.

Neither is an engine operation of its own yet: ``reducescatter`` is an engine allreduce of the
whole array followed by this rank's slice (the same bytes on the wire as Horovod's MPI
fallback, twice those of a true reduce-scatter), and ``alltoall`` is an allgather from which
every rank keeps the rows sent to it (every rank receives every rank's array: meant for
routing small tensors, not for large ones). Both are negotiated like every dlion collective: a
rank whose arguments are wrong refuses, and every rank fails at once, naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import ops, runtime
from .errors import InvalidArgumentError
from .gather import refuse


def scatter_counts(n: int, size: int) -> list[int]:
    """Rows of an ``n``-row array per rank: ``n // size`` each, one more for the first
    ``n % size`` ranks (Horovod's split)."""
    return [n // size + (1 if r < n % size else 0) for r in range(size)]


def reducescatter(array: np.ndarray, op: str = "average", name: str = "reducescatter") -> Any:
    """Reduce ``array`` over ranks (``"average"`` or ``"sum"``) and return this rank's share of
    the result along the first dimension (see :func:`scatter_counts`); a new array."""
    try:
        where = f"rank {runtime.rank()}: reducescatter '{name}'"
        if not (isinstance(op, str) and op in ("average", "sum")):
            raise InvalidArgumentError(f"{where}: op must be 'average' or 'sum', not {op!r:.40}")
        if not isinstance(array, np.ndarray) or array.ndim == 0:
            raise InvalidArgumentError(
                f"{where}: expected a numpy array with a first dimension to scatter along"
            )
    except InvalidArgumentError as e:
        refuse(e, name)
    reduced = ops.allreduce(np.array(array, copy=True), op=op, name=name)  # type: ignore[arg-type]
    counts = scatter_counts(reduced.shape[0], runtime.size())
    start = sum(counts[: runtime.rank()])
    return reduced[start : start + counts[runtime.rank()]].copy()


def alltoall(
    array: np.ndarray, splits: Sequence[int] | None = None, name: str = "alltoall"
) -> tuple[np.ndarray, list[int]]:
    """Send ``splits[r]`` rows of ``array`` (in order) to every rank ``r``; returns what every
    rank sent this one, concatenated in rank order, and how many rows came from each rank.

    ``splits=None`` splits the first dimension equally (it must divide by the number of ranks).
    """
    size = runtime.size()
    try:
        where = f"rank {runtime.rank()}: alltoall '{name}'"
        if not isinstance(array, np.ndarray) or array.ndim == 0:
            raise InvalidArgumentError(
                f"{where}: expected a numpy array with a first dimension to split"
            )
        rows = array.shape[0]
        if splits is None:
            if rows % size:
                raise InvalidArgumentError(
                    f"{where}: {rows} rows do not split equally over {size} ranks; pass splits="
                )
            splits = [rows // size] * size
        counts = [int(s) for s in np.asarray(splits).reshape(-1)]
        if len(counts) != size or min(counts) < 0 or sum(counts) != rows:
            raise InvalidArgumentError(
                f"{where}: splits {counts} must be {size} non-negative row counts summing to the "
                f"first dimension ({rows})"
            )
    except InvalidArgumentError as e:
        refuse(e, name)
    every = ops.allgather_object(counts, f"{name}.splits")
    gathered = ops.allgather(np.ascontiguousarray(array), name)
    me = runtime.rank()
    parts, start = [], 0
    for sent in every:
        offset = start + sum(sent[:me])
        parts.append(gathered[offset : offset + sent[me]])
        start += sum(sent)
    return np.concatenate(parts), [sent[me] for sent in every]
