"""Horovod's TF2 custom-loop MNIST example (examples/tensorflow2/tensorflow2_mnist.py), written
the way Horovod writes it, on a small subset of Fashion-MNIST: a Sequential without Input,
DistributedGradientTape with compression=, broadcast_variables inside the first tf.function
step. Only the import line names dlion. argv[1]: "none" or "fp16" (the compression).

Keras 3 differences kept (docs/horovod.md, porting checklist): ``opt.variables`` is a property.
"""

import hashlib
import sys

import numpy as np
import tensorflow as tf
from _report import report

import dlion as hvd  # Horovod: import horovod.tensorflow as hvd
from dlion import data

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

# Horovod: initialize Horovod.
hvd.init()

ds = data.load_fashion_mnist()
mnist_images, mnist_labels = ds.x_train[:2048], ds.y_train[:2048]
dataset = tf.data.Dataset.from_tensor_slices(
    (tf.cast(mnist_images, tf.float32), tf.cast(mnist_labels, tf.int64))
)
dataset = dataset.repeat().shuffle(2048, seed=hvd.rank()).batch(32)

tf.keras.utils.set_random_seed(hvd.rank())  # a different start per rank: the broadcast fixes it
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
loss = tf.losses.SparseCategoricalCrossentropy()

# Horovod: adjust learning rate based on number of GPUs.
opt = tf.optimizers.Adam(0.002 * hvd.size())

# Horovod: (optional) compression algorithm.
compression = hvd.Compression.fp16 if sys.argv[1] == "fp16" else hvd.Compression.none


@tf.function
def training_step(images, labels, first_batch):
    with tf.GradientTape() as tape:
        probs = mnist_model(images, training=True)
        loss_value = loss(labels, probs)

    # Horovod: add Horovod Distributed GradientTape.
    tape = hvd.DistributedGradientTape(tape, compression=compression)

    grads = tape.gradient(loss_value, mnist_model.trainable_variables)
    opt.apply_gradients(zip(grads, mnist_model.trainable_variables))

    # Horovod: broadcast initial variable states from rank 0 to all other processes, after
    # the first gradient step so that the optimizer is initialized.
    if first_batch:
        hvd.broadcast_variables(mnist_model.variables, root_rank=0)
        hvd.broadcast_variables(opt.variables, root_rank=0)

    return loss_value


losses = []
# Horovod: adjust number of steps based on number of GPUs.
for batch, (images, labels) in enumerate(dataset.take(80 // hvd.size())):
    loss_value = training_step(images, labels, batch == 0)
    losses.append(float(loss_value))
    if batch % 10 == 0 and hvd.local_rank() == 0:
        print(f"Step #{batch}\tLoss: {float(loss_value):.6f}")

weights = [v.numpy() for v in mnist_model.variables]
test_probs = mnist_model(ds.x_test[:512], training=False).numpy()
report(
    hvd.rank(),
    {
        "digest": hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest(),
        "losses": losses,
        "accuracy": float(np.mean(test_probs.argmax(axis=1) == ds.y_test[:512])),
    },
)
hvd.shutdown()
