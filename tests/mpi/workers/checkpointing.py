"""Checkpoint and resume on real ranks (dlion.checkpoint); the scenario is argv[1].

train DIR TOTAL EVERY KILL_AT RESUME: trains a small model (SGD with momentum, so there are
  optimizer slots) on this rank's shard for TOTAL steps, saving a checkpoint every EVERY steps
  (model, optimizer, data position, and an extra dict of arrays). With KILL_AT > 0, rank 0
  SIGKILLs itself after step KILL_AT (the launcher then ends the job). With RESUME = 1 it first
  loads the newest checkpoint and reports the digests of what it restored. It reports the
  digests of everything it saved, per step, and at the end the final digests.
save_then_load DIR: saves at step 1 (world_size_save) or loads (world_size_load).
"""

import hashlib
import os
import signal
import sys

import keras
import numpy as np
import tensorflow as tf
from _report import report

import dlion
from dlion import checkpoint
from dlion.data import ShardIterator

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
scenario, folder = sys.argv[1], sys.argv[2]
dlion.init()
rank, size = dlion.rank(), dlion.size()


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


if scenario == "train":
    total, every, kill_at, resume = (int(a) for a in sys.argv[3:7])
    # allreduce: Horovod's dense average; peer: top-5% per link with error feedback, so the
    # checkpoint must also carry every link's residual and the exchange's step count.
    kind = sys.argv[7] if len(sys.argv) > 7 else "allreduce"
    rng = np.random.default_rng(0)
    x_all = rng.standard_normal((600, 10)).astype(np.float32)
    y_all = (x_all[:, 0] > 0).astype(np.int64)
    shard = ShardIterator(x_all, y_all, np.arange(rank, 600, size), seed=rank)
    keras.utils.set_random_seed(11 + rank)
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
    )
    exchange = (
        dlion.Allreduce() if kind == "allreduce" else dlion.PeerExchange("topk", k_ratio=0.05)
    )
    opt = dlion.DistributedOptimizer(
        keras.optimizers.SGD(0.05, momentum=0.9), name="opt", exchange=exchange
    )
    stateful = {"exchange": exchange} if kind == "peer" else {}
    dlion.broadcast_variables(model.variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    extra = {"residual": np.zeros(7, np.float32), "count": 0}

    def state_digests() -> dict:
        return {
            "weights": digest(v.numpy() for v in model.variables),
            "slots": digest(v.numpy() for v in opt.variables) if opt.built else None,
            "data": shard.state(),
            "extra": digest([extra["residual"], np.int64(extra["count"])]),
            "exchange": (
                # link statistics are a record, re-measured after a restart, not restored
                {k: digest([v]) for k, v in exchange.state().items() if not k.startswith("link:")}
                if stateful
                else None
            ),
        }

    start, restored = 0, None
    if resume:
        ckpt = checkpoint.load(
            folder, model=model, optimizer=opt, data=shard, extra=extra, **stateful
        )
        start = ckpt.step
        restored = {"step": ckpt.step, **state_digests(), "manifest": ckpt.manifest}
    saved = {}
    for step in range(start, total):
        x, y = shard.next(8 + rank)  # ranks draw different batch sizes
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply_gradients(
            zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        )
        extra["residual"] += np.float32(0.5 + rank)
        extra["count"] += 1
        if (step + 1) % every == 0:
            checkpoint.save(
                folder, step + 1, model=model, optimizer=opt, data=shard, extra=extra, **stateful
            )
            saved[step + 1] = state_digests()
            report(rank, {"saved": saved, "restored": restored})
        if kill_at and step + 1 == kill_at and rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)
    report(rank, {"saved": saved, "restored": restored, "final": state_digests()})

elif scenario == "world_size_save":
    checkpoint.save(folder, 1, extra={"a": np.arange(3)})
    report(rank, {"ok": True})

elif scenario == "world_size_load":
    try:
        checkpoint.load(folder)
        report(rank, {"error": None})
    except dlion.CheckpointError as e:
        report(rank, {"error": type(e).__name__, "message": str(e)})

else:
    raise SystemExit(f"unknown scenario {scenario}")

dlion.shutdown()
