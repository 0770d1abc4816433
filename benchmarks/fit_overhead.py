"""model.fit per-step time: plain Keras vs dlion.keras.DistributedOptimizer, on one rank.

    .venv/bin/python benchmarks/fit_overhead.py [--steps 200] [--rounds 5] [--model cnn|mlp]

Three variants of the same model, data and optimizer (SGD 0.05, momentum 0.9, batch 64,
1 TF thread), timed in alternating rounds so that a noisy machine hits all alike:
  plain     keras.optimizers.SGD
  dlion     dlion.keras.DistributedOptimizer (one rank: the exchange is skipped, as shipped)
  exchange  the same with exchange_on_one_rank=True: the py_function and the engine run
Prints the median seconds per step of each and the ratios to plain.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    args = p.parse_args()
    import keras
    import tensorflow as tf

    import dlion
    import dlion.keras as dk
    from dlion import data

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    dlion.init()
    ds = data.load_fashion_mnist()
    n = args.steps * 64
    x, y = ds.x_train[:n], ds.y_train[:n]

    def make_model() -> keras.Model:
        if args.model == "mlp":
            layers = [keras.layers.Flatten(), keras.layers.Dense(128, activation="relu")]
        else:
            layers = [
                keras.layers.Conv2D(16, 3, activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Flatten(),
                keras.layers.Dense(64, activation="relu"),
            ]
        return keras.Sequential([keras.Input(ds.input_shape), *layers, keras.layers.Dense(10)])

    def optimizer(kind: str) -> keras.optimizers.Optimizer:
        sgd = keras.optimizers.SGD(0.05, momentum=0.9)
        if kind == "plain":
            return sgd
        return dk.DistributedOptimizer(sgd, exchange_on_one_rank=kind == "exchange")

    models = {}
    for kind in ("plain", "dlion", "exchange"):
        keras.utils.set_random_seed(0)
        m = make_model()
        m.compile(
            optimizer=optimizer(kind),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        m.fit(x[:640], y[:640], batch_size=64, epochs=1, verbose=0)  # trace and warm up
        models[kind] = m
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.rounds):
        for kind, m in models.items():
            start = time.perf_counter()
            m.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
            times[kind].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times["plain"])
    print(f"model {args.model}, {args.steps} steps of 64 per round, {args.rounds} rounds, 1 rank")
    for kind, ts in times.items():
        med = statistics.median(ts)
        spread = f"{min(ts) * 1e3:.2f}-{max(ts) * 1e3:.2f}"
        best = min(ts) / min(times["plain"])
        print(
            f"{kind:9s} {med * 1e3:7.3f} ms/step ({spread})  ratio {med / base:.3f}, "
            f"of minima {best:.3f}"
        )
    dlion.shutdown()


if __name__ == "__main__":
    main()
