"""average_replicas: one model out of the replicas of decentralized training.

A decentralized exchange (:class:`dlion.PerLinkExchange` over slow links, the peer baselines)
leaves every rank with its own replica: close, not equal. Horovod teaches to save rank 0's
model; here that would save one replica. ``average_replicas`` replaces every replica by the
weighted mean of all of them, identical on every rank, before the model is saved or evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import ops, runtime
from ..errors import InvalidArgumentError
from .broadcast import broadcast_arrays


def average_replicas(
    model_or_variables: Any, weight: float | None = None, *, name: str = "average_replicas"
) -> None:
    """Set every floating variable to its weighted mean over ranks, ``sum_i w_i v_i / sum_i
    w_i``, identical on every rank; variables of other dtypes (counters, seed states) take rank
    0's value. Collective: every rank calls it with the same variables.

    Args:
        model_or_variables: a Keras model (its ``variables``: weights and non-trainable state
            such as batch-norm statistics) or an iterable of variables (add
            ``optimizer.variables`` to average the optimizer's slots too).
        weight: this rank's weight ``w_i`` (e.g. its batch share ``b_i / sum(b)``); ``None``
            (default): the plain mean.
    """
    variables = _variables(model_or_variables)
    if weight is not None and not (
        isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0
    ):
        raise InvalidArgumentError(
            f"rank {runtime.rank()}: {name}: weight must be finite and >= 0, got {weight!r}"
        )
    values = [np.asarray(v) for v in variables]
    floating = [i for i, a in enumerate(values) if a.dtype in (np.float32, np.float64)]
    others = [i for i in range(len(values)) if i not in set(floating)]
    total = 1.0
    if weight is not None:
        total = float(ops.allreduce(np.array([weight], np.float64), "sum", f"{name}.weights")[0])
        if not total > 0:
            raise InvalidArgumentError(
                f"rank {runtime.rank()}: {name}: the ranks' weights sum to {total}; at least "
                "one rank needs a weight > 0"
            )
    for dtype in (np.float32, np.float64):
        index = [i for i in floating if values[i].dtype == dtype]
        if not index:
            continue
        buffer = np.concatenate([values[i].reshape(-1) for i in index])
        if weight is None:
            ops.allreduce(buffer, "average", f"{name}[{np.dtype(dtype).name}]")
        else:
            buffer *= dtype(weight / total)
            ops.allreduce(buffer, "sum", f"{name}[{np.dtype(dtype).name}]")
        offset = 0
        for i in index:
            n = values[i].size
            variables[i].assign(buffer[offset : offset + n].reshape(values[i].shape))
            offset += n
    if others:
        for i, value in zip(others, broadcast_arrays([values[i] for i in others], 0)):
            variables[i].assign(value)


def _variables(model_or_variables: Any) -> list[Any]:
    variables = getattr(model_or_variables, "variables", None)
    if variables is not None and not callable(variables):
        return list(variables)
    if isinstance(model_or_variables, Iterable):
        return list(model_or_variables)
    raise InvalidArgumentError(
        f"average_replicas takes a Keras model or a list of variables, got "
        f"{type(model_or_variables).__name__}"
    )
