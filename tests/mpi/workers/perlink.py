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

if sys.argv[1] == "timeline":
    # DistributedOptimizer with the per-link exchange: the trace names what each link carried.
    import json
    import os

    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(50), keras.layers.Dense(3)])
    exchange = dlion.PerLinkExchange(budget_s=0.01)
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), exchange=exchange, name="tl")
    path = dlion.start_timeline(os.path.join(os.environ["DLION_TEST_OUT"], "trace.json"))
    x = np.random.default_rng(rank).standard_normal((8, 20)).astype(np.float32)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x)))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.variables))
    written = dlion.stop_timeline()
    events = json.loads(open(written).read())["traceEvents"]
    ex = [e for e in events if e.get("name") == "exchange"]
    report(
        rank,
        {
            "collective": exchange.collective,
            "exchanges": len(ex),
            "links": [e["args"].get("links") for e in ex],
        },
    )
    dlion.shutdown()
    sys.exit(0)

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
