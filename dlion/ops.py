"""Collectives on numpy arrays and picklable objects, over the engine.

Arrays are reduced or broadcast in place, without copies: they must be C-contiguous and
writable (allreduce: float32 or float64). Every rank must call the same operations in the same
order with the same names and sizes; otherwise every rank gets a ``MismatchError`` naming the
ranks that differ, not a hang.

What is negotiated across ranks before any data is used: the kind of call and its name; for
allreduce the op and the dtype and shape; for broadcast the root and the dtype and shape (so
int32[4] on one rank and int64[2], the same 16 bytes, on another is a ``MismatchError``, not
garbage); for the object collectives the root. A call this rank rejects is still taken part in
(a refusal, see :mod:`dlion.gather`), so the other ranks fail at once too. Arrays whose dtype
holds Python objects never reach the engine (their bytes are pointers): use the object
collectives, which pickle.
"""

from __future__ import annotations

import pickle
from typing import Any, Literal

import numpy as np

import dlion_core as _core

from . import gather, runtime
from .errors import InvalidArgumentError, MismatchError
from .gather import check_name, refuse

ReduceOp = Literal["average", "sum"]
#: Every reduction ``allreduce`` accepts; "average" and "sum" of float32/float64 run in the
#: engine (ring / MPI), the rest through an allgather and a numpy reduction in rank order.
AnyReduceOp = Literal["average", "sum", "min", "max", "product"]
REDUCE_OPS: tuple[str, ...] = ("average", "sum", "min", "max", "product")
#: Horovod's ``hvd.Adasum``: named so that it fails with advice instead of as an unknown op.
ADASUM = "adasum"
ADASUM_ADVICE = (
    "Adasum is not offered by dlion; use op=dlion.Average (Horovod's default) for a dense "
    "average, or a decentralized exchange (dlion.PerLinkExchange) for slow links"
)
_ENGINE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def allreduce_async(
    array: np.ndarray, op: ReduceOp = "average", name: str = "allreduce", signature: int = 0
) -> _core.Handle:
    """Start an in-place allreduce of ``array``; ``handle.wait()`` completes it."""
    try:
        check_name(name, "allreduce")
        handle = runtime.engine().allreduce(array, op, name, signature)
        return runtime.emulated(handle, "allreduce", array.nbytes)
    except (InvalidArgumentError, TypeError) as e:
        refuse(_invalid(e, "allreduce", name), name)


def allreduce(
    array: np.ndarray, op: AnyReduceOp = "average", name: str = "allreduce"
) -> np.ndarray:
    """Allreduce ``array`` in place over ranks and return it.

    float32/float64 "average" and "sum" run in the engine. Other dtypes (integers, bool,
    float16) and the ops "min", "max" and "product" gather every rank's array and reduce them
    with numpy in rank order, so the result is identical on every rank; integers and bool do not
    average (use "sum"), bool only takes "min" (and) and "max" (or). The op, dtype and shape
    must be the same on every rank (else ``MismatchError`` on every rank, naming them).
    """
    try:
        check_name(name, "allreduce")
        where = f"rank {runtime.rank()}: allreduce '{name}'"
        if isinstance(op, str) and op == ADASUM:
            raise InvalidArgumentError(f"{where}: {ADASUM_ADVICE}")
        if not (isinstance(op, str) and op in REDUCE_OPS):
            raise InvalidArgumentError(f"{where}: op must be one of {REDUCE_OPS}, not {op!r:.60}")
        _check_array(array, where, "allreduce", writable=True)
        if array.dtype in _ENGINE_DTYPES and op in ("average", "sum"):
            handle = runtime.emulated(
                runtime.engine().allreduce(array, op, name, 0), "allreduce", array.nbytes
            )
        else:
            _check_gather_reduction(array, op, where)
            handle = None
    except InvalidArgumentError as e:
        refuse(e, name)
    if handle is not None:
        handle.wait()
        return array
    return _allreduce_by_gather(array, op, name)


def _check_array(array: Any, where: str, what: str, *, writable: bool) -> None:
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(
            f"{where}: expected a numpy array, got {type(array).__name__}; pass a numeric "
            f"array (np.asarray(x)); for Python objects use {what}_object where there is one"
        )
    if array.dtype.hasobject:
        raise InvalidArgumentError(
            f"{where}: dtype {array.dtype} holds Python objects, which {what} does not combine "
            "(their bytes are pointers); pass a numeric array, or use the object collectives "
            "(dlion.allgather_object / broadcast_object), which pickle"
        )
    if writable and not array.flags.c_contiguous:
        raise InvalidArgumentError(
            f"{where}: the array is not C-contiguous; pass np.ascontiguousarray(x)"
        )
    if writable and not array.flags.writeable:
        raise InvalidArgumentError(
            f"{where}: the array is read-only; the operation writes its result in place, so "
            "pass a writable array (e.g. x.copy())"
        )


def _check_gather_reduction(array: np.ndarray, op: str, where: str) -> None:
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


def _allreduce_by_gather(array: np.ndarray, op: str, name: str) -> np.ndarray:
    parts = _gather_arrays(array.reshape(1, *array.shape), name, "allreduce", op)
    kind = array.dtype.kind
    if op in ("sum", "average"):
        acc = parts.astype(np.float64) if kind == "f" else parts
        out = acc.sum(axis=0) if op == "sum" else acc.mean(axis=0)
    elif op == "product":
        out = parts.prod(axis=0)
    else:
        out = parts.min(axis=0) if op == "min" else parts.max(axis=0)
    with np.errstate(all="ignore"):  # float64 sums cast back: overflow is inf, as in the engine
        np.copyto(array, out, casting="unsafe")
    return array


def allgather(array: np.ndarray, name: str = "allgather") -> np.ndarray:
    """Every rank's ``array`` concatenated along the first dimension, in rank order.

    The first dimension may differ between ranks; dtype and the other dimensions must agree
    (else every rank raises ``MismatchError`` naming the rank). Returns a new array.
    """
    try:
        check_name(name, "allgather")
        where = f"rank {runtime.rank()}: allgather '{name}'"
        _check_array(array, where, "allgather", writable=False)
        if array.ndim == 0:
            raise InvalidArgumentError(
                f"{where}: a scalar has no first dimension to concatenate along; pass it "
                "reshaped to (1,)"
            )
    except InvalidArgumentError as e:
        refuse(e, name)
    return _gather_arrays(array, name, "allgather")


def _gather_arrays(array: np.ndarray, name: str, what: str, op: str = "") -> np.ndarray:
    """Allgather of arrays whose dtype and dimensions after the first must agree; ``what`` is
    "allgather" or "allreduce" (then the whole shape must agree, and the ``op``)."""
    a = np.ascontiguousarray(array)
    header = pickle.dumps((np.lib.format.dtype_to_descr(a.dtype), a.shape))
    kind = f"{what}({op})" if op else what
    layout = f"{kind} of {a.dtype}[{','.join(str(n) for n in a.shape[1:])}]"
    raw = gather.exchange(
        kind, len(header).to_bytes(4, "little") + header + a.tobytes(), name, layout
    )
    metas, datas = [], []
    for chunk in raw:
        n = int.from_bytes(chunk[:4], "little")
        metas.append(pickle.loads(chunk[4 : 4 + n]))
        datas.append(memoryview(chunk)[4 + n :])
    whole = what != "allgather"  # allreduce gathers (1, *shape): show the user's shape
    for r, (descr, shape) in enumerate(metas):
        if descr != metas[0][0] or shape[1:] != metas[0][1][1:]:
            mine, ref = (shape[1:], metas[0][1][1:]) if whole else (shape, metas[0][1])
            dt = np.lib.format.descr_to_dtype
            raise MismatchError(
                f"rank {runtime.rank()}: {what} '{name}': rank {r} passes dtype {dt(descr)} "
                f"shape {mine}, rank 0 dtype {dt(metas[0][0])} shape {ref}; "
                + (
                    "dtype and shape must agree"
                    if whole
                    else "all but the first dimension must agree"
                )
            )
    dtype = np.lib.format.descr_to_dtype(metas[0][0])
    parts = [np.frombuffer(d, dtype).reshape(s) for d, (_, s) in zip(datas, metas)]
    return np.concatenate(parts)


def broadcast(array: np.ndarray, root_rank: int = 0, name: str = "broadcast") -> np.ndarray:
    """Overwrite ``array`` on every rank with root's, in place, and return it.

    dtype and shape must be the same on every rank (negotiated: else ``MismatchError``).
    """
    try:
        check_name(name, "broadcast")
        where = f"rank {runtime.rank()}: broadcast '{name}'"
        root = check_root(root_rank, where)
        _check_array(array, where, "broadcast", writable=True)
        handle = runtime.emulated(
            runtime.engine().broadcast(array, root, name, 0), "broadcast", array.nbytes
        )
    except InvalidArgumentError as e:
        refuse(e, name)
    handle.wait()
    return array


def check_root(root: Any, where: str) -> int:
    """``root`` as an int, if it is a rank of this job."""
    size = runtime.size()
    ok = isinstance(root, int | np.integer) and not isinstance(root, bool | np.bool_)
    if not ok or not 0 <= int(root) < size:
        raise InvalidArgumentError(
            f"{where} from root {root!r:.40}, but there are {size} ranks (valid roots: "
            f"0..{size - 1}, as an int)"
        )
    return int(root)


def allgather_bytes(data: bytes, name: str = "allgather") -> list[bytes]:
    """Every rank's ``data`` (any length), in rank order, on every rank."""
    try:
        check_name(name, "allgather_bytes")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgumentError(
                f"rank {runtime.rank()}: allgather_bytes '{name}': expected bytes, got "
                f"{type(data).__name__}"
            )
    except InvalidArgumentError as e:
        refuse(e, name)
    return gather.exchange("allgather_bytes", bytes(data), name)


def _pickled(obj: Any, where: str) -> bytes:
    try:
        return pickle.dumps(obj)
    except Exception as e:  # noqa: BLE001 - pickling fails with many types (PicklingError, ...)
        raise InvalidArgumentError(
            f"{where}: the object ({type(obj).__name__}) cannot be pickled: {type(e).__name__}: {e}"
        ) from e


def allgather_object(obj: Any, name: str = "allgather_object") -> list[Any]:
    """Every rank's picklable ``obj``, in rank order, on every rank."""
    try:
        check_name(name, "allgather_object")
        data = _pickled(obj, f"rank {runtime.rank()}: allgather_object '{name}'")
    except InvalidArgumentError as e:
        refuse(e, name)
    return [pickle.loads(b) for b in gather.exchange("allgather_object", data, name)]


def broadcast_object(obj: Any, root_rank: int = 0, name: str = "broadcast_object") -> Any:
    """Root's picklable ``obj`` on every rank (the root must be the same on every rank)."""
    try:
        check_name(name, "broadcast_object")
        where = f"rank {runtime.rank()}: broadcast_object '{name}'"
        root = check_root(root_rank, where)
        data = _pickled(obj if runtime.rank() == root else None, where)
    except InvalidArgumentError as e:
        refuse(e, name)
    chunks = gather.exchange(
        "broadcast_object", root.to_bytes(4, "little") + data, name, f"broadcast_object from {root}"
    )
    roots = [int.from_bytes(c[:4], "little") for c in chunks]
    if any(r != root for r in roots):
        detail = ", ".join(f"rank {r}: root {x}" for r, x in enumerate(roots))
        raise MismatchError(
            f"rank {runtime.rank()}: broadcast_object '{name}': the ranks name different roots "
            f"({detail}); every rank must pass the same root_rank"
        )
    return pickle.loads(chunks[root][4:])


def barrier(name: str = "barrier") -> None:
    """Return once every rank has reached this barrier."""
    try:
        check_name(name, "barrier")
    except InvalidArgumentError as e:
        refuse(e, name)
    runtime.emulated(runtime.engine().barrier(name), "barrier", 0).wait()


def _invalid(error: Exception, what: str, name: Any) -> Exception:
    """A pybind ``TypeError`` (an argument of the wrong type) as an ``InvalidArgumentError``."""
    if isinstance(error, InvalidArgumentError):
        return error
    return InvalidArgumentError(f"rank {runtime.rank()}: {what} '{name}': {error}")


def check_scaling(floating: bool, dtype: str, prescale: float, postscale: float, name: str) -> None:
    """Scale factors need a floating dtype and finite values; else this rank refuses the call
    (so every rank fails at once)."""
    try:
        where = f"rank {runtime.rank()}: allreduce '{name}'"
        if not floating:
            raise InvalidArgumentError(
                f"{where}: prescale_factor/postscale_factor apply to floating tensors only, "
                f"not dtype {dtype}; scale integers after op='sum'"
            )
        if not np.isfinite(np.array([prescale, postscale], dtype=np.float64)).all():
            raise InvalidArgumentError(f"{where}: scale factors must be finite")
    except (InvalidArgumentError, TypeError, ValueError) as e:
        refuse(e, name)
