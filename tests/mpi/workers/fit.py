"""Keras model.fit with dlion.keras.DistributedOptimizer and the callbacks, on real ranks.

Each rank fits on its own shard of Fashion-MNIST (no shuffling) for two epochs, with a one-epoch
learning-rate warmup. A second model replays the same run as a custom loop with
dlion.DistributedOptimizer (same start, same batches, same learning rate per batch); the final
weights must agree, and be bit-identical across ranks.
"""

import hashlib

import keras
import numpy as np
import tensorflow as tf
from _report import report

import dlion
import dlion.keras as dk
from dlion import data

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
dlion.init()
rank, size = dlion.rank(), dlion.size()
ds = data.load_fashion_mnist()
n, batch, epochs, lr = 256, 32, 2, 0.05
x = ds.x_train[rank * n : (rank + 1) * n].reshape(n, -1)
y = ds.y_train[rank * n : (rank + 1) * n]
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_model() -> keras.Model:
    return keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)]
    )


keras.utils.set_random_seed(10 + rank)  # a different start per rank: the callback fixes it
model = make_model()
start = dlion.broadcast_object(model.get_weights(), root_rank=0, name="start")
model.compile(
    optimizer=dk.DistributedOptimizer(keras.optimizers.SGD(lr, momentum=0.9)),
    loss=loss_fn,
    metrics=["accuracy"],
)
seen_lr = []


class RecordLr(keras.callbacks.Callback):
    def on_train_batch_begin(self, b, logs=None):
        seen_lr.append(float(np.asarray(self.model.optimizer.learning_rate)))


warmup = dk.callbacks.LearningRateWarmupCallback(lr, warmup_epochs=1, momentum_correction=False)
history = model.fit(
    x,
    y,
    batch_size=batch,
    epochs=epochs,
    shuffle=False,
    verbose=0,
    callbacks=[
        dk.callbacks.BroadcastGlobalVariablesCallback(0),
        dk.callbacks.MetricAverageCallback(),
        warmup,
        RecordLr(),
    ],
)

# The same run as a custom loop through dlion.DistributedOptimizer.
ref = make_model()
ref.set_weights(start)
opt = dlion.DistributedOptimizer(keras.optimizers.SGD(lr, momentum=0.9), name="reference")
steps = n // batch


@tf.function
def grads_of(xb, yb):
    with tf.GradientTape() as tape:
        loss = loss_fn(yb, ref(xb, training=True))
    return tape.gradient(loss, ref.trainable_variables)


ref_lr = []
for epoch in range(epochs):
    for b in range(steps):
        e = epoch + b / steps
        rate = lr * warmup.multiplier(e) if e < 1 else lr
        opt.learning_rate.assign(rate)
        ref_lr.append(rate)
        xb, yb = x[b * batch : (b + 1) * batch], y[b * batch : (b + 1) * batch]
        opt.apply_gradients(zip(grads_of(xb, yb), ref.trainable_variables))

# And once more with DistributedGradientTape inside a tf.function (Horovod's TF2 shape).
tape_model = make_model()
tape_model.set_weights(start)
tape_opt = keras.optimizers.SGD(lr, momentum=0.9)


@tf.function
def tape_step(xb, yb):
    with tf.GradientTape() as tape:
        loss = loss_fn(yb, tape_model(xb, training=True))
    tape = dlion.DistributedGradientTape(tape, name="graph-tape")
    grads = tape.gradient(loss, tape_model.trainable_variables)
    tape_opt.apply_gradients(zip(grads, tape_model.trainable_variables))


for i, rate in enumerate(ref_lr):
    tape_opt.learning_rate.assign(rate)
    b = i % steps
    tape_step(x[b * batch : (b + 1) * batch], y[b * batch : (b + 1) * batch])

fit_w = [v.numpy() for v in model.trainable_variables]
ref_w = [v.numpy() for v in ref.trainable_variables]
report(
    rank,
    {
        "digest": hashlib.sha256(b"".join(w.tobytes() for w in fit_w)).hexdigest(),
        "max_abs_err": max(float(np.max(np.abs(a - b))) for a, b in zip(fit_w, ref_w)),
        "scale": max(float(np.max(np.abs(b))) for b in ref_w),
        "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(fit_w, start)),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "seen_lr": seen_lr,
        "ref_lr": ref_lr,
        "tape_err": max(
            float(np.max(np.abs(a.numpy() - b)))
            for a, b in zip(tape_model.trainable_variables, ref_w)
        ),
        "exchanges": model.optimizer.steps,
        "iterations": int(model.optimizer.iterations.numpy()),
        "jit_compile": bool(model.jit_compile),
    },
)
dlion.shutdown()
