"""DistributedOptimizer on real ranks and real data (Fashion-MNIST), scenario in argv[1].

equivalence: N ranks, each with its own batches, dense allreduce; afterwards every rank holds
  bit-identical weights, and they equal (within float tolerance) one process that trained on
  the union of the ranks' batches from the same initial weights.
layout_mismatch: the last rank builds a wider layer; every rank gets a MismatchError naming it.
"""

import hashlib
import sys

import keras
import numpy as np
import tensorflow as tf
from _report import report

import dlion
from dlion import data

# One TF thread of each kind per rank: up to 4 ranks share 2 cores.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
scenario = sys.argv[1]
dlion.init()
rank, size = dlion.rank(), dlion.size()
ds = data.load_fashion_mnist()
x_all = ds.x_train[:4096].reshape(4096, -1)
y_all = ds.y_train[:4096]


def make_model(width: int = 32) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((x_all.shape[1],)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def batch(step: int, r: int, b: int = 16):
    start = (step * size + r) * b % (len(x_all) - b)
    return x_all[start : start + b], y_all[start : start + b]


@tf.function
def grads_of(model, x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return tape.gradient(loss, model.trainable_variables)


if scenario == "equivalence":
    steps = 8
    keras.utils.set_random_seed(1000 + rank)  # different init per rank...
    model = make_model()
    dlion.broadcast_variables(model.variables, root_rank=0)  # ...made equal here
    init = [v.numpy().copy() for v in model.trainable_variables]
    opt = dlion.DistributedOptimizer(
        keras.optimizers.SGD(0.1, momentum=0.9), exchange=dlion.Allreduce()
    )
    for step in range(steps):
        x, y = batch(step, rank)
        opt.apply_gradients(zip(grads_of(model, x, y), model.trainable_variables))
    weights = [v.numpy() for v in model.trainable_variables]
    digest = hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest()

    # Reference: one process, the union of every rank's batch at each step, same start.
    ref = make_model()
    for v, w in zip(ref.trainable_variables, init):
        v.assign(w)
    ref_opt = keras.optimizers.SGD(0.1, momentum=0.9)
    for step in range(steps):
        xs, ys = zip(*(batch(step, r) for r in range(size)))
        g = grads_of(ref, np.concatenate(xs), np.concatenate(ys))
        ref_opt.apply_gradients(zip(g, ref.trainable_variables))
    err = max(
        float(np.max(np.abs(a - b.numpy()))) for a, b in zip(weights, ref.trainable_variables)
    )
    scale = max(float(np.max(np.abs(b.numpy()))) for b in ref.trainable_variables)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, init))
    # Alternating variable sets (a GAN's two halves): one plan and one compiled apply each.
    first, second = model.trainable_variables[:2], model.trainable_variables[2:]
    for step in range(6):
        part = first if step % 2 == 0 else second
        x, y = batch(step, rank)
        g = grads_of(model, x, y)
        g = g[:2] if step % 2 == 0 else g[2:]
        opt.apply_gradients(zip(g, part))
    after = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.variables)).hexdigest()
    report(
        rank,
        {
            "digest": digest,
            "max_abs_err": err,
            "scale": scale,
            "moved": moved,
            "steps": opt.steps,
            "iterations": int(opt.iterations.numpy()),
            "plans": len(opt._exchanger.plans),
            "compiled": len(opt._apply_fns),
            "after_alternating": after,
        },
    )

elif scenario == "tape":
    # DistributedGradientTape and DistributedOptimizer give the same training, same start.
    keras.utils.set_random_seed(7)
    a = make_model()
    dlion.broadcast_variables(a.variables)
    b = make_model()
    for vb, va in zip(b.variables, a.variables):
        vb.assign(va)
    opt_a = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1, momentum=0.9), name="opt")
    opt_b = keras.optimizers.SGD(0.1, momentum=0.9)
    for step in range(6):
        x, y = batch(step, rank)
        opt_a.apply_gradients(zip(grads_of(a, x, y), a.trainable_variables))
        with tf.GradientTape() as tape:
            loss = loss_fn(y, b(x, training=True))
        tape = dlion.DistributedGradientTape(tape, name="tape")
        grads = tape.gradient(loss, {"vars": b.trainable_variables})["vars"]
        opt_b.apply_gradients(zip(grads, b.trainable_variables))
    diff = max(
        float(np.max(np.abs(va.numpy() - vb.numpy())))
        for va, vb in zip(a.trainable_variables, b.trainable_variables)
    )
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in b.variables)).hexdigest()
    report(rank, {"max_abs_diff": diff, "digest": digest})

elif scenario == "layout_mismatch":
    model = make_model(32 if rank != size - 1 else 33)
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1))
    x, y = batch(0, rank)
    try:
        opt.apply_gradients(zip(grads_of(model, x, y), model.trainable_variables))
        report(rank, {"error": None})
    except dlion.MismatchError as e:
        report(rank, {"error": type(e).__name__, "message": str(e)})

dlion.shutdown()
