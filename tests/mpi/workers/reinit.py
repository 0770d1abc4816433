"""init / exchange / train / shutdown three times in one process.

Nothing from an earlier engine's communicator may reach a later one (MPI reuses context ids of
freed communicators), and nothing of an earlier run's state is left: each run starts from group
0 and step 0 (a policy object reused across runs forgets the earlier run), dlion.join's control
rounds from 0, the first run's SIMD choice and timeline are gone, and once the user drops the
optimizer and the tape, their fused buffers are garbage (no registry keeps them alive, during a
run or after it).
"""

import gc
import os
import weakref

import keras
import numpy as np
import tensorflow as tf
from _report import report

import dlion
import dlion_core
from dlion import joining, runtime, timeline
from dlion.exchange import peer

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
SIMD_BEFORE = dlion_core.simd()
policy = dlion.PeerExchange("topk", k_ratio=0.1)  # made before the first init, used in every run
other = dlion.PeerExchange("dense")  # used in every run, under another name in each


def train_a_little(rank: int, tag: str) -> tuple[list, list]:
    """Three DistributedOptimizer steps and two tape steps (two tapes of one name); weak
    references to what they allocated: exchangers and fused buffers."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    x = np.random.default_rng(rank).standard_normal((8, 6)).astype(np.float32)
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), exchange=dlion.Allreduce())
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x)))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.variables))
    exchangers = [weakref.ref(opt._exchanger)]
    buffers = [weakref.ref(g.buffer) for p in opt._exchanger.plans.values() for g in p.groups]
    tape_exchange = dlion.Allreduce()
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x)))
        dtape = dlion.DistributedGradientTape(tape, exchange=tape_exchange, name=f"tape{tag}")
        dtape.gradient(loss, model.trainable_variables)
        exchangers.append(weakref.ref(dtape._exchanger))
    buffers += [weakref.ref(g.buffer) for p in dtape._exchanger.plans.values() for g in p.groups]
    return exchangers, buffers


runs = []
for run in range(3):
    dlion.init(**({"simd": "baseline"} if run == 0 else {}))
    rank, size = dlion.rank(), dlion.size()
    record: dict = {
        "simd": dlion_core.simd(),
        "timeline_left": timeline.active() is not None,
        "groups_at_start": peer.group_id("h"),  # the first name of this run gets group 0
    }
    for step in range(5):
        g = np.random.default_rng([rank, step]).standard_normal(10000).astype(np.float32)
        policy.start(g, name="g").wait(30)
    record["sum"] = float(g.sum())
    record["policy_step"] = int(policy.state()["step:g"])
    other.start(np.ones(100, np.float32), name=f"x{run}").wait(30)
    record["other_names"] = sorted(k for k in other.state() if k.startswith("step:"))
    groups = runtime.run_state(peer.Groups)
    record["group_ids"], record["steps"] = dict(groups.ids), dict(groups.steps)

    # While running: a dropped optimizer is not kept alive by dlion.join's registry.
    exchangers, buffers = train_a_little(rank, str(run))
    gc.collect()
    join_state = runtime.run_state(joining.JoinState)
    record["join_rounds"] = join_state.rounds
    record["responders_after_drop"] = sorted(join_state.responders)
    record["opt_alive_while_running"] = exchangers[0]() is not None
    record["tapes_share_an_exchanger"] = exchangers[1]() is exchangers[2]() is not None
    if run == 0:  # left running: shutdown must write and drop it
        dlion.start_timeline(os.path.join(os.environ["DLION_TEST_OUT"], "trace.json"))
    dlion.shutdown()
    gc.collect()
    record["alive_after_shutdown"] = [r() is not None for r in exchangers + buffers]
    record["state_left"] = runtime._state is not None
    runs.append(record)
report(rank, {"runs": runs, "simd_before": SIMD_BEFORE, "simd_after": dlion_core.simd()})
