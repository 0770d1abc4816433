"""Train a small CNN on Fashion-MNIST with dlion, one process per rank.

    mpiexec -n 4 python examples/train.py            # 5 epochs, prints test accuracy
    mpiexec -n 2 python examples/train.py --epochs 1 --batch 32
    mpiexec -n 4 python examples/train.py --dlion --emulate "A-B:20mbit:40ms compute=1,1,0.5,0.5" \
        --sites A,A,B,B                              # DLion on an emulated 2-site micro-cloud
    mpiexec -n 2 python examples/train.py --checkpoint-dir ckpt --checkpoint-every 100 --resume

Each rank trains on its own shard. The exchange is dlion's per-link prioritized exchange
(--exchange perlink, the default: top-k per link sized to the link's measured bandwidth, dense
on fast links), Horovod's dense allreduce (--exchange allreduce), or local steps inside each
site with an outer synchronization across sites every --outer-every steps (--exchange outer);
--compression fp16 sends the dense average in half precision instead (Horovod's compression=).
--batching dynamic sizes each rank's batch to its measured speed (the global batch stays
--batch x ranks); --kt N transfers the best replica's weights to lagging ones every N steps;
--staleness S lets ranks run S steps ahead of the slowest; --emulate SPEC emulates links and
compute speeds (DLION_EMULATE, see dlion/emulate.py); --dlion turns on perlink + dynamic
batching + knowledge transfer.

Rank 0 prints per epoch: loss, test accuracy (evaluated on all ranks, each on a slice of the
test set), wall time, MB sent per link by rank 0, and the batch split. With --checkpoint-dir,
every rank's model, optimizer slots, step and data position are saved (dlion.checkpoint) every
--checkpoint-every steps and at the end; --resume continues from the newest checkpoint, also
one saved by another number of ranks or on other sites (dlion.checkpoint.load(...,
elastic="average"): the weighted replica average, residuals folded, the interrupted epoch
re-sharded; load prints what was merged and folded). `python -m dlion.run` restarts it that
way when ranks come and go (docs/elastic.md).
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
    p.add_argument(
        "--exchange",
        choices=["perlink", "allreduce", "dense", "outer"],
        default="perlink",
        help="gradient exchange; dense: every link carries the dense gradient (the allreduce "
        "average over the peer engine, so emulated links apply to it); outer: local steps "
        "inside each site, outer synchronization across sites every --outer-every steps "
        "(dlion.OuterSync)",
    )
    p.add_argument("--outer-every", type=int, default=25, help="--exchange outer: H")
    p.add_argument(
        "--compression",
        choices=["none", "fp16", "bf16"],
        default="none",
        help="Horovod's compression=: fp16/bf16 send the dense average in half precision "
        "(dlion.CastAllreduce) instead of --exchange",
    )
    p.add_argument("--batching", choices=["fixed", "dynamic"], default="fixed")
    p.add_argument("--kt", type=int, default=0, help="knowledge transfer every N steps (0: off)")
    p.add_argument("--kt-alpha", type=float, default=0.5, help="knowledge transfer merge weight")
    p.add_argument("--staleness", type=int, default=0, help="steps a rank may run ahead")
    p.add_argument(
        "--topology",
        choices=["auto", "sites", "ranks"],
        default="auto",
        help="perlink: site-aware exchange (auto: when there are several sites) or rank to rank",
    )
    p.add_argument("--emulate", default=None, help="DLION_EMULATE spec (links, compute speeds)")
    p.add_argument("--sites", default=None, help="site of each rank, e.g. A,A,B,B (DLION_SITE)")
    p.add_argument(
        "--dlion", action="store_true", help="perlink + dynamic batching + knowledge transfer"
    )
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
    if args.dlion:
        args.exchange, args.batching, args.kt = "perlink", "dynamic", args.kt or 100
    if args.staleness and args.exchange in ("allreduce", "outer"):
        p.error("--staleness needs a peer exchange (--exchange perlink or dense)")
    return args


def main() -> None:
    args = parse_args()
    if args.emulate is not None:
        os.environ["DLION_EMULATE"] = args.emulate  # before init: the link probe sees it
    if args.sites:
        from mpi4py import MPI

        os.environ["DLION_SITE"] = args.sites.split(",")[MPI.COMM_WORLD.Get_rank()]
    import dlion  # imports mpi4py and initialises MPI

    dlion.init()
    threads = args.threads or max(1, (os.cpu_count() or 1) // dlion.local_size())
    from dlion.quiet import import_tensorflow

    import_tensorflow()  # without TF's start-up notices on every rank
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from dlion import checkpoint, data
    from dlion.bench import cpu

    rank, size = dlion.rank(), dlion.size()
    ds = data.load_fashion_mnist(args.data)
    # The last 1000 training samples are the held-out batch of knowledge transfer's score.
    n_train = len(ds.y_train) - 1000
    shard = data.ShardIterator(
        ds.x_train, ds.y_train, data.shard(n_train, rank, size, seed=args.seed), seed=args.seed
    )
    held_out = (ds.x_train[n_train:], ds.y_train[n_train:])
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
    if args.exchange == "perlink":
        exchange: dlion.Exchange = dlion.PerLinkExchange(
            staleness=args.staleness, topology=args.topology
        )
    elif args.exchange == "dense":
        exchange = dlion.PeerExchange("dense", staleness=args.staleness)
    elif args.exchange == "outer":
        exchange = dlion.OuterSync(args.outer_every)
    else:
        exchange = dlion.Allreduce()
    sgd = keras.optimizers.SGD(args.lr, momentum=0.9)
    if args.compression != "none":
        compression = getattr(dlion.Compression, args.compression)
        opt = dlion.DistributedOptimizer(sgd, compression=compression)
        exchange = opt.exchange
    else:
        opt = dlion.DistributedOptimizer(sgd, exchange=exchange)
    dlion.broadcast_variables(model.variables, root_rank=0)
    batcher = None
    if args.batching == "dynamic":
        # clock="auto": wall time, or CPU time where the ranks oversubscribe this host's cores.
        batcher = dlion.DynamicBatcher(args.batch * size, exchange=exchange)
    kt = None
    if args.kt:
        kt = dlion.KnowledgeTransfer(
            args.kt, alpha=args.kt_alpha, held_out=held_out, loss_fn=loss_fn
        )

    spec = [tf.TensorSpec([None, *ds.input_shape], tf.float32), tf.TensorSpec([None], tf.int64)]

    @tf.function(input_signature=spec)
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
    if isinstance(exchange, (dlion.PeerExchange, dlion.OuterSync)):
        state["exchange"] = exchange  # per-link residuals and step counts (OuterSync: anchors)
    if batcher is not None:
        state["batcher"] = batcher
    step = 0
    if args.resume and checkpoint.latest_step(args.checkpoint_dir) is not None:
        # elastic="average": at the saved size and sites the exact per-rank resume; at another
        # (a supervisor restarted the job on the hosts that are left, or on more) the weighted
        # replica average, residuals folded into a pending gradient, the epoch re-sharded; rank 0
        # prints what was merged and folded (ckpt.elastic.summary()).
        ckpt = checkpoint.load(args.checkpoint_dir, elastic="average", **state)
        step = ckpt.step
        if rank == 0:
            saved = ckpt.manifest["world_size"]
            print(
                f"resumed from step {step} ({args.checkpoint_dir}), saved by {saved} ranks, "
                f"now {size}",
                flush=True,
            )

    def save() -> None:
        checkpoint.save(args.checkpoint_dir, step, **state)

    if rank == 0:
        print(
            f"dlion: {size} ranks, sites {dlion.sites()}, exchange {exchange.describe()}, "
            f"batching {args.batching}, knowledge transfer {args.kt or 'off'}, emulate "
            f"{dlion.config().emulate or 'off'}, data {ds.name} from "
            f"{ds.source}, {steps_per_epoch} steps/epoch of {args.batch}x{size} samples, "
            f"{threads} TF thread(s)/rank",
            flush=True,
        )
    start = time.perf_counter()
    losses: list[float] = []
    sent0 = {p: s.bytes_sent for p, s in dlion.link_stats().items()}
    cpu0 = cpu.thread_cpu_seconds()
    transfers = 0
    while step < total:
        b = batcher.local_batch if batcher is not None else args.batch
        x, y = shard.next(b)
        if batcher is not None:
            with batcher.compute():
                loss, grads = grads_of(x, y)
        else:
            with dlion.emulate.slowdown(step):
                loss, grads = grads_of(x, y)
        if step == total - 1 and isinstance(exchange, dlion.PeerExchange):
            exchange.synchronize_next()  # the last step leaves nothing sent unapplied
        opt.apply_gradients(zip(grads, model.trainable_variables))
        if batcher is not None:
            batcher.step_done(len(y))
        losses.append(float(loss))
        step += 1
        if kt is not None and kt.maybe_transfer(step, model) is not None:
            transfers += 1
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            save()
        if step % steps_per_epoch == 0 or step == total:
            mean_loss = dlion.allreduce(np.array([np.mean(losses)]), name="epoch_loss")[0]
            losses = []
            acc = test_accuracy()
            if rank == 0:
                mb = {
                    p: (s.bytes_sent - sent0.get(p, 0)) / 1e6 for p, s in dlion.link_stats().items()
                }
                links = " ".join(f"->{p}:{v:.1f}" for p, v in mb.items()) or "-"
                if exchange.collective:
                    links = "- (collective allreduce)"
                split = batcher.batches if batcher is not None else [args.batch] * size
                print(
                    f"epoch {-(-step // steps_per_epoch)}/{args.epochs}: loss {mean_loss:.4f}  "
                    f"test accuracy {acc:.4f}  wall {time.perf_counter() - start:.1f} s  "
                    f"MB sent per link {links}  batch split {split}"
                    + (f"  transfers {transfers}" if kt is not None else ""),
                    flush=True,
                )
    averaged = not exchange.replicas_identical
    if averaged:
        # A decentralized exchange ends with one replica per rank: make them one model (the
        # weighted mean, weights as in the exchange) before it is evaluated and saved.
        dlion.average_replicas(model, weight=getattr(exchange, "weight", None))
        if rank == 0:
            print(f"averaged the {size} replicas into one model", flush=True)
    just_saved = args.checkpoint_every and step % args.checkpoint_every == 0
    if args.checkpoint_dir and (averaged or not just_saved):
        save()  # the final state (the averaged model), unless the loop just saved it
    wall = time.perf_counter() - start
    used = cpu.split(cpu0, cpu.thread_cpu_seconds())
    acc = test_accuracy()
    cpus = dlion.allgather_object(used)
    if rank == 0:
        print(
            f"final test accuracy {acc:.4f} after {step} steps; wall time {wall:.1f} s", flush=True
        )
        per_rank = "  ".join(
            f"rank {r}: training {c['training']:.1f} s, engine {c['dlion-engine']:.2f} s, "
            f"peers {c['dlion-peers']:.2f} s"
            for r, c in enumerate(cpus)
        )
        print(f"CPU {per_rank}", flush=True)
    dlion.shutdown()


if __name__ == "__main__":
    main()
