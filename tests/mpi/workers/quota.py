"""DynamicBatcher under a CPU quota (run on the real-network testbed, one rank per site).
The batcher (default clock) sizes each rank's batch of a CPU-bound workload; the worker also
times every block itself with wall time, and reports each rank's throughput over the last
steps (what the rank really achieves, quota included) beside the batcher's split."""

import time

from _report import report

import dlion
from dlion import clocks


def work(samples: int) -> None:
    for _ in range(samples):  # about 2.5 ms of pure CPU per sample at full speed
        sum(i * i for i in range(30000))


dlion.init()
rank = dlion.rank()
# Blocks of about 0.5 s: several periods (100 ms) of the quota each, so that where a block
# falls in the quota's period hardly changes what it measures.
batcher = dlion.DynamicBatcher(256, rebalance_every=10, check_every=5)
timed: list[tuple[int, float]] = []
for _ in range(30):
    with batcher.compute():
        start = time.perf_counter()
        work(batcher.local_batch)
        timed.append((batcher.local_batch, time.perf_counter() - start))
    batcher.step_done(batcher.local_batch)
last = timed[-10:]
speed = sum(b for b, _ in last) / sum(t for _, t in last)
report(
    rank,
    {
        "speeds": dlion.allgather_object(speed),
        "batches": batcher.batches,
        "rates": batcher.rates,
        "rebalances": batcher.rebalances,
        "clock": batcher.clock,
        "quota": clocks.cpu_quota(),
    },
)
dlion.shutdown()
