"""Bad input on the optimizer path, on real ranks; the scenario is argv[1].

raise: the last rank's gradients hold NaN at step 1: every rank raises NonFiniteGradientError
  naming that rank, the step and the tensor; no rank applied it, no NaN reached any peer, and
  training goes on at step 2.
skip: nonfinite="skip"; rank 0 has +inf at step 1, the last rank NaN at step 3: every rank
  warns and skips both; the weights equal a second model that simply left those steps out.
dtype_mismatch: the last rank's model is float64: MismatchError naming the rank and dtype.
options: invalid options are refused with messages that list what is allowed.
"""

import hashlib
import sys
import warnings

import keras
import numpy as np
import tensorflow as tf
from _report import report

import dlion

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
scenario = sys.argv[1]
dlion.init()
rank, size = dlion.rank(), dlion.size()
last = size - 1
rng = np.random.default_rng(rank)
x_all = rng.standard_normal((256, 12)).astype(np.float32)
y_all = rng.integers(0, 3, 256)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_model(dtype: str = "float32") -> keras.Model:
    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [
            keras.Input((12,), dtype=dtype),
            keras.layers.Dense(8, activation="relu", dtype=dtype, name="hidden"),
            keras.layers.Dense(3, dtype=dtype, name="logits"),
        ]
    )


def grads_of(model, step):
    x, y = x_all[16 * step : 16 * step + 16], y_all[16 * step : 16 * step + 16]
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return tape.gradient(loss, model.trainable_variables)


def poison(grads, index, value):
    grads = list(grads)
    g = grads[index].numpy().copy()
    g.flat[1] = value
    grads[index] = tf.constant(g)
    return grads


def digest(model) -> str:
    return hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.variables)).hexdigest()


def outcome(fn) -> dict:
    try:
        fn()
        return {"error": None}
    except Exception as e:  # noqa: BLE001 - the test inspects type and text
        return {"error": type(e).__name__, "message": str(e)}


if scenario == "raise":
    model = make_model()
    opt = dlion.DistributedOptimizer(
        keras.optimizers.SGD(0.1, momentum=0.9), name="opt", exchange=dlion.Allreduce()
    )
    opt.apply_gradients(zip(grads_of(model, 0), model.trainable_variables))
    before = digest(model)
    g = grads_of(model, 1)
    if rank == last:
        g = poison(g, 1, np.nan)  # hidden/bias
    seen = outcome(lambda: opt.apply_gradients(zip(g, model.trainable_variables)))
    exchanged = [grp.buffer.copy() for plan in opt._exchanger.plans.values() for grp in plan.groups]
    unchanged = digest(model) == before
    iterations = int(opt.iterations.numpy())
    opt.apply_gradients(zip(grads_of(model, 2), model.trainable_variables))  # goes on
    report(
        rank,
        {
            **seen,
            "is_dlion": seen["error"] is not None,
            "unchanged": unchanged,
            "iterations_after_bad": iterations,
            "iterations": int(opt.iterations.numpy()),
            "peer_buffers_finite": bool(all(np.isfinite(b).all() for b in exchanged)),
            "digest": digest(model),
            "finite": bool(all(np.isfinite(v.numpy()).all() for v in model.variables)),
        },
    )

elif scenario == "skip":
    model, ref = make_model(), make_model()
    opt = dlion.DistributedOptimizer(
        keras.optimizers.Adam(0.01),
        nonfinite="skip",
        compile_apply=rank == 0,
        name="opt",
        exchange=dlion.Allreduce(),
    )
    ref_opt = dlion.DistributedOptimizer(
        keras.optimizers.Adam(0.01), name="ref", exchange=dlion.Allreduce()
    )
    bad = {1: (0, np.inf), 3: (last, np.nan)}  # step: (rank, value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(5):
            g = grads_of(model, step)
            if step in bad and bad[step][0] == rank:
                g = poison(g, 2, bad[step][1])  # logits/kernel
            opt.apply_gradients(zip(g, model.trainable_variables))
            if step not in bad:
                ref_opt.apply_gradients(zip(grads_of(ref, step), ref.trainable_variables))
    texts = [
        str(w.message) for w in caught if issubclass(w.category, dlion.NonFiniteGradientWarning)
    ]
    report(
        rank,
        {
            "warnings": texts,
            "skipped": opt.skipped_steps,
            "steps": opt.steps,
            "iterations": int(opt.iterations.numpy()),
            "same_as_ref": digest(model) == digest(ref),
            "digest": digest(model),
        },
    )

elif scenario == "dtype_mismatch":
    model = make_model("float64" if rank == last else "float32")
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1))
    report(
        rank,
        outcome(lambda: opt.apply_gradients(zip(grads_of(model, 0), model.trainable_variables))),
    )

elif scenario == "options":
    model = make_model()
    sgd = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x_all[:2]))
    seen = {
        "nonfinite": outcome(lambda: dlion.DistributedOptimizer(sgd, nonfinite="ignore")),
        "tape_skip": outcome(lambda: dlion.DistributedGradientTape(tape, nonfinite="skip")),
        "tape_other": outcome(lambda: dlion.DistributedGradientTape(tape, nonfinite="warn")),
        "fusion": outcome(lambda: dlion.DistributedOptimizer(sgd, fusion_bytes=10)),
        "exchange": outcome(lambda: dlion.DistributedOptimizer(sgd, exchange="allreduce")),
        "op": outcome(lambda: dlion.Allreduce(op="max")),
        "wrapped": outcome(lambda: dlion.DistributedOptimizer("sgd")),
    }
    report(rank, {"seen": seen})

else:
    raise SystemExit(f"unknown scenario {scenario}")

dlion.shutdown()
