"""Error paths with real ranks; the scenario is argv[1]. Each rank reports what it saw."""

import sys
import time

import numpy as np
from _report import report

import dlion

scenario = sys.argv[1]


def outcome(fn) -> dict:
    try:
        fn()
        return {"error": None}
    except Exception as e:  # noqa: BLE001 - the test inspects type and text
        return {
            "error": type(e).__name__,
            "message": str(e),
            "is_dlion": isinstance(e, dlion.DlionError),
        }


if scenario == "before_init":
    from mpi4py import MPI

    r = MPI.COMM_WORLD.Get_rank()
    seen = {name: outcome(getattr(dlion, name)) for name in ("rank", "size", "site", "barrier")}
    seen["allreduce"] = outcome(lambda: dlion.allreduce(np.zeros(3)))
    dlion.init()
    dlion.init()  # idempotent
    rank_ok = dlion.rank() == r and dlion.is_initialized()
    dlion.shutdown()
    dlion.shutdown()  # idempotent
    after = outcome(dlion.size)
    report(
        r,
        {
            "seen": seen,
            "rank_ok": rank_ok,
            "after_shutdown": after,
            "initialized_after": dlion.is_initialized(),
        },
    )

elif scenario == "mismatch":
    dlion.init()
    rank = dlion.rank()
    # 1. a different element count on the last rank
    n = 1000 if rank != dlion.size() - 1 else 999
    count = outcome(lambda: dlion.allreduce(np.ones(n, np.float32), name="grads"))
    # 2. a different name on rank 0
    name = outcome(lambda: dlion.allreduce(np.ones(10), name="a" if rank == 0 else "b"))
    # 3. a different operation on rank 1
    kind = outcome(dlion.barrier if rank == 1 else lambda: dlion.allreduce(np.ones(4)))
    # 4. the engine is still usable after mismatches, with the right result
    x = np.full(300_000, rank, np.float32)
    dlion.allreduce(x, op="sum", name="after")
    usable = bool(np.all(x == sum(range(dlion.size()))))
    report(rank, {"count": count, "name": name, "kind": kind, "usable": usable})
    dlion.shutdown()

elif scenario == "bad_input":
    dlion.init()
    rank = dlion.rank()
    ro = np.ones(8)
    ro.flags.writeable = False
    seen = {
        "int_dtype": outcome(lambda: dlion.allreduce(np.ones(8, np.int64))),
        "non_contiguous": outcome(lambda: dlion.allreduce(np.ones((8, 8))[:, 0])),
        "read_only": outcome(lambda: dlion.allreduce(ro)),
        "bad_op": outcome(lambda: dlion.allreduce(np.ones(8), op="median")),
        "bad_root": outcome(lambda: dlion.broadcast(np.ones(8), root_rank=dlion.size())),
        "bad_object_root": outcome(lambda: dlion.broadcast_object(1, root_rank=-1)),
        "unknown_option": outcome(lambda: dlion.Config.from_env({"stall_timeoutt": 1})),
    }
    # none of the rejected calls reached the engine: the next collective pairs up fine
    x = np.ones(5)
    dlion.allreduce(x, op="sum", name="after")
    report(rank, {"seen": seen, "usable": bool(np.all(x == dlion.size()))})
    dlion.shutdown()

elif scenario == "missing_rank":
    # The last rank never joins the allreduce: the others must fail within the stall timeout,
    # naming it, and the job must end (non-zero) instead of hanging.
    from mpi4py import MPI

    dlion.init()
    rank, last = dlion.rank(), dlion.size() - 1
    # The survivors' own communicator, made while everyone is still there: they all report
    # before any of them exits (and aborts the job).
    survivors = MPI.COMM_WORLD.Split(MPI.UNDEFINED if rank == last else 0, rank)
    if rank == last:
        time.sleep(120)
    else:
        start = time.monotonic()
        seen = outcome(lambda: dlion.allreduce(np.ones(10), name="grads"))
        report(
            rank,
            {
                **seen,
                "seconds": time.monotonic() - start,
                "later": outcome(lambda: dlion.allreduce(np.ones(10), name="later")),
            },
        )
        survivors.Barrier()
        if seen["error"]:
            raise SystemExit(1)

elif scenario == "late":
    # Rank 1 joins an allreduce 1.5 s late: a short wait() on rank 0 times out (False) without
    # harm, a longer one completes. Meanwhile an idle engine must not burn CPU.
    import time as _t

    dlion.init()
    rank = dlion.rank()
    cpu0, wall0 = _t.process_time(), _t.perf_counter()
    _t.sleep(1.0)
    idle_cpu = (_t.process_time() - cpu0) / (_t.perf_counter() - wall0)
    x = np.full(100, float(rank))
    if rank == 1:
        _t.sleep(1.5)
    h = dlion.allreduce_async(x, op="sum", name="late")
    short = h.wait(0.05) if rank == 0 else None
    done_long = h.wait(30)
    report(
        rank,
        {"short": short, "long": done_long, "sum_ok": bool(np.all(x == 1.0)), "idle_cpu": idle_cpu},
    )
    dlion.shutdown()

elif scenario == "config_differs":
    # Rank 1 chooses another ring segment size: init must refuse on every rank.
    import os

    from mpi4py import MPI

    r = MPI.COMM_WORLD.Get_rank()
    if r == 1:
        os.environ["DLION_RING_SEGMENT_BYTES"] = "4096"
    seen = outcome(dlion.init)
    report(r, {**seen, "initialized": dlion.is_initialized()})

elif scenario == "killed":
    # Rank 1 is killed (SIGKILL) while the others wait for it in an allreduce.
    import os
    import signal

    dlion.init()
    if dlion.rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dlion.allreduce(np.ones(10), name="grads")
    report(dlion.rank(), {"error": None})  # never reached: the launcher ends the job

elif scenario == "raise":
    # Rank 1 raises in user code while the others wait for it in an allreduce.
    dlion.init()
    if dlion.rank() == 1:
        raise RuntimeError("user code failed on purpose")
    dlion.allreduce(np.ones(10), name="grads")
    report(dlion.rank(), {"error": None})  # never reached: the job is aborted first

else:
    raise SystemExit(f"unknown scenario {scenario}")
