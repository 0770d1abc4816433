"""Weighted dynamic batching (dlion.DynamicBatcher) on real ranks.

Scenarios (argv[1]):
  emulated S   DLION_EMULATE slows some ranks; a matmul workload proportional to the batch runs
               S steps; records every step's batch split and the final one
  weighted     uneven batches: the weighted aggregate through dlion.PeerExchange and through
               dlion.Allreduce(weight=...) is the mean gradient over the global batch (numpy)
  api          option errors, step mismatch, checkpoint round trip
"""

import os
import sys

import numpy as np
from _report import report

import dlion
from dlion.batching import split

dlion.init()
rank, size = dlion.rank(), dlion.size()
D = 64


def emulated(steps: int) -> dict:
    """Each sample is a 64x64 matrix multiplied by a fixed one a few times, sample by sample:
    the work is proportional to the batch (no per-call cost that a big shared operand's packing
    or a batched kernel's efficiency would add, which makes small batches dearer per sample)."""
    batcher = dlion.DynamicBatcher(
        64 * size,
        check_every=5,
        rebalance_every=int(os.environ.get("REBALANCE_EVERY", "20")),
        ewma=float(os.environ.get("EWMA", "0.3")),
        clock=os.environ.get("CLOCK", "wall"),
    )
    rng = np.random.default_rng(rank)
    w = (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)
    pool = rng.standard_normal((64 * size, D, D)).astype(np.float32)
    history, splits, compute = [], [], []
    for _ in range(steps):
        x = pool[: batcher.local_batch]
        with batcher.compute() as t:
            # One sample at a time: a batched matmul is cheaper per sample for larger batches,
            # which would bias the measured speed against the rank with the smaller batch.
            x = np.stack([np.tanh(np.tanh(np.tanh(np.tanh(s @ w) @ w) @ w) @ w) for s in x])
        history.append(batcher.local_batch)
        splits.append(list(batcher.batches))
        compute.append(t.total_s)
        batcher.step_done(len(x))
    return {
        "history": history,
        "splits": splits,
        "final": batcher.batches,
        "rates": batcher.rates,
        "rebalances": batcher.rebalances,
        "samples_seen": batcher.samples_seen,
        "compute_tail": compute[-10:],
    }


def linear_data(step: int, total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The global batch of a step and the model (same on every rank)."""
    rng = np.random.default_rng([11, step])
    return (
        rng.standard_normal((total, 50)),
        rng.standard_normal(total),
        rng.standard_normal(50),
    )


def mean_gradient(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mean over samples of the gradient of 0.5 * (x.w - y)^2: mean((x.w - y) x)."""
    return ((x @ w - y)[:, None] * x).mean(axis=0)


def weighted() -> dict:
    total = 37 * size + 5
    rates = [1.0 + 0.6 * r for r in range(size)]  # uneven speeds -> uneven batches
    out = {}
    for label, exchange in (
        ("peer", dlion.PeerExchange()),
        ("allreduce", dlion.Allreduce(weight=0.5)),
    ):
        batcher = dlion.DynamicBatcher(total, exchange=exchange, name=f"b.{label}")
        assert exchange.weight == batcher.weight == batcher.batches[rank] / total
        state = batcher.state()
        state["batches"] = np.array(split(rates, total), np.int64)
        batcher.set_state(state)  # as after a rebalance: uneven split, weights follow
        assert exchange.weight == batcher.local_batch / total
        errors = []
        for step in range(3):
            x, y, w = linear_data(step, total)
            lo = sum(batcher.batches[:rank])
            mine = slice(lo, lo + batcher.local_batch)
            buf = mean_gradient(x[mine], y[mine], w).astype(np.float32)
            exchange.start(buf, name=f"{label}.g", signature=0).wait(30)
            ref = mean_gradient(x, y, w)
            errors.append(float(np.abs(buf - ref).max() / np.abs(ref).max()))
        weights = dlion.allgather_object(exchange.weight)
        out[label] = {"errors": errors, "weight_sum": sum(weights), "batches": batcher.batches}
    # Without a weight, Allreduce is unchanged: bit-identical to the plain average.
    g = np.random.default_rng([5, rank]).standard_normal(1000).astype(np.float32)
    a, b = g.copy(), g.copy()
    dlion.Allreduce().start(a, name="plain.a").wait(30)
    dlion.allreduce(b, "average", name="plain.b")
    out["plain_identical"] = bool(np.array_equal(a, b))
    return out


def expect_error(fn, *words: str) -> str:
    try:
        fn()
    except (ValueError, dlion.DlionError) as e:
        msg = str(e)
        missing = [w for w in words if w not in msg]
        assert not missing, (missing, msg)
        return msg
    raise AssertionError(f"no error from {fn}")


def api() -> dict:
    b = dlion.DynamicBatcher
    msgs = [
        expect_error(lambda: b(size - 1 if size > 1 else 0), f"rank {rank}", "global_batch"),
        expect_error(lambda: b(2 * size, min_batch=3), f"rank {rank}", f"[{3 * size}, "),
        expect_error(lambda: b(100 * size, max_batch=10), "must lie in"),
        expect_error(lambda: b(8 * size, ewma=0), "ewma"),
        expect_error(lambda: b(8 * size, check_every=0), "check_every"),
        expect_error(lambda: b(8 * size, exchange=object()), "no 'weight' attribute"),
        expect_error(lambda: dlion.Allreduce(weight=-1.0), "must be finite and >= 0"),
        expect_error(lambda: b(8 * size).step_done(4), "no `with batcher.compute():`"),
    ]
    # Every rank sees the same even first split.
    batcher = b(10 * size + 1, check_every=2)
    splits = dlion.allgather_object(batcher.batches)
    assert all(s == splits[0] for s in splits) and sum(splits[0]) == 10 * size + 1
    # Checkpoint round trip through dlion.checkpoint.
    for _ in range(4):
        with batcher.compute():
            np.ones((1000,)).sum()
        batcher.step_done(batcher.local_batch)
    folder = os.path.join(os.environ["DLION_TEST_OUT"], "ckpt")
    dlion.checkpoint.save(folder, batcher.step, batcher=batcher)
    fresh = b(10 * size + 1, check_every=2)
    dlion.checkpoint.load(folder, batcher=fresh)
    same = all(
        np.array_equal(np.asarray(fresh.state()[k]), np.asarray(v))
        for k, v in batcher.state().items()
    )
    # The check of step 4 was saved in flight (decided at step 5, check_every=2): the resumed
    # batcher decides it at the same step, on the same gathered rates, as the original.
    in_flight = int(batcher.state()["gather_step"])
    for b_ in (batcher, fresh):
        b_.step_done(b_.local_batch, compute_s=0.01)
    decided = (
        in_flight == 4
        and fresh.rates == batcher.rates
        and fresh.batches == batcher.batches
        and int(fresh.state()["gather_step"]) == int(batcher.state()["gather_step"]) == -1
    )
    # Ranks at different steps: every rank raises MismatchError naming the step.
    lagging = b(2 * size, check_every=1, name="lag")
    if rank == size - 1:
        st = lagging.state()
        st["step"] = 7
        lagging.set_state(st)
    mismatch = expect_error(lambda: lagging.step_done(1, compute_s=0.01), "step_done", "at step")
    return {
        "messages": msgs,
        "checkpoint_same": same,
        "resumed_decision_same": decided,
        "mismatch": mismatch,
    }


scenario = sys.argv[1]
if scenario == "emulated":
    report(rank, emulated(int(sys.argv[2])))
elif scenario == "weighted":
    report(rank, weighted())
elif scenario == "api":
    report(rank, api())
else:
    raise SystemExit(f"unknown scenario {scenario!r}")
dlion.shutdown()
