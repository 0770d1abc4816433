"""Train a small CNN on Fashion-MNIST with Keras' model.fit and dlion, one process per rank.

    mpiexec -n 2 python examples/keras_fit.py --epochs 2

Horovod's Keras recipe: wrap the optimizer, scale the learning rate by the number of ranks,
warm it up, broadcast rank 0's initial state, average the metrics; each rank fits on its own
shard. Rank 0 prints the progress bar, every rank's metrics are averaged over ranks.
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64, help="batch size per rank")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate of one rank")
    p.add_argument("--warmup-epochs", type=float, default=1)
    p.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    args = p.parse_args()
    from dlion.quiet import import_tensorflow

    import_tensorflow()  # without TF's start-up notices on every rank
    import keras
    import tensorflow as tf

    import dlion.keras as dk
    from dlion import data

    dk.init()
    threads = max(1, (os.cpu_count() or 1) // dk.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    ds = data.load_fashion_mnist(args.data)
    part = data.shard(len(ds.y_train), dk.rank(), dk.size())  # this rank's shard
    part = part[: len(ds.y_train) // dk.size()]  # equal shards: every rank runs as many steps
    x, y = ds.x_train[part], ds.y_train[part]

    model = keras.Sequential(
        [
            keras.Input(ds.input_shape),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(ds.num_classes),
        ]
    )
    scaled_lr = args.lr * dk.size()  # the global batch grows with the ranks
    model.compile(
        optimizer=dk.DistributedOptimizer(keras.optimizers.SGD(scaled_lr, momentum=0.9)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,  # the exchange is a py_function, which XLA cannot compile
    )
    callbacks = [
        dk.callbacks.BroadcastGlobalVariablesCallback(0),  # everyone starts from rank 0
        dk.callbacks.MetricAverageCallback(),  # before callbacks that read the metrics
        dk.callbacks.LearningRateWarmupCallback(
            scaled_lr, warmup_epochs=args.warmup_epochs, momentum_correction=False, verbose=1
        ),
    ]
    model.fit(
        x,
        y,
        batch_size=args.batch,
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=2 if dk.rank() == 0 else 0,
    )
    test = data.shard(len(ds.y_test), dk.rank(), dk.size(), shuffle=False)
    _, acc = model.evaluate(ds.x_test[test], ds.y_test[test], verbose=0)
    acc = float(dk.allreduce(float(acc), op="average", name="test_accuracy"))
    if dk.rank() == 0:
        print(f"test accuracy {acc:.4f} ({dk.size()} ranks)")
    dk.shutdown()


if __name__ == "__main__":
    main()
