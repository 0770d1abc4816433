"""Collectives on numpy arrays and picklable objects, over the engine.

Arrays are reduced or broadcast in place, without copies: they must be C-contiguous and
writable (allreduce: float32 or float64). Every rank must call the same operations in the same
order with the same names and sizes; otherwise every rank gets a ``MismatchError`` naming the
ranks that differ, not a hang.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, Literal

import numpy as np

import dlion_core as _core

from . import runtime
from .errors import InvalidArgumentError, MismatchError

ReduceOp = Literal["average", "sum"]
#: Every reduction ``allreduce`` accepts; "average" and "sum" of float32/float64 run in the
#: engine (ring / MPI), the rest through an allgather and a numpy reduction in rank order.
AnyReduceOp = Literal["average", "sum", "min", "max", "product"]
REDUCE_OPS: tuple[str, ...] = ("average", "sum", "min", "max", "product")
_ENGINE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def allreduce_async(
    array: np.ndarray, op: ReduceOp = "average", name: str = "allreduce", signature: int = 0
) -> _core.Handle:
    """Start an in-place allreduce of ``array``; ``handle.wait()`` completes it."""
    return runtime.engine().allreduce(array, op, name, signature)


def allreduce(
    array: np.ndarray, op: AnyReduceOp = "average", name: str = "allreduce"
) -> np.ndarray:
    """Allreduce ``array`` in place over ranks and return it.

    float32/float64 "average" and "sum" run in the engine. Other dtypes (integers, bool,
    float16) and the ops "min", "max" and "product" gather every rank's array and reduce them
    with numpy in rank order, so the result is identical on every rank; integers and bool do not
    average (use "sum"), bool only takes "min" (and) and "max" (or).
    """
    if op not in REDUCE_OPS:
        raise InvalidArgumentError(
            f"rank {runtime.rank()}: allreduce '{name}': op must be one of {REDUCE_OPS}, not {op!r}"
        )
    if isinstance(array, np.ndarray) and array.dtype in _ENGINE_DTYPES and op in ("average", "sum"):
        allreduce_async(array, op, name).wait()  # type: ignore[arg-type]
        return array
    return _allreduce_by_gather(array, op, name)


def _allreduce_by_gather(array: np.ndarray, op: str, name: str) -> np.ndarray:
    where = f"rank {runtime.rank()}: allreduce '{name}'"
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(f"{where}: expected a numpy array, got {type(array).__name__}")
    if not (array.flags.c_contiguous and array.flags.writeable):
        raise InvalidArgumentError(f"{where}: the array must be C-contiguous and writable")
    kind = array.dtype.kind
    if kind not in "fiub" or (kind == "b" and op not in ("min", "max")):
        raise InvalidArgumentError(
            f"{where}: op {op!r} does not apply to dtype {array.dtype} (floats take every op, "
            "integers all but 'average', bool only 'min' and 'max')"
        )
    if kind in "iu" and op == "average":
        raise InvalidArgumentError(
            f"{where}: integer dtype {array.dtype} cannot be averaged in place; use op='sum' "
            "and divide, or pass a float array"
        )
    parts = allgather(array.reshape(1, *array.shape), name=name, _what="allreduce")
    if op in ("sum", "average"):
        acc = parts.astype(np.float64) if kind == "f" else parts
        out = acc.sum(axis=0) if op == "sum" else acc.mean(axis=0)
    elif op == "product":
        out = parts.prod(axis=0)
    else:
        out = parts.min(axis=0) if op == "min" else parts.max(axis=0)
    np.copyto(array, out, casting="unsafe")
    return array


_HEADER = struct.Struct("<I")


def allgather(
    array: np.ndarray, name: str = "allgather", *, _what: str = "allgather"
) -> np.ndarray:
    """Every rank's ``array`` concatenated along the first dimension, in rank order.

    The first dimension may differ between ranks; dtype and the other dimensions must agree
    (else every rank raises ``MismatchError`` naming the rank). Returns a new array.
    """
    a = np.ascontiguousarray(array)
    if a.ndim == 0:
        raise InvalidArgumentError(
            f"rank {runtime.rank()}: {_what} '{name}': a scalar has no first dimension to "
            "concatenate along; pass it reshaped to (1,)"
        )
    if a.dtype.hasobject:
        raise InvalidArgumentError(
            f"rank {runtime.rank()}: {_what} '{name}': dtype {a.dtype} holds Python objects; "
            "use allgather_object"
        )
    header = pickle.dumps((a.dtype.str, a.shape))
    msg = b"".join((_HEADER.pack(len(header)), header, a.tobytes()))
    metas, datas = [], []
    for raw in allgather_bytes(msg, name):
        (n,) = _HEADER.unpack_from(raw)
        metas.append(pickle.loads(raw[_HEADER.size : _HEADER.size + n]))
        datas.append(memoryview(raw)[_HEADER.size + n :])
    for r, (dtype, shape) in enumerate(metas):
        if dtype != metas[0][0] or shape[1:] != metas[0][1][1:]:
            whole = _what == "allreduce"  # allreduce gathers (1, *shape): show the user's shape
            mine, ref = (shape[1:], metas[0][1][1:]) if whole else (shape, metas[0][1])
            raise MismatchError(
                f"rank {runtime.rank()}: {_what} '{name}': rank {r} passes dtype "
                f"{np.dtype(dtype)} shape {mine}, rank 0 dtype {np.dtype(metas[0][0])} shape "
                f"{ref}; "
                + (
                    "dtype and shape must agree"
                    if whole
                    else "all but the first dimension must agree"
                )
            )
    dtype = np.dtype(metas[0][0])
    parts = [np.frombuffer(d, dtype).reshape(s) for d, (_, s) in zip(datas, metas)]
    return np.concatenate(parts)


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
