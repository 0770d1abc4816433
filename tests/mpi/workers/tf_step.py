"""The one TF gradient path (dlion.tensorflow.step) and dlion.OuterSync through it, on real ranks
and real data (Fashion-MNIST).

Sites from DLION_TEST_SITES. Checks, in one launch:
  graph   dlion.DistributedOptimizer.apply_gradients inside a tf.function (forward, backward and
          apply in one graph) gives the same weights as the eager loop
  skip    model.fit with nonfinite="skip": a NaN batch on one rank is skipped on every rank
  sync    dlion.DistributedOptimizer with OuterSync(1, outer_lr=1, momentum=0, dense) and plain
          SGD gives the same weights as dlion.Allreduce (dense synchronous averaging)
  fit     model.fit with dlion.keras.DistributedOptimizer(OuterSync(4, fragments=2, overlap=1))
          and a DynamicBatcher-set weighting: the loss falls, rounds ran, the ranks of a site
          hold the same weights during training, and every rank ends with the same model
  tape    DistributedGradientTape refuses OuterSync with a clear error
"""

import os
import warnings
import zlib

import keras
import numpy as np
import tensorflow as tf
from _report import report
from mpi4py import MPI

import dlion
import dlion.keras as dk
from dlion import data

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
SITES = os.environ["DLION_TEST_SITES"].split(",")
dlion.init(site=SITES[MPI.COMM_WORLD.rank])
rank, size = dlion.rank(), dlion.size()
ds = data.load_fashion_mnist()
n, batch = 384, 32
x = ds.x_train[rank * n : (rank + 1) * n].reshape(n, -1)
y = ds.y_train[rank * n : (rank + 1) * n]
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
    )


def custom_loop(exchange: dlion.Exchange, steps: int) -> list[np.ndarray]:
    model = make_model()
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), exchange=exchange)
    for s in range(steps):
        xb, yb = x[s * batch : (s + 1) * batch], y[s * batch : (s + 1) * batch]
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        opt.apply_gradients(
            zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        )
    opt.flush()
    return [w.copy() for w in model.get_weights()]


def graph_loop(exchange: dlion.Exchange, steps: int) -> list[np.ndarray]:
    model = make_model()
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), exchange=exchange, name="graph")

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for s in range(steps):
        step(x[s * batch : (s + 1) * batch], y[s * batch : (s + 1) * batch])
    return [w.copy() for w in model.get_weights()]


out: dict = {}
outer = dlion.OuterSync(1, outer_lr=1.0, momentum=0.0, codec="dense")
a = custom_loop(outer, 6)
b = custom_loop(dlion.Allreduce(), 6)
out["sync_vs_allreduce"] = max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))
g = graph_loop(dlion.Allreduce(), 6)
out["graph_vs_eager"] = max(float(np.max(np.abs(p - q))) for p, q in zip(g, b))
out["sync_moved"] = max(float(np.max(np.abs(p - q))) for p, q in zip(a, make_model().get_weights()))

# model.fit: local steps, streamed fragments with overlap, weights from a DynamicBatcher.
policy = dlion.OuterSync(4, fragments=2, overlap=1)
batcher = dlion.DynamicBatcher(batch * size, exchange=policy)
model = make_model()
model.compile(
    optimizer=dk.DistributedOptimizer(keras.optimizers.SGD(0.05), exchange=policy),
    loss=loss_fn,
    jit_compile=False,
)
checksums = []


class SiteCheck(keras.callbacks.Callback):
    def on_train_batch_end(self, b, logs=None):
        if b % 5 == 2:
            w = np.concatenate([v.reshape(-1) for v in self.model.get_weights()])
            checksums.append(zlib.crc32(w.tobytes()))


hist = model.fit(
    x, y, batch_size=batch, epochs=3, shuffle=False, verbose=0, callbacks=[SiteCheck()]
)
final = np.concatenate([v.reshape(-1) for v in model.get_weights()])
out["loss_first"], out["loss_last"] = (
    float(hist.history["loss"][0]),
    float(hist.history["loss"][-1]),
)
out["rounds_done"] = policy.rounds_done
out["steps"] = policy.step
out["batches"] = policy.batches
out["checksums"] = checksums
out["final_crc"] = zlib.crc32(final.tobytes())
out["describe"] = policy.describe()

# nonfinite="skip" inside model.fit: rank 1's third batch is NaN; every rank skips that step.
bad = x[: 4 * batch].copy()
if rank == 1:
    bad[2 * batch : 3 * batch] = np.nan
opt = dk.DistributedOptimizer(
    keras.optimizers.SGD(0.05), exchange=dlion.Allreduce(), nonfinite="skip", name="skipper"
)
model = make_model()
model.compile(optimizer=opt, loss=loss_fn, jit_compile=False)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model.fit(bad, y[: 4 * batch], batch_size=batch, epochs=1, shuffle=False, verbose=0)
w = np.concatenate([v.reshape(-1) for v in model.get_weights()])
out["skip_warned"] = sum(issubclass(c.category, dlion.NonFiniteGradientWarning) for c in caught)
out["skipped"] = opt._exchanger.skipped
out["skip_finite"] = bool(np.isfinite(w).all())
out["skip_crc"] = zlib.crc32(w.tobytes())

try:
    dlion.DistributedGradientTape(tf.GradientTape(), exchange=dlion.OuterSync())
    out["tape"] = "accepted"
except dlion.InvalidArgumentError as e:
    out["tape"] = str(e)
report(rank, out)
dlion.shutdown()
