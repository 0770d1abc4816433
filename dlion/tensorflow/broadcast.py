"""broadcast_variables: make every rank start from root's values."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from .. import ops


def broadcast_variables(variables: Iterable[tf.Variable], root_rank: int = 0) -> None:
    """Assign root's value of every variable to it on every rank.

    Variables are fused into one buffer per dtype, broadcast through the engine, and assigned.
    Call it after the model (and, if it has state, the optimizer) is built, before training.
    """
    variables = list(variables)
    by_dtype: dict[np.dtype, list[tf.Variable]] = {}
    for v in variables:
        by_dtype.setdefault(np.dtype(tf.as_dtype(v.dtype).as_numpy_dtype), []).append(v)
    for dtype, group in sorted(by_dtype.items(), key=lambda kv: kv[0].str):
        buffer = np.concatenate([np.asarray(v, dtype=dtype).reshape(-1) for v in group])
        ops.broadcast(buffer, root_rank, name=f"broadcast_variables[{dtype.name} x {len(group)}]")
        offset = 0
        for v in group:
            n = int(np.prod(v.shape, dtype=np.int64))
            v.assign(buffer[offset : offset + n].reshape(v.shape))
            offset += n
