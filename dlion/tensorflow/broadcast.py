"""broadcast_variables: make every rank start from root's values, eagerly or in a tf.function."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import tensorflow as tf

from .. import ops
from ..errors import InvalidArgumentError


def broadcast_variables(variables: Iterable[Any], root_rank: int = 0) -> Any:
    """Assign root's value of every variable to it on every rank.

    Variables are fused into one buffer per dtype, broadcast through the engine, and assigned.
    Call it after the model (and, if it has state, the optimizer) is built. Eagerly it returns
    ``None`` once the values are assigned; inside a ``tf.function`` (Horovod's pattern: in the
    first training step, after ``apply_gradients`` built the optimizer) the broadcast is one
    ``tf.py_function`` and the returned op groups the assignments.
    """
    variables = list(variables)
    if tf.executing_eagerly():
        values = broadcast_arrays([np.asarray(v) for v in variables], root_rank)
        for v, value in zip(variables, values):
            v.assign(value)
        return None
    dtypes = [tf.as_dtype(v.dtype) for v in variables]

    def eager(*current: tf.Tensor) -> list[np.ndarray]:
        return broadcast_arrays([t.numpy() for t in current], root_rank)

    reads = [tf.convert_to_tensor(v) for v in variables]
    received = tf.py_function(eager, reads, Tout=dtypes) if variables else []
    assigns = [v.assign(tf.reshape(r, v.shape)) for v, r in zip(variables, received)]
    return tf.group(*assigns)


def broadcast_arrays(arrays: list[np.ndarray], root_rank: int) -> list[np.ndarray]:
    """Root's values of ``arrays`` (fused per dtype into one engine broadcast), same shapes."""
    by_dtype: dict[np.dtype, list[int]] = {}
    for i, a in enumerate(arrays):
        by_dtype.setdefault(a.dtype, []).append(i)
    out: list[np.ndarray] = list(arrays)
    for dtype, index in sorted(by_dtype.items(), key=lambda kv: kv[0].str):
        buffer = np.concatenate([arrays[i].reshape(-1) for i in index])
        ops.broadcast(buffer, root_rank, name=f"broadcast_variables[{dtype.name} x {len(index)}]")
        offset = 0
        for i in index:
            n = arrays[i].size
            out[i] = buffer[offset : offset + n].reshape(arrays[i].shape)
            offset += n
    return out


def broadcast_global_variables(root_rank: int = 0) -> None:
    """Horovod's TF1-style broadcast of the graph's global variables: TF2 and Keras 3 have no
    such collection, so this is refused with what to call instead (Horovod refuses it under
    eager execution too)."""
    raise InvalidArgumentError(
        "broadcast_global_variables: TensorFlow 2 has no global variable collection; use "
        f"dlion.broadcast_variables(model.variables, root_rank={root_rank}) (and the "
        "optimizer's variables), or dlion.keras.callbacks.BroadcastGlobalVariablesCallback"
        f"({root_rank}) in model.fit"
    )
