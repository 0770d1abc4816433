"""Collectives on TF tensors and variables: new tensors of the same dtype, eager or in graphs.

Eagerly, the tensor's value goes through :mod:`dlion.ops` as a numpy array. Inside a
``tf.function`` (or Keras' compiled train step) the same code runs in a ``tf.py_function``;
the engine releases the GIL while it waits. Every rank must run the same collectives in the
same order: in a graph, order several collectives with control dependencies (or one after the
other's result), since TF may otherwise run independent ops in either order.

float16 and bfloat16 are reduced as float32 (exact for the values they hold); integers and bool
go through the gather path of :func:`dlion.ops.allreduce`; strings, complex numbers and other
dtypes are refused with ``InvalidArgumentError`` naming the rank and the tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from .. import ops, runtime
from ..errors import InvalidArgumentError
from ..gather import check_name, refuse
from ..ops import AnyReduceOp

_WIDENED = {tf.float16: tf.float32, tf.bfloat16: tf.float32}
_SUPPORTED = {
    tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.bool,
    tf.int8, tf.int16, tf.int32, tf.int64, tf.uint8, tf.uint16, tf.uint32, tf.uint64,
}  # fmt: skip


def _check(x: Any, what: str, name: str) -> tf.Tensor:
    """``x`` as a tensor of a supported dtype; else this rank refuses the call (the other
    ranks, in the same collective, fail at once too: see dlion.gather)."""
    t = tf.convert_to_tensor(x)
    try:
        check_name(name, what)
        if t.dtype not in _SUPPORTED:
            raise InvalidArgumentError(
                f"rank {runtime.rank()}: {what} '{name}': dtype {t.dtype.name} is not supported "
                f"(supported: {sorted(d.name for d in _SUPPORTED)})"
            )
        if what in ("allgather", "reducescatter", "alltoall") and t.shape.rank == 0:
            raise InvalidArgumentError(
                f"rank {runtime.rank()}: {what} '{name}': a scalar has no first dimension; "
                "pass tf.reshape(x, [1])"
            )
    except InvalidArgumentError as e:
        refuse(e, name)
    return t


def _run(fn: Callable[[np.ndarray], np.ndarray], t: tf.Tensor, shape: Any) -> tf.Tensor:
    """``fn`` on ``t``'s value as a fresh, writable numpy array; eager or as a py_function."""
    wire = _WIDENED.get(t.dtype, t.dtype)

    def eager(value: tf.Tensor) -> tf.Tensor:
        out = fn(np.array(tf.cast(value, wire).numpy(), copy=True))
        return tf.cast(tf.convert_to_tensor(out), t.dtype)

    if tf.executing_eagerly():
        return eager(t)
    result = tf.py_function(eager, [t], Tout=t.dtype)
    result.set_shape(shape)
    return result


def allreduce(
    x: Any,
    op: AnyReduceOp = "average",
    name: str = "allreduce",
    *,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
) -> tf.Tensor:
    """``x`` combined over ranks with ``op``; same shape and dtype on every rank.
    ``prescale_factor`` multiplies ``x`` first, ``postscale_factor`` the result."""
    t = _check(x, "allreduce", name)
    scaled = _scaling(t, prescale_factor, postscale_factor, name)
    if scaled:
        t = t * tf.cast(prescale_factor, t.dtype)
    out = _run(lambda a: ops.allreduce(a, op=op, name=name), t, t.shape)
    return out * tf.cast(postscale_factor, t.dtype) if scaled else out


def _scaling(t: tf.Tensor, prescale: float, postscale: float, name: str) -> bool:
    """Whether scale factors apply (checked: floating dtypes, finite factors)."""
    if prescale == 1.0 and postscale == 1.0:
        return False
    ops.check_scaling(t.dtype.is_floating, t.dtype.name, prescale, postscale, name)
    return True


def grouped_allreduce(
    xs: list[Any],
    op: AnyReduceOp = "average",
    name: str = "grouped_allreduce",
    *,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
) -> list[tf.Tensor]:
    """:func:`allreduce` of each tensor, in order; in a graph, one ``py_function`` for all."""
    ts = [_check(x, "allreduce", f"{name}[{i}]") for i, x in enumerate(xs)]
    scaled = [_scaling(t, prescale_factor, postscale_factor, name) for t in ts]
    ts = [t * tf.cast(prescale_factor, t.dtype) if s else t for t, s in zip(ts, scaled)]

    def eager(*values: tf.Tensor) -> list[tf.Tensor]:
        out = []
        for i, (v, t) in enumerate(zip(values, ts)):
            wire = _WIDENED.get(t.dtype, t.dtype)
            a = np.array(tf.cast(v, wire).numpy(), copy=True)
            out.append(tf.cast(ops.allreduce(a, op=op, name=f"{name}[{i}]"), t.dtype))
        return out

    if tf.executing_eagerly():
        results = eager(*ts)
    else:
        results = tf.py_function(eager, ts, Tout=[t.dtype for t in ts])
        for r, t in zip(results, ts):
            r.set_shape(t.shape)
    return [
        r * tf.cast(postscale_factor, t.dtype) if s else r for r, t, s in zip(results, ts, scaled)
    ]


def reducescatter(x: Any, op: AnyReduceOp = "average", name: str = "reducescatter") -> tf.Tensor:
    """``x`` reduced over ranks, this rank's share of the first dimension (dlion.scatter)."""
    from .. import scatter

    t = _check(x, "reducescatter", name)
    return _run(lambda a: scatter.reducescatter(a, op, name), t, [None, *t.shape[1:]])


def alltoall(x: Any, splits: Any = None, name: str = "alltoall") -> Any:
    """The rows every rank sent this one (``splits[r]`` rows of ``x`` go to rank ``r``); with
    ``splits`` given, also the rows received from each rank (an int32 tensor)."""
    from .. import scatter

    t = _check(x, "alltoall", name)
    counts = None if splits is None else tf.convert_to_tensor(splits)
    wire = _WIDENED.get(t.dtype, t.dtype)

    def eager(value: tf.Tensor, *given: tf.Tensor) -> list[tf.Tensor]:
        a = np.array(tf.cast(value, wire).numpy(), copy=True)
        out, received = scatter.alltoall(
            a, [int(c) for c in given[0].numpy()] if given else None, name
        )
        return [tf.cast(tf.convert_to_tensor(out), t.dtype), tf.constant(received, tf.int32)]

    inputs = [t] if counts is None else [t, counts]
    if tf.executing_eagerly():
        out, received = eager(*inputs)
    else:
        out, received = tf.py_function(eager, inputs, Tout=[t.dtype, tf.int32])
        out.set_shape([None, *t.shape[1:]])
        received.set_shape([runtime.size()])
    return out if splits is None else (out, received)


def allgather(x: Any, name: str = "allgather") -> tf.Tensor:
    """Every rank's ``x`` concatenated along the first dimension (sizes may differ by rank)."""
    t = _check(x, "allgather", name)
    return _run(lambda a: ops.allgather(a, name=name), t, [None, *t.shape[1:]])


def broadcast(x: Any, root_rank: int = 0, name: str = "broadcast") -> tf.Tensor:
    """Root's value of ``x`` on every rank (shape and dtype must agree)."""
    t = _check(x, "broadcast", name)
    try:
        root_rank = ops.check_root(root_rank, f"rank {runtime.rank()}: broadcast '{name}'")
    except InvalidArgumentError as e:
        refuse(e, name)
    return _run(lambda a: ops.broadcast(a, root_rank, name), t, t.shape)


def allgather_object(x: Any, name: str = "allgather_object") -> list[Any]:
    """Every rank's tensor (any shape), in rank order, as tensors of its dtype. What another
    rank passed that is not an array (it passed a Python object) is returned as it is, so
    that no rank fails where the others succeed."""
    t = tf.convert_to_tensor(x)
    return [_as_tensor(v) for v in ops.allgather_object(t.numpy(), name)]


def broadcast_object(x: Any, root_rank: int = 0, name: str = "broadcast_object") -> Any:
    """Root's tensor (any shape and dtype) on every rank (root's object as it is, if root
    passed a Python object rather than a tensor)."""
    t = tf.convert_to_tensor(x)
    return _as_tensor(ops.broadcast_object(t.numpy(), root_rank, name))


def _as_tensor(value: Any) -> Any:
    """A numeric numpy array or scalar (what a tensor travels as) as a tensor; anything else
    (strings too: TF would turn them into bytes) as it is."""
    if isinstance(value, np.ndarray | np.generic) and np.asarray(value).dtype.kind in "biufc":
        try:
            return tf.convert_to_tensor(value)
        except (TypeError, ValueError):  # a dtype TF has no tensor of (datetime64, ...)
            return value
    return value
