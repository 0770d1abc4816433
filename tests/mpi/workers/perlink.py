"""PerLinkExchange on emulated links of different speeds (DLION_EMULATE set by the test).

Rank 0 has a fast link to rank 1 and a slow one to rank 2. With a fixed time budget, each link
carries about bandwidth x budget bytes per step; what it does not carry stays in its residual.
Every rank's gradient is regenerated from (rank, step), so receivers can check the books.
"""

import sys

import numpy as np
from _report import report

import dlion

dlion.init()
rank, size = dlion.rank(), dlion.size()
n, steps = 1_000_000, int(sys.argv[1]) if len(sys.argv) > 1 else 8


def grad(r: int, step: int) -> np.ndarray:
    return np.random.default_rng([5, r, step]).standard_normal(n).astype(np.float32)


policy = dlion.PerLinkExchange(budget_s=0.02, weight=1.0)
received = np.zeros(n, np.float64)
before = dlion.link_stats()
for step in range(steps):
    g = grad(rank, step)
    buf = g.copy()
    policy.start(buf, name="grads").wait(60)
    received += buf.astype(np.float64) - g.astype(np.float64)  # weight 1: what peers sent
after = dlion.link_stats()
residuals = {p: dlion.runtime.peer_engine().residual(0, p) for p in range(size) if p != rank}
gathered = dlion.allgather_object(residuals)
owed = sum(gathered[p][rank].astype(np.float64) for p in range(size) if p != rank)
sent = sum(grad(p, s).astype(np.float64) for p in range(size) if p != rank for s in range(steps))
report(
    rank,
    {
        "bytes_per_step": {p: (after[p].bytes_sent - before[p].bytes_sent) / steps for p in after},
        "plan": {p: list(v) for p, v in policy.last_plan[0].items()},
        "bandwidth": {p: s.bandwidth_Bps for p, s in after.items()},
        "max_error": float(np.abs(received + owed - sent).max()),
        "scale": float(np.abs(sent).max()),
    },
)
dlion.shutdown()
