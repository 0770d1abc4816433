"""Horovod's names beyond the examples, on real ranks, against local references.

Every rank's input is a function of its rank, so each rank computes the exact expected result.
``lan_bandwidth_Bps=0`` keeps PerLinkExchange decentralized on this one host, so that
average_replicas and model.fit's final averaging have replicas that differ to work on.
argv[1]: a folder for a saved model.
"""

import sys

import keras
import numpy as np
import tensorflow as tf
from _report import report

import dlion
import dlion.keras as dk

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
dlion.init(lan_bandwidth_Bps=0)
rank, size = dlion.rank(), dlion.size()
rec: dict = {"errors": {}}


def errors(key, fn):
    try:
        fn()
    except dlion.DlionError as e:
        rec["errors"][key] = f"{type(e).__name__}: {e}"
    else:
        rec["errors"][key] = "no error"


# -- names and queries ---------------------------------------------------------------------
rec["ops"] = [dlion.Average, dlion.Sum, dlion.Min, dlion.Max, dlion.Product, dk.Average]
rec["built"] = {
    q: getattr(dlion, q)()
    for q in ("mpi_built", "mpi_enabled", "mpi_threads_supported", "gloo_built", "nccl_built")
    + ("cuda_built", "rocm_built", "ddl_built", "ccl_built", "sycl_built", "gloo_enabled")
}
rec["cross"] = [dlion.cross_rank(), dlion.cross_size(), dk.cross_rank()]
errors("adasum", lambda: dlion.allreduce(np.ones(2), op=dlion.Adasum, name="adasum"))
errors("global", lambda: dk.broadcast_global_variables(0))

# -- collectives -----------------------------------------------------------------------------
x = np.full(4, rank + 1.0)
got = dlion.allreduce(x, op=dlion.Sum, name="scaled", prescale_factor=2.0, postscale_factor=0.5)
rec["scaled"] = got.tolist()
t = dlion.allreduce(tf.constant([rank + 1.0]), dlion.Average, "scaled-tf", postscale_factor=3.0)
rec["scaled_tf"] = float(t.numpy()[0])
errors(
    "scale_int", lambda: dlion.allreduce(np.ones(2, np.int32), dlion.Sum, "si", prescale_factor=2.0)
)


@tf.function
def grouped(a, b):
    return dlion.grouped_allreduce([a, b], op=dlion.Sum, name="grouped")


ga, gb = grouped(tf.fill([2], float(rank)), tf.fill([3], 1.0))
rec["grouped"] = [ga.numpy().tolist(), gb.numpy().tolist()]
rec["grouped_np"] = [a.tolist() for a in dlion.grouped_allreduce([np.ones(2), np.ones(1)])]
rows = np.arange(7 * 2, dtype=np.float32).reshape(7, 2) * (rank + 1)
rec["reducescatter"] = dlion.reducescatter(rows, op=dlion.Sum, name="rs").tolist()
rec["reducescatter_tf"] = dlion.reducescatter(tf.constant(rows), name="rs-tf").numpy().tolist()
# alltoall: rank r sends (p + 1) rows of value 10 r + p to rank p.
send = np.concatenate([np.full((p + 1, 2), 10.0 * rank + p) for p in range(size)])
out, received = dlion.alltoall(tf.constant(send), splits=[p + 1 for p in range(size)], name="a2a")
rec["alltoall"] = [out.numpy()[:, 0].tolist(), received.numpy().tolist()]
rec["alltoall_even"] = dlion.alltoall(np.full((size, 1), float(rank)), name="a2a-even")[
    :, 0
].tolist()
errors("alltoall_splits", lambda: dlion.alltoall(np.ones((3, 1)), splits=[1] * (size + 1)))

# -- optimizer arguments ---------------------------------------------------------------------
sgd = keras.optimizers.SGD(0.1)
errors("sparse", lambda: dlion.DistributedOptimizer(sgd, sparse_as_dense=False))
errors("opt_adasum", lambda: dlion.DistributedOptimizer(sgd, op=dlion.Adasum))
errors(
    "both", lambda: dk.DistributedOptimizer(sgd, dlion.Allreduce(), compression=dk.Compression.fp16)
)
errors(
    "randomk", lambda: dlion.DistributedOptimizer(sgd, compression=dlion.Compression.randomk(0.1))
)
errors("passes", lambda: dlion.DistributedOptimizer(sgd, backward_passes_per_step=0))


# -- backward_passes_per_step=k equals one step on the k-times larger batch ------------------
def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(3)]
    )


rng = np.random.default_rng(rank)
xb = rng.standard_normal((16, 6)).astype(np.float32)
yb = rng.integers(0, 3, 16)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def grads_of(model, x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return tape.gradient(loss, model.trainable_variables)


one, two = make_model(), make_model()
big = dlion.DistributedOptimizer(
    keras.optimizers.SGD(0.5, momentum=0.9), dlion.Allreduce(), name="big"
)
small = dlion.DistributedOptimizer(
    keras.optimizers.SGD(0.5, momentum=0.9),
    dlion.Allreduce(),
    name="small",
    backward_passes_per_step=4,
    average_aggregated_gradients=True,
)
for _step in range(2):
    big.apply_gradients(zip(grads_of(one, xb, yb), one.trainable_variables))
    for part in range(4):
        sl = slice(4 * part, 4 * part + 4)
        small.apply_gradients(zip(grads_of(two, xb[sl], yb[sl]), two.trainable_variables))
rec["passes_custom"] = max(
    float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in zip(one.variables, two.variables)
)
rec["passes_custom_steps"] = [big.steps, small.steps, int(small.iterations.numpy())]

fits = []
for passes, batch in ((1, 16), (4, 4)):
    m = make_model()
    opt = dk.DistributedOptimizer(
        keras.optimizers.SGD(0.5, momentum=0.9),
        dlion.Allreduce(),
        backward_passes_per_step=passes,
        average_aggregated_gradients=True,
        name=f"fit{passes}",
    )
    m.compile(optimizer=opt, loss=loss_fn, jit_compile=False)
    m.fit(xb, yb, batch_size=batch, epochs=2, shuffle=False, verbose=0)
    fits.append(([v.numpy() for v in m.variables], opt.steps, int(opt.iterations.numpy())))
rec["passes_fit"] = max(float(np.max(np.abs(a - b))) for a, b in zip(fits[0][0], fits[1][0]))
rec["passes_fit_steps"] = [fits[0][1], fits[1][1], fits[1][2]]

# -- average_replicas with a decentralized exchange, on every rank the weighted mean ---------
model = make_model(seed=rank)
opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), dlion.PerLinkExchange(), name="dec")
for _ in range(3):
    opt.apply_gradients(zip(grads_of(model, xb, yb), model.trainable_variables))
rec["decentralized"] = not opt.exchange.replicas_identical
before = [v.numpy() for v in model.variables]
every = dlion.allgather_object(before, name="before")
rec["differed"] = any(float(np.max(np.abs(a - b))) > 0 for a, b in zip(every[0], every[-1]))
dlion.average_replicas(model)
mean = [np.mean([e[i] for e in every], axis=0) for i in range(len(before))]
rec["average_err"] = max(
    float(np.max(np.abs(v.numpy() - m))) for v, m in zip(model.variables, mean)
)
weights = [float(r + 1) for r in range(size)]
dense = [tf.Variable(b) for b in before]
dlion.average_replicas(dense, weight=weights[rank])
wmean = [sum(w * e[i] for w, e in zip(weights, every)) / sum(weights) for i in range(len(before))]
rec["weighted_err"] = max(float(np.max(np.abs(v.numpy() - m))) for v, m in zip(dense, wmean))
rec["average_digest"] = float(sum(np.sum(v.numpy(), dtype=np.float64) for v in model.variables))

# -- model.fit with a decentralized exchange ends with one model (no broadcast: the replicas
# start different, and only the final averaging can make them equal) ------------------------
m = make_model(seed=rank)
m.compile(
    optimizer=dk.DistributedOptimizer(keras.optimizers.SGD(0.1), dlion.PerLinkExchange()),
    loss=loss_fn,
    jit_compile=False,
)
m.fit(
    xb,
    yb,
    batch_size=4,
    epochs=1,
    verbose=0,
)
# -- LearningRateScheduleCallback and BestModelCheckpoint ---------------------------------------
seen_lr = []


class SeenLr(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        seen_lr.append(float(np.asarray(self.model.optimizer.learning_rate)))


sm = make_model()
sm.compile(optimizer=dk.DistributedOptimizer(keras.optimizers.SGD(0.1)), loss=loss_fn)
sm.fit(
    xb,
    yb,
    batch_size=8,
    epochs=3,
    verbose=0,
    validation_data=(xb, yb),
    callbacks=[
        dk.callbacks.LearningRateScheduleCallback(0.1, lambda e: 0.5**e, start_epoch=1),
        SeenLr(),
        dk.callbacks.MetricAverageCallback(),
        dk.callbacks.BestModelCheckpoint(f"{sys.argv[1]}/best-r{rank}-{{epoch}}.keras"),
    ],
)
rec["schedule"] = seen_lr
rec["fit_digest"] = b"".join(v.numpy().tobytes() for v in m.variables).hex()[:64]
path = f"{sys.argv[1]}/model.keras"
if rank == 0:
    m.save(path)
dlion.barrier("saved")
loaded = dk.load_model(path)
rec["loaded"] = [type(loaded.optimizer).__name__, type(loaded.optimizer.inner_optimizer).__name__]
rec["config"] = {
    k: v
    for k, v in dk.DistributedOptimizer(
        keras.optimizers.SGD(0.1), backward_passes_per_step=3, average_aggregated_gradients=True
    )
    .get_config()
    .items()
    if k != "optimizer"
}
# The exchange and fusion_bytes survive get_config/from_config (model saving).
saved = dk.DistributedOptimizer(
    keras.optimizers.SGD(0.1), exchange=dlion.OuterSync(10, fragments=2), fusion_bytes=1 << 20
)
again = dk.DistributedOptimizer.from_config(saved.get_config())
rec["roundtrip"] = [again.exchange.describe(), again._exchanger.fusion_bytes]
# A model saved with a plain optimizer comes back with it wrapped, and trains distributed.
plain = make_model()
plain.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss_fn, jit_compile=False)
if rank == 0:
    plain.save(f"{sys.argv[1]}/plain.keras")
dlion.barrier("saved-plain")
wrapped = dk.load_model(f"{sys.argv[1]}/plain.keras", compression=dk.Compression.fp16)
wrapped.fit(xb, yb, batch_size=8, epochs=1, verbose=0)
rec["wrapped"] = [wrapped.optimizer.exchange.describe(), wrapped.optimizer.steps]
rec["wrapped_digest"] = b"".join(v.numpy().tobytes() for v in wrapped.variables).hex()[:64]
report(rank, rec)
dlion.shutdown()
