"""Horovod's build and topology queries, answered truthfully for dlion.

dlion is built against MPI only (mpi4py and the MPI of the engine): no Gloo, NCCL, CUDA, ROCm,
DDL, oneCCL or SYCL. The ``*_built`` queries say so; scripts that branch on them (Horovod's
Keras synthetic benchmark asks ``hvd.sycl_built()``) take their CPU path. ``cross_rank`` and
``cross_size`` are Horovod's: the ranks with the same local rank, one per host.
"""

from __future__ import annotations

from mpi4py import MPI

from . import runtime


def mpi_built() -> bool:
    """True: dlion's engines run over MPI."""
    return True


def mpi_enabled() -> bool:
    """True: MPI is the only controller dlion has."""
    return True


def mpi_threads_supported() -> bool:
    """Whether MPI runs at ``MPI_THREAD_MULTIPLE`` (what dlion's progress threads need)."""
    return bool(MPI.Query_thread() == MPI.THREAD_MULTIPLE)


def gloo_built() -> bool:
    """False: dlion has no Gloo controller."""
    return False


def gloo_enabled() -> bool:
    """False: dlion has no Gloo controller."""
    return False


def nccl_built() -> bool:
    """False: dlion moves host memory over MPI; there is no NCCL."""
    return False


def cuda_built() -> bool:
    """False: dlion targets CPU ranks."""
    return False


def rocm_built() -> bool:
    """False: dlion targets CPU ranks."""
    return False


def ddl_built() -> bool:
    """False: no IBM DDL."""
    return False


def ccl_built() -> bool:
    """False: no oneCCL."""
    return False


def sycl_built() -> bool:
    """False: no SYCL."""
    return False


def _cross_group() -> list[int]:
    """The ranks with this rank's local rank, in rank order (one per host)."""
    hosts = runtime.hosts()
    local = [hosts[:r].count(h) for r, h in enumerate(hosts)]
    return [r for r in range(len(hosts)) if local[r] == runtime.local_rank()]


def cross_rank() -> int:
    """This rank's index among the ranks that have its local rank (Horovod's cross rank)."""
    return _cross_group().index(runtime.rank())


def cross_size() -> int:
    """How many ranks have this rank's local rank (the number of hosts, when every host runs
    the same number of ranks)."""
    return len(_cross_group())
