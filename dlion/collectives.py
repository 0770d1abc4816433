"""Public collectives on numpy arrays and TensorFlow tensors (Horovod's ``hvd.allreduce`` & co).

numpy arrays go to :mod:`dlion.ops` (``allreduce`` and ``broadcast`` work in place and return
the same array); TF tensors and variables go to :mod:`dlion.tensorflow.collectives`, which
returns new tensors of the same dtype and works eagerly and inside ``tf.function``. Anything
else that numpy turns into a numeric array (Python numbers, lists of them) is converted with
``np.array`` and a numpy array is returned. Python objects that are not numeric (dicts,
``None``, strings in lists of mixed types, ragged lists) and numpy arrays of dtype ``object``
never reach the engine as bytes (those would be pointers): ``broadcast`` pickles them (root's
value on every rank, as ``broadcast_object``), the reductions and ``allgather`` refuse them with
``InvalidArgumentError`` on every rank. TensorFlow is never imported here: a tensor can only
exist if the program already imported it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import ops, scatter
from .ops import ADASUM, AnyReduceOp

# Horovod's op constants (``hvd.Average``, ...); dlion's ops are these strings.
Average = "average"
Sum = "sum"
Min = "min"
Max = "max"
Product = "product"
#: Refused with advice (Adasum is not offered).
Adasum = ADASUM


def _is_tf(x: Any) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and bool(tf.is_tensor(x))


def _tf_ops() -> Any:
    from .tensorflow import collectives

    return collectives


def allreduce(
    x: Any,
    op: AnyReduceOp = "average",
    name: str = "allreduce",
    *,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
) -> Any:
    """Combine ``x`` over ranks with ``op`` ("average", "sum", "min", "max", "product"; also
    Horovod's constants ``dlion.Average`` & co).

    numpy arrays are reduced in place (and returned); TF tensors give a new tensor of the same
    dtype. Every rank must pass the same shape and dtype. ``prescale_factor`` multiplies ``x``
    before the reduction and ``postscale_factor`` the result (Horovod's; floating dtypes only).
    """
    if _is_tf(x):
        return _tf_ops().allreduce(
            x, op=op, name=name, prescale_factor=prescale_factor, postscale_factor=postscale_factor
        )
    array = _numeric(x, copy=True)
    if prescale_factor == 1.0 and postscale_factor == 1.0:
        return ops.allreduce(array, op=op, name=name)
    floating = isinstance(array, np.ndarray) and array.dtype.kind == "f"
    ops.check_scaling(
        floating,
        str(getattr(array, "dtype", type(array).__name__)),
        prescale_factor,
        postscale_factor,
        name,
    )
    array *= array.dtype.type(prescale_factor)
    ops.allreduce(array, op=op, name=name)
    array *= array.dtype.type(postscale_factor)
    return array


def grouped_allreduce(
    xs: Sequence[Any],
    op: AnyReduceOp = "average",
    name: str = "grouped_allreduce",
    *,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
) -> list[Any]:
    """:func:`allreduce` of every tensor in ``xs``, in order, as one call (Horovod's
    ``hvd.grouped_allreduce``); inside a ``tf.function`` one ``py_function`` runs them all, so
    their order is the same on every rank."""
    xs = list(xs)
    if xs and all(_is_tf(x) for x in xs):
        return _tf_ops().grouped_allreduce(
            xs, op=op, name=name, prescale_factor=prescale_factor, postscale_factor=postscale_factor
        )
    kw = {"prescale_factor": prescale_factor, "postscale_factor": postscale_factor}
    return [allreduce(x, op, f"{name}[{i}]", **kw) for i, x in enumerate(xs)]


def reducescatter(x: Any, op: AnyReduceOp = "average", name: str = "reducescatter") -> Any:
    """Reduce ``x`` over ranks (``"average"`` or ``"sum"``) and keep this rank's share of the
    first dimension: ``n // size`` rows, one more on the first ``n % size`` ranks (Horovod's
    ``hvd.reducescatter``; see :mod:`dlion.scatter` for what it costs)."""
    if _is_tf(x):
        return _tf_ops().reducescatter(x, op=op, name=name)
    return scatter.reducescatter(_numeric(x, copy=False), op, name)


def alltoall(x: Any, splits: Any = None, name: str = "alltoall") -> Any:
    """Send ``splits[r]`` rows of ``x`` to rank ``r`` (equal shares when ``splits`` is None) and
    return the rows every rank sent this one, concatenated in rank order; with ``splits`` given,
    also how many rows came from each rank (Horovod's ``hvd.alltoall``)."""
    if _is_tf(x):
        return _tf_ops().alltoall(x, splits=splits, name=name)
    out, received = scatter.alltoall(_numeric(x, copy=False), splits, name)
    return out if splits is None else (out, np.asarray(received, np.int32))


def allgather(x: Any, name: str = "allgather") -> Any:
    """Every rank's ``x`` concatenated along the first dimension (which may differ by rank)."""
    if _is_tf(x):
        return _tf_ops().allgather(x, name=name)
    return ops.allgather(_numeric(x, copy=False), name=name)


def broadcast(x: Any, root_rank: int = 0, name: str = "broadcast") -> Any:
    """Root's value of ``x`` on every rank (numpy: in place; TF: a new tensor).

    dtype and shape must agree on every rank. Python objects that are not numeric, and numpy
    arrays of dtype ``object``, are pickled instead: every rank gets root's value (non-root
    ranks may pass ``None``); an object array of root's shape is also filled in place.
    """
    if _is_tf(x):
        return _tf_ops().broadcast(x, root_rank=root_rank, name=name)
    array = _numeric(x, copy=True)
    if isinstance(array, np.ndarray) and not array.dtype.hasobject:
        return ops.broadcast(array, root_rank, name)
    value = ops.broadcast_object(x, root_rank, name)
    if isinstance(x, np.ndarray) and isinstance(value, np.ndarray) and x.flags.writeable:
        if x.shape == value.shape and x.dtype == value.dtype:
            x[...] = value
            return x
    return value


def _numeric(x: Any, *, copy: bool) -> Any:
    """``x`` as a numpy array (an object array when numpy finds no numeric dtype: the
    collectives refuse or pickle those); ``x`` itself when numpy cannot convert it at all."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.array(x) if copy else np.asarray(x)
    except (ValueError, TypeError, OverflowError):  # ragged lists and the like
        return x


def allgather_object(obj: Any, name: str = "allgather_object") -> list[Any]:
    """Every rank's picklable ``obj`` in rank order; TF tensors travel as tensors."""
    if _is_tf(obj):
        return _tf_ops().allgather_object(obj, name=name)
    return ops.allgather_object(obj, name)


def broadcast_object(obj: Any, root_rank: int = 0, name: str = "broadcast_object") -> Any:
    """Root's picklable ``obj`` on every rank; a TF tensor comes back as a tensor."""
    if _is_tf(obj):
        return _tf_ops().broadcast_object(obj, root_rank=root_rank, name=name)
    return ops.broadcast_object(obj, root_rank, name)
