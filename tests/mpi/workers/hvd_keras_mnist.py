"""Horovod's Keras MNIST example (examples/tensorflow2/tensorflow2_keras_mnist.py, with the
synthetic Keras benchmark's ``compression=``), written the way Horovod writes it, on a small
subset of Fashion-MNIST: a Sequential without Input, DistributedOptimizer with
backward_passes_per_step and average_aggregated_gradients, BroadcastGlobalVariablesCallback,
MetricAverageCallback, LearningRateWarmupCallback, a checkpoint on rank 0. Only the import line
names dlion. argv: out folder, compression ("none" or "fp16"), backward passes per step.

Keras 3 differences kept (docs/horovod.md, porting checklist): ``compile`` takes no
``experimental_run_tf_function``; checkpoints end in ``.keras``.
"""

import hashlib
import os
import sys

import tensorflow as tf
from _report import report

import dlion.keras as hvd  # Horovod: import horovod.tensorflow.keras as hvd
from dlion import data

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
out, compression_name, passes = sys.argv[1], sys.argv[2], int(sys.argv[3])

# Horovod: initialize Horovod.
hvd.init()

ds = data.load_fashion_mnist()
mnist_images, mnist_labels = ds.x_train[:2048], ds.y_train[:2048]
dataset = tf.data.Dataset.from_tensor_slices(
    (tf.cast(mnist_images, tf.float32), tf.cast(mnist_labels, tf.int64))
)
dataset = dataset.repeat().shuffle(2048, seed=hvd.rank()).batch(32)

tf.keras.utils.set_random_seed(hvd.rank())  # a different start per rank: the callback fixes it
mnist_model = tf.keras.Sequential(
    [
        tf.keras.layers.Conv2D(8, [3, 3], activation="relu"),
        tf.keras.layers.MaxPooling2D(pool_size=(2, 2)),
        tf.keras.layers.Dropout(0.25),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(32, activation="relu"),
        tf.keras.layers.Dense(10, activation="softmax"),
    ]
)

# Horovod: adjust learning rate based on number of GPUs.
scaled_lr = 0.002 * hvd.size()
opt = tf.optimizers.Adam(scaled_lr)

# Horovod: (optional) compression algorithm.
compression = hvd.Compression.fp16 if compression_name == "fp16" else hvd.Compression.none

# Horovod: add Horovod DistributedOptimizer.
opt = hvd.DistributedOptimizer(
    opt,
    compression=compression,
    backward_passes_per_step=passes,
    average_aggregated_gradients=True,
)

mnist_model.compile(
    loss=tf.losses.SparseCategoricalCrossentropy(), optimizer=opt, metrics=["accuracy"]
)

callbacks = [
    # Horovod: broadcast initial variable states from rank 0 to all other processes.
    hvd.callbacks.BroadcastGlobalVariablesCallback(0),
    # Horovod: average metrics among workers at the end of every epoch.
    hvd.callbacks.MetricAverageCallback(),
    # Horovod: scale the learning rate up to lr * size over the first epoch.
    hvd.callbacks.LearningRateWarmupCallback(
        initial_lr=scaled_lr, warmup_epochs=1, momentum_correction=False, verbose=1
    ),
]

# Horovod: save checkpoints only on worker 0 to prevent other workers from corrupting them.
if hvd.rank() == 0:
    callbacks.append(
        tf.keras.callbacks.ModelCheckpoint(os.path.join(out, "checkpoint-{epoch}.keras"))
    )

# Horovod: write logs on worker 0.
verbose = 2 if hvd.rank() == 0 else 0

# Train the model.
# Horovod: adjust number of steps based on number of GPUs.
history = mnist_model.fit(
    dataset, steps_per_epoch=48 // hvd.size(), callbacks=callbacks, epochs=3, verbose=verbose
)

weights = [v.numpy() for v in mnist_model.variables]
report(
    hvd.rank(),
    {
        "digest": hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest(),
        "loss": [float(v) for v in history.history["loss"]],
        "accuracy": [float(v) for v in history.history["accuracy"]],
        "exchanges": opt.steps,
        "iterations": int(opt.iterations.numpy()),
        "exchange": opt.exchange.describe(),
    },
)
hvd.shutdown()
