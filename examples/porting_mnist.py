"""A Horovod TF2 custom-loop MNIST script, ported to dlion (Fashion-MNIST from dlion.data).

    mpiexec -n 2 python examples/porting_mnist.py --steps 200

It keeps the structure of Horovod's ``examples/tensorflow2/tensorflow2_mnist.py`` step by step;
the comments starting "Port:" say what changed. The port is the import, plus three details:
  * data comes from ``dlion.data`` (no download at run time) instead of ``keras.datasets``;
  * ``opt.variables`` is a property in Keras 3 (Horovod's script calls ``opt.variables()``);
  * there is no GPU pinning: dlion's wheels target CPU ranks;
and one addition: ``dlion.average_replicas`` before rank 0 saves, because over slow links the
default exchange is decentralized and the replicas differ (a no-op in effect when they do not).
"""

from __future__ import annotations

import argparse
import os

from dlion.quiet import import_tensorflow

import_tensorflow()  # without TF's start-up notices on every rank (not in Horovod's script)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import dlion as hvd  # noqa: E402  Port: was `import horovod.tensorflow as hvd`
from dlion import data  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=10000, help="global steps, shared by the ranks")
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()

    # Horovod: initialize Horovod.
    hvd.init()
    # Port: no GPU pinning by local rank; instead share the cores between the local ranks.
    threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)

    # Each rank reads the data and shuffles it with its own seed (Port: dlion.data).
    ds = data.load_fashion_mnist()
    dataset = (
        tf.data.Dataset.from_tensor_slices((ds.x_train, ds.y_train))
        .repeat()
        .shuffle(10000, seed=hvd.rank())
        .batch(args.batch)
    )

    mnist_model = keras.Sequential(
        [
            keras.Input(ds.input_shape),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Dropout(0.25),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(ds.num_classes, activation="softmax"),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy()
    # Horovod: scale the learning rate by the number of workers.
    opt = keras.optimizers.Adam(0.001 * hvd.size())

    @tf.function
    def training_step(images, labels, first_batch):
        with tf.GradientTape() as tape:
            probs = mnist_model(images, training=True)
            loss_value = loss(labels, probs)
        # Horovod: wrap the tape; gradients are averaged over the ranks (inside the
        # tf.function too).
        tape = hvd.DistributedGradientTape(tape)
        grads = tape.gradient(loss_value, mnist_model.trainable_variables)
        opt.apply_gradients(zip(grads, mnist_model.trainable_variables))
        # Horovod: broadcast the initial variables from rank 0 once the first step has created
        # the optimizer's slots. Port: opt.variables is a property in Keras 3.
        if first_batch:
            hvd.broadcast_variables(mnist_model.variables, root_rank=0)
            hvd.broadcast_variables(opt.variables, root_rank=0)
        return loss_value

    # Horovod: adjust the number of steps to the number of ranks.
    for batch, (images, labels) in enumerate(dataset.take(args.steps // hvd.size())):
        loss_value = training_step(images, labels, batch == 0)
        if batch % 10 == 0 and hvd.rank() == 0:
            print(f"Step #{batch}\tLoss: {float(loss_value):.6f}", flush=True)

    # Port: one model out of the replicas (they differ when the exchange is decentralized).
    hvd.average_replicas(mnist_model)
    # Horovod: only rank 0 saves, so that workers do not overwrite each other's files.
    if hvd.rank() == 0:
        path = os.environ.get("CHECKPOINT", "")
        if path:
            mnist_model.save(path)
    hvd.shutdown()


if __name__ == "__main__":
    main()
