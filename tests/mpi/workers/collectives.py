"""Collectives through the engine against numpy references, on any number of ranks.

Every rank regenerates every other rank's input from (seed, rank), so each can compute the
exact reference locally. Hypothesis runs derandomized: all ranks draw the same examples.
"""

import os

import numpy as np
from _allreduce_check import check_allreduce, data
from _report import report
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpi4py import MPI

import dlion

# DLION_TEST_SITES="A,A,B,B": the site of each rank (site-aware allreduce).
if os.environ.get("DLION_TEST_SITES"):
    os.environ["DLION_SITE"] = os.environ["DLION_TEST_SITES"].split(",")[MPI.COMM_WORLD.rank]
dlion.init()
rank, size = dlion.rank(), dlion.size()
checks = 0


@settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    n=st.one_of(
        st.integers(0, 50), st.integers(51, 5000), st.sampled_from([65536, 65537, 300_001])
    ),
    dtype=st.sampled_from([np.float32, np.float64]),
    op=st.sampled_from(["sum", "average"]),
    seed=st.integers(0, 2**16),
)
def test_allreduce(n, dtype, op, seed):
    global checks
    check_allreduce(n, dtype, op, seed, f"prop-{n}")  # and bit-identical on every rank
    checks += 1


test_allreduce()

# Ring allreduce of a 1e6 buffer: several pipeline segments per chunk.
x = data(7, rank, 1_000_000, np.float32)
h = dlion.allreduce_async(x, "sum", "big")
assert h.wait(60)
ref = sum(data(7, r, 1_000_000, np.float64) for r in range(size))
np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-4)
checks += 1

# Handles dropped while in flight: the binding waits for the operation (it owns the buffer),
# so the temporary array is never freed under the engine and later operations stay in order.
for _ in range(3):
    dlion.allreduce_async(np.ones(200_000, np.float32), "sum", "dropped")
y = np.ones(10)
dlion.allreduce(y, op="sum", name="after-dropped")
assert np.all(y == size)
checks += 1

# Broadcast from every root, float and non-float dtypes.
for root in range(size):
    for dtype in (np.float32, np.float64, np.int32, np.uint8):
        x = (np.arange(1000) * (rank + 1)).astype(dtype)
        dlion.broadcast(x, root_rank=root, name=f"bcast-{root}")
        np.testing.assert_array_equal(x, (np.arange(1000) * (root + 1)).astype(dtype))
        checks += 1

# Allgather of objects of different sizes.
got = dlion.allgather_object(list(range(rank * 100)), name="objs")
assert got == [list(range(r * 100)) for r in range(size)]
assert dlion.broadcast_object({"from": rank}, root_rank=size - 1) == {"from": size - 1}
dlion.barrier()
checks += 2

# mpi4py and the engine in one program: what mpi4py moves, the engine reduces, and back.
comm = MPI.COMM_WORLD
mine = data(99, rank, 1000, np.float64)
received = comm.sendrecv(mine, dest=(rank + 1) % size, source=(rank - 1) % size)
np.testing.assert_array_equal(received, data(99, (rank - 1) % size, 1000, np.float64))
dlion.allreduce(received, op="sum", name="from-mpi4py")
ref = sum(data(99, r, 1000, np.float64) for r in range(size))
np.testing.assert_allclose(received, ref, rtol=1e-12)
back = comm.allgather(float(received[0]))
assert all(v == back[0] for v in back)
checks += 1

# An engine of its own on an mpi4py sub-communicator (even and odd ranks), next to the global one.
import dlion_core  # noqa: E402

sub = comm.Split(rank % 2, rank)
eng = dlion_core.Engine(sub)
assert eng.size == sub.Get_size() and eng.rank == sub.Get_rank()
y = np.full(10, float(rank))
eng.allreduce(y, "sum", "sub").wait(60)
assert np.all(y == sum(r for r in range(size) if r % 2 == rank % 2))
eng.shutdown()
sub.Free()
checks += 1

stats = dlion.runtime.engine().stats()
assert stats["ops_failed"] == 0 and stats["ops_completed"] > 0
report(rank, {"size": size, "checks": checks, "stats": stats})
dlion.shutdown()
