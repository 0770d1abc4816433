"""Small allreduces (the fused path: data in the negotiation's round) against numpy, and
mismatches of small allreduces, which every rank must still detect, leaving buffers alone.

Hypothesis runs derandomized and without shrinking: all ranks draw the same examples.
"""

import numpy as np
from _allreduce_check import check_allreduce
from _report import report
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import dlion

dlion.init()
rank, size = dlion.rank(), dlion.size()
last = size - 1
checks = 0


# Around the block sizes the path grows through (1 KiB, a few KiB) and its 64 KiB limit
# (16384 float32, 8192 float64), where an allreduce leaves the block for MPI's own.
SIZES = st.one_of(
    st.integers(1, 300),
    st.integers(1000, 1100),
    st.integers(8180, 8200),
    st.integers(16370, 16400),
)


@settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@given(
    n=SIZES,
    dtype=st.sampled_from([np.float32, np.float64]),
    op=st.sampled_from(["sum", "average"]),
    seed=st.integers(0, 2**16),
)
def test_small_allreduce(n, dtype, op, seed):
    global checks
    check_allreduce(n, dtype, op, seed, f"small-{n}")
    checks += 1


test_small_allreduce()


def mismatch(case: str, n: int = 100, dtype=np.float32, op="sum", name="odd") -> dict:
    """An allreduce whose arguments differ on the last rank (they are the arguments)."""
    x = np.full(n, rank + 1, dtype)
    before = x.copy()
    try:
        dlion.allreduce(x, op=op, name=name)
        return {"error": None, "case": case}
    except dlion.MismatchError as e:
        return {
            "error": "MismatchError",
            "message": str(e),
            "unchanged": bool(np.array_equal(x, before)),
        }


other = rank == last
seen = {
    "count": mismatch("count", n=101 if other else 100),
    "count_beyond_block": mismatch("count_beyond_block", n=40_000 if other else 100),
    "dtype": mismatch("dtype", dtype=np.float64 if other else np.float32),
    "op": mismatch("op", op="average" if other else "sum"),
    "name": mismatch("name", name="odd2" if other else "odd"),
}
# Another kind of call on the last rank.
try:
    if other:
        dlion.broadcast(np.zeros(100, np.float32), root_rank=0, name="odd")
    else:
        dlion.allreduce(np.ones(100, np.float32), op="sum", name="odd")
    seen["kind"] = {"error": None}
except dlion.MismatchError as e:
    seen["kind"] = {"error": "MismatchError", "message": str(e), "unchanged": True}

# Still usable, and in step.
y = np.full(1000, float(rank), np.float32)
dlion.allreduce(y, op="sum", name="after")
usable = bool(np.all(y == sum(range(size))))
report(rank, {"checks": checks, "seen": seen, "usable": usable})
dlion.shutdown()
