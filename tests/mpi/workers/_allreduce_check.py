"""The numpy reference of an allreduce, shared by the collective workers: every rank
regenerates every rank's input from (seed, rank) and checks its result and that all ranks hold
the same bits."""

import numpy as np

import dlion


def data(seed: int, r: int, n: int, dtype) -> np.ndarray:
    """Rank ``r``'s input of example ``seed``."""
    return np.random.default_rng([seed, r]).standard_normal(n).astype(dtype)


def check_allreduce(n: int, dtype, op: str, seed: int, name: str) -> None:
    """Allreduce rank's input in place and compare it with the float64 numpy reduction."""
    rank, size = dlion.rank(), dlion.size()
    x = data(seed, rank, n, dtype)
    dlion.allreduce(x, op=op, name=name)
    ref = sum(data(seed, r, n, np.float64) for r in range(size)) if n else np.zeros(0)
    if op == "average":
        ref = ref / size
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(x, ref, rtol=tol, atol=tol * size)
    same = dlion.allgather_object(x.tobytes(), name="identical")
    assert all(s == same[0] for s in same), "ranks hold different allreduce results"
