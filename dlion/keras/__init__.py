"""Keras ``model.fit`` support, shaped like ``horovod.tensorflow.keras``.

``import dlion.keras as hvd`` gives the runtime functions, the collectives, a Keras-optimizer
``DistributedOptimizer`` that ``model.compile`` accepts, and ``callbacks``.
"""

from .. import (
    allgather,
    allgather_object,
    allreduce,
    barrier,
    broadcast,
    broadcast_object,
    init,
    is_initialized,
    join,
    local_rank,
    local_size,
    rank,
    shutdown,
    size,
)
from ..tensorflow import broadcast_variables
from . import callbacks
from .optimizer import DistributedOptimizer

__all__ = [
    "DistributedOptimizer",
    "allgather",
    "allgather_object",
    "allreduce",
    "barrier",
    "broadcast",
    "broadcast_object",
    "broadcast_variables",
    "callbacks",
    "init",
    "is_initialized",
    "join",
    "local_rank",
    "local_size",
    "rank",
    "shutdown",
    "size",
]
