"""Bad input to the TF training API on real ranks (issue 18); the scenario is argv[1].

weight: Allreduce weights that are not finite in float32 (on one rank, on all ranks, and a
  weight times a gradient that overflows) fail the step on every rank; the engine stays usable.
gradients: numpy arrays and lists as gradients get a clear error naming the gradient.
throwaway: rank 0 builds a throwaway model first, so its Keras auto-names differ; training and
  a checkpoint round trip into yet another instance still work (matched by structure).
"""

import os
import sys

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


def outcome(fn) -> dict:
    try:
        fn()
        return {"error": None}
    except Exception as e:  # noqa: BLE001 - the test inspects type and text
        return {
            "error": type(e).__name__,
            "message": str(e),
            "is_dlion": isinstance(e, dlion.DlionError),
        }


def make_model(seed: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])


def grads_of(model: keras.Model, scale: float = 1.0) -> list:
    x = tf.constant(np.random.default_rng(rank).standard_normal((8, 4)), tf.float32)
    with tf.GradientTape() as tape:
        loss = scale * tf.reduce_sum(model(x) ** 2)
    return tape.gradient(loss, model.trainable_variables)


def weights(model: keras.Model) -> list:
    return [v.numpy().tolist() for v in model.variables]


if scenario == "weight":
    model = make_model()
    exchange = dlion.Allreduce(weight=0.5)
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), exchange=exchange, name="opt")

    def step(weight: float, scale: float = 1.0) -> None:
        exchange.weight = weight
        opt.apply_gradients(zip(grads_of(model, scale), model.trainable_variables))

    seen = {
        "one_rank": outcome(lambda: step(1e39 if rank == last else 0.5)),
        "all_ranks": outcome(lambda: step(1e39)),
        "overflow": outcome(lambda: step(1e30 if rank == 0 else 0.5, scale=1e20)),
    }
    before = weights(model)
    after = outcome(lambda: step(1.0 / size))  # a good step still works afterwards
    report(rank, {"seen": seen, "after": after, "changed": weights(model) != before})

elif scenario == "gradients":
    model = make_model()
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), exchange=dlion.Allreduce())
    grads = grads_of(model)
    variables = model.trainable_variables
    seen = {
        "numpy": outcome(lambda: opt.apply_gradients(zip([g.numpy() for g in grads], variables))),
        "list": outcome(
            lambda: opt.apply_gradients(zip([g.numpy().tolist() for g in grads], variables))
        ),
    }
    ok = outcome(lambda: opt.apply_gradients(zip(grads, variables)))
    report(rank, {"seen": seen, "ok": ok})

elif scenario == "throwaway":
    if rank == 0:
        make_model(seed=9)  # a throwaway model: rank 0's later layers get other auto-numbers
    model = make_model()
    names = [v.path for v in model.variables]
    opt = dlion.DistributedOptimizer(
        keras.optimizers.SGD(0.1, momentum=0.9), name="opt", exchange=dlion.Allreduce()
    )
    dlion.broadcast_variables(model.variables)
    train = outcome(
        lambda: [
            opt.apply_gradients(zip(grads_of(model), model.trainable_variables)) for _ in range(3)
        ]
    )
    folder = os.path.join(sys.argv[2], "ckpt")
    saved = outcome(lambda: dlion.checkpoint.save(folder, 3, model=model, optimizer=opt))
    fresh = make_model(seed=5)  # yet other auto-numbers, other values, an unbuilt optimizer
    fresh_opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1, momentum=0.9), name="opt2")
    loaded = outcome(lambda: dlion.checkpoint.load(folder, model=fresh, optimizer=fresh_opt))
    same = weights(fresh) == weights(model) and [
        v.numpy().tolist() for v in fresh_opt.variables
    ] == [v.numpy().tolist() for v in opt.variables]
    every = dlion.allgather_object(weights(model))
    report(
        rank,
        {
            "names": names,
            "fresh_names": [v.path for v in fresh.variables],
            "train": train,
            "saved": saved,
            "loaded": loaded,
            "same": same,
            "replicas_equal": all(w == every[0] for w in every),
        },
    )

else:
    raise SystemExit(f"unknown scenario {scenario}")

dlion.shutdown()
