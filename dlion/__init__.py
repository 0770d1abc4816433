"""dlion: decentralized, heterogeneity-aware data-parallel training for TensorFlow 2 / Keras 3.

Horovod's shape::

    import dlion
    dlion.init()
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.05), exchange=dlion.Allreduce())
    dlion.broadcast_variables(model.variables, root_rank=0)

TensorFlow is imported lazily: ``dlion.DistributedOptimizer``, ``dlion.DistributedGradientTape``
and ``dlion.broadcast_variables`` load ``dlion.tensorflow`` on first use, so MPI-only code never
pays for importing TF.
"""

from __future__ import annotations

from typing import Any

# mpi4py first: it initialises MPI (thread level MULTIPLE) before the extension is loaded.
from mpi4py import MPI  # noqa: F401  (import order matters)

from . import checkpoint, emulate, errors
from .batching import DynamicBatcher
from .capabilities import (
    ccl_built,
    cross_rank,
    cross_size,
    cuda_built,
    ddl_built,
    gloo_built,
    gloo_enabled,
    mpi_built,
    mpi_enabled,
    mpi_threads_supported,
    nccl_built,
    rocm_built,
    sycl_built,
)
from .collectives import (
    Adasum,
    Average,
    Max,
    Min,
    Product,
    Sum,
    allgather,
    allgather_object,
    allreduce,
    alltoall,
    broadcast,
    broadcast_object,
    grouped_allreduce,
    reducescatter,
)
from .compression import Compression, Compressor, ErrorFeedback
from .config import Config
from .errors import (
    CheckpointError,
    DlionError,
    EngineShutdownError,
    InvalidArgumentError,
    MismatchError,
    MpiError,
    NonFiniteGradientError,
    NonFiniteGradientWarning,
    NotInitializedError,
    OptionTypeError,
    PeerTimeoutError,
    ProtocolError,
    RankLostError,
)
from .exchange import (
    AkoExchange,
    Allreduce,
    CastAllreduce,
    Exchange,
    GaiaExchange,
    OuterSync,
    PeerExchange,
    PerLinkExchange,
)
from .joining import join
from .knowledge import KnowledgeTransfer, TransferReport
from .links import LinkStats, link_stats
from .ops import allreduce_async, barrier
from .runtime import (
    config,
    init,
    is_initialized,
    local_rank,
    local_size,
    rank,
    shutdown,
    site,
    sites,
    size,
    start_timeline,
)
from .timeline import stop as stop_timeline

__version__ = "0.1.0"

_LAZY_TF = {
    "DistributedGradientTape",
    "DistributedOptimizer",
    "average_replicas",
    "broadcast_global_variables",
    "broadcast_variables",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_TF:
        from . import tensorflow as _tf

        return getattr(_tf, name)
    raise AttributeError(f"module 'dlion' has no attribute {name!r}")


__all__ = [
    "Adasum",
    "AkoExchange",
    "Allreduce",
    "Average",
    "CastAllreduce",
    "CheckpointError",
    "Compression",
    "Compressor",
    "Config",
    "DistributedGradientTape",
    "DistributedOptimizer",
    "DlionError",
    "DynamicBatcher",
    "EngineShutdownError",
    "ErrorFeedback",
    "Exchange",
    "GaiaExchange",
    "InvalidArgumentError",
    "KnowledgeTransfer",
    "LinkStats",
    "Max",
    "Min",
    "MismatchError",
    "MpiError",
    "NonFiniteGradientError",
    "NonFiniteGradientWarning",
    "NotInitializedError",
    "OptionTypeError",
    "OuterSync",
    "PeerExchange",
    "PeerTimeoutError",
    "PerLinkExchange",
    "Product",
    "ProtocolError",
    "RankLostError",
    "Sum",
    "TransferReport",
    "allgather",
    "allgather_object",
    "allreduce",
    "allreduce_async",
    "alltoall",
    "average_replicas",
    "barrier",
    "broadcast",
    "broadcast_global_variables",
    "broadcast_object",
    "broadcast_variables",
    "ccl_built",
    "checkpoint",
    "config",
    "cross_rank",
    "cross_size",
    "cuda_built",
    "ddl_built",
    "emulate",
    "errors",
    "gloo_built",
    "gloo_enabled",
    "grouped_allreduce",
    "init",
    "is_initialized",
    "join",
    "link_stats",
    "local_rank",
    "local_size",
    "mpi_built",
    "mpi_enabled",
    "mpi_threads_supported",
    "nccl_built",
    "rank",
    "reducescatter",
    "rocm_built",
    "shutdown",
    "site",
    "sites",
    "size",
    "start_timeline",
    "stop_timeline",
    "sycl_built",
]
