"""dlion.join with uneven data (Fashion-MNIST, real ranks), scenario in argv[1].

join: rank 1 has 30% fewer batches (and, on 3 ranks, rank 2 10% fewer), two epochs. Every
  rank trains on its own batches, then calls dlion.join(). Afterwards all ranks hold identical
  weights, equal to one process that applied, at each step, the mean gradient of the ranks
  that still had data. Run with DLION_TIMELINE set, the trace files are checked by the test.
misuse: rank 1 joins, rank 0 runs another collective instead of a gradient exchange: both
  get MismatchError (no hang), and the engine stays usable.
"""

import hashlib
import sys

import keras
import numpy as np
import tensorflow as tf
from _report import report

import dlion
from dlion import data

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
scenario = sys.argv[1]
dlion.init()
rank, size = dlion.rank(), dlion.size()
ds = data.load_fashion_mnist()
x_all = ds.x_train[:2048].reshape(2048, -1)
y_all = ds.y_train[:2048]
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_model() -> keras.Model:
    return keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
    )


def batch(epoch: int, step: int, r: int, b: int = 16):
    start = ((epoch * 10 + step) * size + r) * b % (len(x_all) - b)
    return x_all[start : start + b], y_all[start : start + b]


@tf.function
def grads_of(model, x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return tape.gradient(loss, model.trainable_variables)


if scenario == "join":
    n_batches = [10, 7, 9, 8][:size]  # rank 1: 30% fewer
    epochs = 2
    keras.utils.set_random_seed(100 + rank)
    model = make_model()
    dlion.broadcast_variables(model.variables, root_rank=0)
    init = [v.numpy().copy() for v in model.trainable_variables]
    opt = dlion.DistributedOptimizer(
        keras.optimizers.SGD(0.1, momentum=0.9), exchange=dlion.Allreduce()
    )
    lasts = []
    ops_before = dlion.runtime.engine().stats()["ops_completed"]
    for epoch in range(epochs):
        for step in range(n_batches[rank]):
            x, y = batch(epoch, step, rank)
            opt.apply_gradients(zip(grads_of(model, x, y), model.trainable_variables))
        lasts.append(dlion.join())
    ops = dlion.runtime.engine().stats()["ops_completed"] - ops_before  # engine operations
    weights = [v.numpy() for v in model.trainable_variables]
    digest = hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest()

    ref = make_model()
    for v, w in zip(ref.trainable_variables, init):
        v.assign(w)
    ref_opt = keras.optimizers.SGD(0.1, momentum=0.9)
    for epoch in range(epochs):
        for step in range(max(n_batches)):
            active = [r for r in range(size) if step < n_batches[r]]
            per_rank = [grads_of(ref, *batch(epoch, step, r)) for r in active]
            mean = [tf.add_n(list(gs)) / len(active) for gs in zip(*per_rank)]
            ref_opt.apply_gradients(zip(mean, ref.trainable_variables))
    err = max(
        float(np.max(np.abs(a - b.numpy()))) for a, b in zip(weights, ref.trainable_variables)
    )
    scale = max(float(np.max(np.abs(b.numpy()))) for b in ref.trainable_variables)
    dlion.barrier(name="after-join")  # ordinary collectives work again
    report(
        rank,
        {
            "digest": digest,
            "lasts": lasts,
            "steps": opt.steps,
            "iterations": int(opt.iterations.numpy()),
            "max_abs_err": err,
            "scale": scale,
            "ops": ops,
            "rounds": epochs * max(n_batches),
        },
    )

elif scenario == "misuse":
    model = make_model()
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), exchange=dlion.Allreduce())
    x, y = batch(0, 0, rank)
    opt.apply_gradients(zip(grads_of(model, x, y), model.trainable_variables))
    out = {}
    try:
        if rank == 0:
            dlion.allreduce(np.ones(3), name="loss")  # not a gradient exchange
        else:
            dlion.join()
        out["error"] = None
    except dlion.MismatchError as e:
        out = {"error": type(e).__name__, "message": str(e)}
    dlion.barrier(name="usable")
    # The timeline API: start, a step, stop; the test reads the file.
    path = dlion.start_timeline(sys.argv[2])
    opt.apply_gradients(zip(grads_of(model, x, y), model.trainable_variables))
    opt.apply_gradients(zip(grads_of(model, x, y), model.trainable_variables))
    out["timeline"] = str(dlion.stop_timeline())
    out["timeline_expected"] = str(path)
    report(rank, out)

dlion.shutdown()
