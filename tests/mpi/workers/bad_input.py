"""Bad input on real ranks (issue 18): never a crash, never a silently wrong result.

The scenario is argv[1]; each rank reports what every case gave it (the value, or the error's
type and message) and whether the engine was still usable afterwards.
"""

import os
import sys

import numpy as np
from _report import report
from mpi4py import MPI

import dlion

scenario = sys.argv[1]
world = MPI.COMM_WORLD.Get_rank()


def outcome(fn) -> dict:
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - the test inspects type and text
        return {
            "error": type(e).__name__,
            "message": str(e),
            "is_dlion": isinstance(e, dlion.DlionError),
        }
    if isinstance(value, np.ndarray):
        return {"error": None, "value": {"array": value.tolist(), "dtype": str(value.dtype)}}
    return {"error": None, "value": repr(value)}


def usable() -> bool:
    x = np.ones(5)
    dlion.allreduce(x, op="sum", name="usable")
    return bool(np.all(x == dlion.size()))


if scenario == "collectives":
    dlion.init()
    rank, size = dlion.rank(), dlion.size()
    last = size - 1
    seen = {
        # used to segfault: an object array's pointers were broadcast as bytes
        "dict_broadcast": outcome(
            lambda: dlion.broadcast({"lr": 0.1} if rank == 0 else None, root_rank=0)
        ),
        "object_array_broadcast": outcome(
            lambda: dlion.broadcast(np.array([{"a": rank}, None], dtype=object), root_rank=0)
        ),
        "object_allreduce": outcome(lambda: dlion.allreduce(np.array([None, 1], dtype=object))),
        "object_allgather": outcome(lambda: dlion.allgather(np.array([{}], dtype=object))),
        # used to give garbage: 16 bytes either way
        "dtype_shape_broadcast": outcome(
            lambda: dlion.broadcast(
                np.arange(4, dtype=np.int32) if rank == 0 else np.zeros(2, np.int64), 0
            )
        ),
        "shape_broadcast": outcome(
            lambda: dlion.broadcast(np.zeros((2, 3)) if rank == 0 else np.zeros((3, 2)), 0)
        ),
        # used to keep each rank's own op's result
        "op_min_max": outcome(
            lambda: dlion.allreduce(np.array([rank + 1.0]), op="min" if rank == 0 else "max")
        ),
        "op_sum_max": outcome(
            lambda: dlion.allreduce(np.array([rank + 1.0]), op="sum" if rank == 0 else "max")
        ),
        "op_sum_average": outcome(
            lambda: dlion.allreduce(np.array([rank + 1.0]), op="sum" if rank == 0 else "average")
        ),
        "int_op_min_product": outcome(
            lambda: dlion.allreduce(np.array([rank + 1]), op="min" if rank == 0 else "product")
        ),
        # one rank's bad argument: the others fail at once instead of waiting for it
        "one_rank_bad_op": outcome(
            lambda: dlion.allreduce(np.ones(3), op="median" if rank == last else "sum")
        ),
        "one_rank_non_contiguous": outcome(
            lambda: dlion.allreduce(np.ones((3, 3))[:, 0] if rank == last else np.ones(3))
        ),
        "one_rank_bad_root": outcome(
            lambda: dlion.broadcast(np.ones(3), root_rank=size if rank == last else 0)
        ),
        "one_rank_bad_name": outcome(
            lambda: dlion.allgather_object(1, name=7 if rank == last else "allgather_object")
        ),
        "one_rank_unpicklable": outcome(
            lambda: dlion.allgather_object((lambda: 1) if rank == last else 1)
        ),
        "one_rank_ragged_min": outcome(
            lambda: dlion.allreduce([[1], [1, 2]] if rank == last else [1.0, 2.0], op="min")
        ),
        "roots_differ_object": outcome(lambda: dlion.broadcast_object(rank, root_rank=rank)),
        "calls_differ": outcome(
            lambda: dlion.allgather_object(1) if rank == last else dlion.broadcast_object(1)
        ),
        "root_not_int": outcome(lambda: dlion.broadcast(np.ones(2), root_rank=0.0)),
        # still correct
        "list_broadcast": outcome(lambda: dlion.broadcast([1.5 * (rank + 1), 2.0], root_rank=0)),
        "int_min": outcome(lambda: dlion.allreduce(np.array([rank + 1, -rank]), op="min")),
    }
    report(rank, {"seen": seen, "usable": usable()})
    dlion.shutdown()

elif scenario == "init_settings":
    # Rank 1 measures the LAN differently: init must refuse on every rank, naming it.
    if world == 1:
        os.environ["DLION_LAN_BANDWIDTH_BPS"] = "1e9"
    report(world, {**outcome(dlion.init), "initialized": dlion.is_initialized()})

elif scenario == "init_bad_option":
    # Only the last rank passes a bad option: every rank fails at once, naming it.
    last = MPI.COMM_WORLD.Get_size() - 1
    opts = {"abort_on_exception": "no"} if world == last else {}
    report(world, {**outcome(lambda: dlion.init(**opts)), "initialized": dlion.is_initialized()})

elif scenario == "init_bad_timeline":
    # An unwritable timeline path fails at init (on every rank), not at shutdown.
    path = "/nonexistent-dlion-dir/trace.json" if world == 0 else ""
    report(world, {**outcome(lambda: dlion.init(timeline=path)), "ok": not dlion.is_initialized()})

elif scenario == "never_time_out":
    # stall_timeout_s=inf means never: init and collectives work, and a late rank is waited for.
    import time

    seen = outcome(lambda: dlion.init(stall_timeout_s=float("inf"), stall_warning_s=float("inf")))
    if world == 1:
        time.sleep(1.0)
    later = outcome(lambda: dlion.allreduce(np.ones(4), op="sum", name="late"))
    report(
        world,
        {
            "init": seen,
            "later": later,
            "timeout": dlion.config().stall_timeout_s,
            "engine_timeout": dlion.runtime.engine().config.stall_timeout_s,
        },
    )
    dlion.shutdown()

else:
    raise SystemExit(f"unknown scenario {scenario}")
