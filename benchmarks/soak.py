"""Soak: many steps of a small model with the per-link exchange, watching memory and files.

    .venv/bin/mpiexec -n 4 .venv/bin/python benchmarks/soak.py            # 10,000 steps
    .venv/bin/mpiexec -n 4 .venv/bin/python benchmarks/soak.py --steps 2000 --json out.json

Every rank trains a small MLP on its Fashion-MNIST shard with ``DistributedOptimizer`` and
``PerLinkExchange`` forced onto the per-link path (``lan_allreduce=False``, top-k with 8-bit
values and error feedback on every link, as on a wide-area network), and samples its resident
set size (``/proc/self/statm``) and open file descriptors (``/proc/self/fd``) every
``--every`` steps. Rank 0 prints a table and the verdict: RSS growth from step ``--from`` to the
end (goal < 5%) and the change in descriptors (goal 0), worst rank.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def rss_mb() -> float:
    """Resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--every", type=int, default=500, help="sample every N steps")
    p.add_argument("--from", dest="start", type=int, default=1000, help="growth measured from")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--k-ratio", type=float, default=0.01)
    p.add_argument("--json", default=None, help="write the samples of every rank here")
    args = p.parse_args()

    import dlion

    dlion.init()
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from dlion import data

    rank, size = dlion.rank(), dlion.size()
    ds = data.load_fashion_mnist()
    shard = data.shard_dataset(ds, rank, size)
    keras.utils.set_random_seed(rank)
    model = keras.Sequential(
        [
            keras.Input(ds.input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(ds.num_classes),
        ]
    )
    exchange = dlion.PerLinkExchange(lan_allreduce=False, budget_s=0.002)
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.05, momentum=0.9), exchange=exchange)
    dlion.broadcast_variables(model.variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def grads_of(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    samples: list[dict[str, float]] = []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = shard.next(args.batch)
        loss, grads = grads_of(x, y)
        if step == args.steps:
            exchange.synchronize_next()
        opt.apply_gradients(zip(grads, model.trainable_variables))
        if step % args.every == 0 or step == 1:
            samples.append(
                {
                    "step": step,
                    "rss_mb": rss_mb(),
                    "fds": open_fds(),
                    "loss": float(loss),
                    "wall_s": time.perf_counter() - start,
                }
            )
    every = dlion.allgather_object(samples)
    sent = sum(s.bytes_sent for s in dlion.link_stats().values())
    if rank == 0:
        print(f"# soak: {size} ranks, {args.steps} steps, {exchange.describe()}")
        print(
            f"{'step':>7} "
            + " ".join(f"{'rss' + str(r):>8} {'fds' + str(r):>5}" for r in range(size))
        )
        for i, s0 in enumerate(every[0]):
            cells = " ".join(
                f"{every[r][i]['rss_mb']:8.1f} {every[r][i]['fds']:5d}" for r in range(size)
            )
            print(f"{int(s0['step']):7d} {cells}")
        growth, fd_change = [], []
        for r in range(size):
            base = next(s for s in every[r] if s["step"] >= args.start)
            growth.append((every[r][-1]["rss_mb"] - base["rss_mb"]) / base["rss_mb"])
            fd_change.append(every[r][-1]["fds"] - base["fds"])
        print(
            f"RSS growth from step {args.start} to {args.steps}: "
            f"worst rank {max(growth) * 100:+.2f}% "
            f"(goal < 5%); descriptors: worst change {max(fd_change, key=abs):+d} (goal 0); "
            f"{every[0][-1]['wall_s']:.0f} s, rank 0 sent {sent / 1e6:.1f} MB"
        )
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"ranks": every, "rss_growth": growth, "fd_change": fd_change}, f)
    dlion.shutdown()


if __name__ == "__main__":
    main()
