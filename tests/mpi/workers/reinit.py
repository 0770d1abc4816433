"""init / exchange / shutdown three times in one process: nothing from an earlier engine's
communicator may reach a later one (MPI reuses context ids of freed communicators)."""

import numpy as np
from _report import report

import dlion

sums = []
for _ in range(3):
    dlion.init()
    rank, size = dlion.rank(), dlion.size()
    policy = dlion.PeerExchange("topk", k_ratio=0.1)
    for step in range(5):
        g = np.random.default_rng([rank, step]).standard_normal(10000).astype(np.float32)
        policy.start(g, name="g").wait(30)
    sums.append(float(g.sum()))
    dlion.shutdown()
report(rank, {"sums": sums})
