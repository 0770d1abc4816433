"""DynamicBatcher under a CPU quota (run on the real-network testbed, one rank per site):
each rank first measures its own speed on a fixed CPU-bound workload (wall time, untouched
by the batcher), then trains the batcher with its default clock on the same workload."""

import time

from _report import report

import dlion
from dlion import clocks


def work(samples: int) -> None:
    for _ in range(samples):  # about 2.5 ms of pure CPU per sample at full speed
        sum(i * i for i in range(30000))


dlion.init()
rank = dlion.rank()
dlion.barrier()
start = time.perf_counter()
work(300)
speed = 300 / (time.perf_counter() - start)  # samples/s: what this rank really achieves
speeds = dlion.allgather_object(speed)

# Blocks of about 0.5 s: several periods (100 ms) of the quota each, so that where a block
# falls in the quota's period hardly changes what it measures.
batcher = dlion.DynamicBatcher(256, rebalance_every=10, check_every=5)
for _ in range(30):
    with batcher.compute():
        work(batcher.local_batch)
    batcher.step_done(batcher.local_batch)
report(
    rank,
    {
        "speeds": speeds,
        "batches": batcher.batches,
        "rebalances": batcher.rebalances,
        "clock": batcher.clock,
        "quota": clocks.cpu_quota(),
        "rates": batcher.rates,
    },
)
dlion.shutdown()
