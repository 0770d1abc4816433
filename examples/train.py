"""Train a small CNN on Fashion-MNIST with dlion, one process per rank.

    mpiexec -n 4 python examples/train.py            # 5 epochs, prints test accuracy
    mpiexec -n 2 python examples/train.py --epochs 1 --batch 32
    mpiexec -n 2 python examples/train.py --checkpoint-dir ckpt --checkpoint-every 100 --resume

Each rank trains on its own shard; gradients are averaged through dlion's C++ engine
(dense allreduce, Horovod's behaviour). Rank 0 prints progress per epoch and, at the end,
the test accuracy (evaluated on all ranks, each on a slice of the test set) and wall time.
With --checkpoint-dir, every rank's model, optimizer slots, step and data position are saved
(dlion.checkpoint) every --checkpoint-every steps and at the end; --resume continues from the
newest checkpoint (same number of ranks).
"""

from __future__ import annotations

import argparse
import os
import time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=5, help="passes over the training set (global)")
    p.add_argument("--batch", type=int, default=64, help="batch size per rank")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (momentum 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TF threads per rank (0: cores / ranks on this host, at least 1)",
    )
    p.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: off)")
    p.add_argument("--checkpoint-dir", default=None, help="folder for dlion.checkpoint files")
    p.add_argument(
        "--checkpoint-every", type=int, default=0, help="save every N steps (0: at the end only)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint, if any"
    )
    args = p.parse_args()
    if (args.checkpoint_every or args.resume) and not args.checkpoint_dir:
        p.error("--checkpoint-every and --resume need --checkpoint-dir")
    if args.checkpoint_every < 0:
        p.error(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    return args


def main() -> None:
    args = parse_args()
    import dlion  # imports mpi4py and initialises MPI

    dlion.init()
    threads = args.threads or max(1, (os.cpu_count() or 1) // dlion.local_size())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from dlion import checkpoint, data

    rank, size = dlion.rank(), dlion.size()
    ds = data.load_fashion_mnist(args.data)
    shard = data.shard_dataset(ds, rank, size, seed=args.seed)
    keras.utils.set_random_seed(args.seed + rank)  # different init per rank: broadcast fixes it

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
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(args.lr, momentum=0.9))
    dlion.broadcast_variables(model.variables, root_rank=0)

    @tf.function
    def grads_of(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    @tf.function
    def predict(x):
        return tf.argmax(model(x, training=False), axis=1)

    def test_accuracy() -> float:
        part = data.shard(len(ds.y_test), rank, size, shuffle=False)
        correct = np.zeros(2)  # [correct, seen] summed over ranks
        for i in range(0, len(part), 1000):
            idx = part[i : i + 1000]
            correct += [np.sum(predict(ds.x_test[idx]).numpy() == ds.y_test[idx]), len(idx)]
        dlion.allreduce(correct, op="sum", name="test_accuracy")
        return float(correct[0] / correct[1])

    steps_per_epoch = len(ds.y_train) // (args.batch * size)
    total = args.epochs * steps_per_epoch
    if args.max_steps:
        total = min(total, args.max_steps)
    state = {"model": model, "optimizer": opt, "data": shard}
    step = 0
    if args.resume and checkpoint.latest_step(args.checkpoint_dir) is not None:
        step = checkpoint.load(args.checkpoint_dir, **state).step
        if rank == 0:
            print(f"resumed from step {step} ({args.checkpoint_dir})", flush=True)

    def save() -> None:
        checkpoint.save(args.checkpoint_dir, step, **state)

    if rank == 0:
        print(
            f"dlion: {size} ranks, sites {sorted(set(dlion.sites()))}, data {ds.name} from "
            f"{ds.source}, {steps_per_epoch} steps/epoch of {args.batch}x{size} samples, "
            f"{threads} TF thread(s)/rank",
            flush=True,
        )
    start = time.perf_counter()
    losses: list[float] = []
    while step < total:
        x, y = shard.next(args.batch)
        loss, grads = grads_of(x, y)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
        step += 1
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            save()
        if step % steps_per_epoch == 0 or step == total:
            mean_loss = dlion.allreduce(np.array([np.mean(losses)]), name="epoch_loss")[0]
            losses = []
            acc = test_accuracy()
            if rank == 0:
                print(
                    f"epoch {-(-step // steps_per_epoch)}/{args.epochs}: loss {mean_loss:.4f}  "
                    f"test accuracy {acc:.4f}  wall {time.perf_counter() - start:.1f} s",
                    flush=True,
                )
    if args.checkpoint_dir and not (args.checkpoint_every and step % args.checkpoint_every == 0):
        save()  # the final state, unless the loop just saved it
    wall = time.perf_counter() - start
    acc = test_accuracy()
    if rank == 0:
        print(
            f"final test accuracy {acc:.4f} after {step} steps; wall time {wall:.1f} s", flush=True
        )
    dlion.shutdown()


if __name__ == "__main__":
    main()
