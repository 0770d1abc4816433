"""Collectives on numpy arrays and picklable objects, over the engine.

Arrays are reduced or broadcast in place, without copies: they must be C-contiguous and
writable (allreduce: float32 or float64). Every rank must call the same operations in the same
order with the same names and sizes; otherwise every rank gets a ``MismatchError`` naming the
ranks that differ, not a hang.
"""

from __future__ import annotations

import pickle
from typing import Any, Literal

import numpy as np

import dlion_core as _core

from . import runtime
from .errors import InvalidArgumentError

ReduceOp = Literal["average", "sum"]


def allreduce_async(
    array: np.ndarray, op: ReduceOp = "average", name: str = "allreduce", signature: int = 0
) -> _core.Handle:
    """Start an in-place allreduce of ``array``; ``handle.wait()`` completes it."""
    return runtime.engine().allreduce(array, op, name, signature)


def allreduce(array: np.ndarray, op: ReduceOp = "average", name: str = "allreduce") -> np.ndarray:
    """Allreduce ``array`` in place (average or sum over ranks) and return it."""
    allreduce_async(array, op, name).wait()
    return array


def broadcast(array: np.ndarray, root_rank: int = 0, name: str = "broadcast") -> np.ndarray:
    """Overwrite ``array`` on every rank with root's, in place, and return it."""
    runtime.engine().broadcast(array, root_rank, name).wait()
    return array


def allgather_bytes(data: bytes, name: str = "allgather") -> list[bytes]:
    """Every rank's ``data`` (any length), in rank order, on every rank."""
    handle = runtime.engine().allgather(bytes(data), name)
    handle.wait()
    return list(handle.result())


def allgather_object(obj: Any, name: str = "allgather_object") -> list[Any]:
    """Every rank's picklable ``obj``, in rank order, on every rank."""
    return [pickle.loads(b) for b in allgather_bytes(pickle.dumps(obj), name)]


def broadcast_object(obj: Any, root_rank: int = 0, name: str = "broadcast_object") -> Any:
    """Root's picklable ``obj`` on every rank."""
    if not 0 <= root_rank < runtime.size():
        raise InvalidArgumentError(
            f"rank {runtime.rank()}: broadcast_object '{name}' from root {root_rank}, but there "
            f"are {runtime.size()} ranks (valid roots: 0..{runtime.size() - 1})"
        )
    return allgather_object(obj if runtime.rank() == root_rank else None, name)[root_rank]


def barrier(name: str = "barrier") -> None:
    """Return once every rank has reached this barrier."""
    runtime.engine().barrier(name).wait()
