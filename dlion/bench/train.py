"""Training-step throughput of a 784-512-512-10 MLP: dlion vs a plain mpi4py Allreduce loop.

Custom loop, SGD, batch 64 per rank, synthetic but learnable data (labels from a fixed random
teacher), TF limited to 1 thread per rank. Each exchange runs 10 warm-up and --steps timed
steps in the same job, on the same model and data:
  dlion   dlion.DistributedOptimizer(exchange=dlion.Allreduce())   (the C++ engine)
  mpi4py  flatten gradients, comm.Allreduce in place, divide, split, apply
  local   no exchange at all (the compute-only ceiling)
Each row also gives the CPU this rank spent during that exchange's timed steps, split by thread
(Linux /proc): the training (the Python thread, TF's threads, an mpi4py exchange's MPI calls)
and dlion's progress threads (dlion-engine, dlion-peers), as engine_cpu_pct = engine /
training; the mpi4py and local rows show what the idle engine takes meanwhile.
All three apply the gradients the same way (compiled, as DistributedOptimizer does by default;
--eager-apply: Keras' eager apply_gradients for all), so only the exchange differs.
"""

from __future__ import annotations

import argparse
import os
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m dlion.bench train``."""
    p.add_argument("--steps", type=int, default=1000, help="timed steps per exchange")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=64, help="batch size per rank")
    p.add_argument(
        "--exchanges",
        nargs="+",
        default=["dlion", "mpi4py", "local"],
        choices=["dlion", "mpi4py", "local"],
    )
    p.add_argument("--threads", type=int, default=1, help="TF threads per rank")
    p.add_argument(
        "--eager-apply",
        action="store_true",
        help="apply gradients with Keras' eager apply_gradients (default: every "
        "exchange applies inside one tf.function, as DistributedOptimizer does)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="the exchanges take turns in this many blocks of steps/rounds steps",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per row")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; rank 0 prints."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from mpi4py import MPI

    import dlion

    dlion.init()
    from ..quiet import import_tensorflow

    import_tensorflow()
    import keras
    import numpy as np
    import tensorflow as tf

    from . import cpu
    from .report import Report

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    rep = Report(
        [
            ("exchange", "{}"),
            ("ranks", "{}"),
            ("steps_per_s", "{:.1f}"),
            ("samples_per_s", "{:.0f}"),
            ("vs_mpi4py", "{:.3f}"),
            ("train_cpu_s", "{:.2f}"),
            ("engine_cpu_s", "{:.3f}"),
            ("engine_cpu_pct", "{:.1f}"),
            ("final_loss", "{:.3f}"),
        ],
        args.json,
        rank,
    )
    rep.note(
        f"# MLP 784-512-512-10, SGD, batch {args.batch}/rank, {size} ranks, "
        f"{args.steps} steps, {args.threads} TF thread(s)/rank"
    )

    teacher = np.random.default_rng(1234).standard_normal((784, 10)).astype(np.float32)
    rng = np.random.default_rng(rank)
    pool_x = rng.standard_normal((4096, 784)).astype(np.float32)
    pool_y = np.argmax(pool_x @ teacher, axis=1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    steppers = {
        name: _make_stepper(name, args, comm, pool_x, pool_y, loss_fn) for name in args.exchanges
    }
    for step in steppers.values():  # warm-up: tracing, first allocations
        for i in range(args.warmup):
            step(i)
    # Interleave the exchanges in rounds so that drift of a noisy machine hits all alike.
    rounds = max(1, min(args.rounds, args.steps))
    seconds = dict.fromkeys(steppers, 0.0)
    used = {name: {"training": 0.0, "engine": 0.0} for name in steppers}
    last = dict.fromkeys(steppers, 0.0)
    done = 0
    for r in range(rounds):
        n = args.steps * (r + 1) // rounds - done
        for name, step in steppers.items():
            comm.Barrier()
            t, cpu0 = time.perf_counter(), cpu.thread_cpu_seconds()
            for i in range(done, done + n):
                last[name] = step(i) or last[name]
            comm.Barrier()
            seconds[name] += time.perf_counter() - t
            split = cpu.split(cpu0, cpu.thread_cpu_seconds())
            used[name]["training"] += split["training"]
            used[name]["engine"] += split["dlion-engine"] + split["dlion-peers"]
        done += n
    results = {name: args.steps / seconds[name] for name in steppers}
    for name in steppers:
        rep.row(
            {
                "exchange": name,
                "ranks": size,
                "steps_per_s": results[name],
                "samples_per_s": results[name] * args.batch * size,
                "vs_mpi4py": results[name] / results["mpi4py"] if "mpi4py" in results else None,
                "train_cpu_s": used[name]["training"],
                "engine_cpu_s": used[name]["engine"],
                "engine_cpu_pct": 100 * used[name]["engine"] / max(used[name]["training"], 1e-9),
                "final_loss": last[name],
                "steps": args.steps,
                "batch_per_rank": args.batch,
            }
        )
    if "dlion" in results and "mpi4py" in results:
        rep.note(f"# dlion / mpi4py steps/s: {results['dlion'] / results['mpi4py']:.3f}")
    dlion.shutdown()
    return 0


def _make_stepper(name, args, comm, pool_x, pool_y, loss_fn):
    """One model + optimizer for exchange `name`; returns step(i) -> loss (every 100th step)."""
    import keras
    import numpy as np
    import tensorflow as tf
    from mpi4py import MPI

    import dlion

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(512, "relu"),
            keras.layers.Dense(512, "relu"),
            keras.layers.Dense(10),
        ]
    )
    sgd = keras.optimizers.SGD(0.01)
    params = model.trainable_variables
    size = comm.Get_size()
    if name == "dlion":
        dist = dlion.DistributedOptimizer(
            sgd, compile_apply=not args.eager_apply, name=f"bench.{name}"
        )
        apply = dist.apply_gradients
    elif args.eager_apply:
        apply = sgd.apply_gradients
    else:  # the same compiled apply as dlion's, so that only the exchange differs
        sgd.build(params)
        specs = [tf.TensorSpec(p.shape, p.dtype) for p in params]
        compiled = tf.function(lambda gs: sgd.apply(gs, params)).get_concrete_function(specs)

        def apply(pairs):
            return compiled([g for g, _ in pairs])

    @tf.function
    def grads_of(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    def step(i: int) -> float:
        lo = (i * args.batch) % (len(pool_x) - args.batch)
        loss, grads = grads_of(pool_x[lo : lo + args.batch], pool_y[lo : lo + args.batch])
        if name == "mpi4py":  # what a user writes by hand: flatten, Allreduce, split
            flat = np.concatenate([np.asarray(g).reshape(-1) for g in grads])
            comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            flat /= size
            out, off = [], 0
            for p in params:
                n = int(np.prod(p.shape))
                out.append(tf.convert_to_tensor(flat[off : off + n].reshape(p.shape)))
                off += n
            grads = out
        apply(list(zip(grads, params)))
        return float(loss) if i % 100 == 0 else 0.0

    return step
