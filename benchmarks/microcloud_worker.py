"""One rank of the micro-cloud benchmark: trains the same model under each policy in turn.

Run by ``benchmarks/microcloud.py`` (under ``mpiexec``); not meant to be started by hand.
Policy ``reference`` is the no-communication reference: started alone (``mpiexec -n 1``, no
emulation, ``--threads`` = the machine's cores, ``--batch`` = the global batch of the others),
it trains the same model on the same data with the plain Keras optimizer and no exchange.
Every policy starts from the same weights (rank 0's, seed ``--seed``) and the same data split,
and trains until the *training* wall time (evaluation excluded) reaches the budget. Rank 0
decides, every ``CHECK`` steps, whether to evaluate or stop (one small collective, started
then and completed at the next check, so it overlaps training), so every rank evaluates and
stops at the same step. Rank 0 writes the curves to ``--result`` (JSON).

Nothing is charged by hand: under the in-process emulation every collective the policies run
(the exchange, the dynamic batcher's and knowledge transfer's rounds, the optimizer's control
rounds) takes its emulated wide-area time inside dlion (``dlion.emulate_collectives``), and on the
real network the links are real. The harness's own evaluation and control rounds take it too,
but outside the training clock (evaluation) or overlapped with training (the control round
every ``CHECK`` steps).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import microcloud_elastic as elastic
import numpy as np
from microcloud_policies import (
    BATCHED,
    TRANSFERRING,
    check_policy,
    counts_links,
    describe,
    make_exchange,
)

CHECK = 5  # steps between rank 0's evaluate/stop decisions
HELD_OUT = 1000  # last training samples: knowledge transfer's held-out batch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--policies", required=True, help="comma-separated: allreduce,gaia,ako,dlion,outer,..."
    )
    p.add_argument("--budget", type=float, required=True, help="training seconds per policy")
    p.add_argument("--eval-every", type=float, required=True, help="training seconds")
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gaia-threshold", type=float, default=0.01)
    p.add_argument("--gaia-bits", type=int, default=8, help="8 (like DLion's values) or 32")
    p.add_argument("--ako-partitions", type=int, default=4)
    p.add_argument("--kt-every", type=int, default=100)
    p.add_argument("--staleness", type=int, default=0)
    p.add_argument("--dlion-budget", type=float, default=0.0, help="DLion's T (0: default)")
    p.add_argument("--dlion-budget-fraction", type=float, default=0.0, help="0: default")
    p.add_argument("--max-steps", type=int, default=0, help="stop a policy after N steps (0: off)")
    p.add_argument("--stop-at", type=float, default=0.0, help="stop at this test accuracy (0: off)")
    p.add_argument("--threads", type=int, default=1, help="TF intra-op threads of this rank")
    p.add_argument("--outer-every", type=int, default=25, help="outer: inner steps per sync")
    p.add_argument("--outer-lr", type=float, default=0.7, help="outer: outer learning rate")
    p.add_argument("--outer-momentum", type=float, default=0.9, help="outer: Nesterov momentum")
    p.add_argument("--outer-fragments", type=int, default=1, help="outer: streamed fragments")
    p.add_argument("--outer-overlap", type=int, default=0, help="outer: steps a sync overlaps")
    p.add_argument("--outer-bits", type=int, default=4, help="outer: qsgd bits of the deltas")
    p.add_argument("--sites", default=None, help="site of each rank, e.g. A,A,B,B")
    p.add_argument("--data", default=None)
    p.add_argument("--result", required=True)
    # the dynamic scenarios (one policy under python -m dlion.run; microcloud_elastic.py)
    p.add_argument("--journal", default=None, help="rank 0's event journal (JSON lines)")
    p.add_argument("--checkpoint-dir", default=None, help="save there; resume from it")
    p.add_argument("--checkpoint-every", type=int, default=0, help="save every N steps")
    p.add_argument("--topology", default=None, help="emulate this topology's present sites")
    p.add_argument("--global-batch", type=int, default=0, help="fixed at any size (0: batch x n)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.sites:
        from mpi4py import MPI

        os.environ["DLION_SITE"] = args.sites.split(",")[MPI.COMM_WORLD.Get_rank()]
    elastic.check_args(args)
    if args.topology:  # the sites present now (python -m dlion.run's DLION_SITE), before init
        os.environ["DLION_EMULATE"] = elastic.emulate_for(args.topology)
    import dlion

    policies = args.policies.split(",")
    for policy in policies:  # before any training: a missing class fails at once
        check_policy(policy, dlion)
    if "reference" in policies and len(policies) > 1:
        raise SystemExit("policy 'reference' runs alone (np 1, its own launch)")
    dlion.init()
    import keras
    import tensorflow as tf

    if "reference" in policies and dlion.size() != 1:
        raise SystemExit(f"policy 'reference' runs on one process, not {dlion.size()}")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from dlion import data

    rank, size = dlion.rank(), dlion.size()
    ds = data.load_fashion_mnist(args.data)
    n_train = len(ds.y_train) - HELD_OUT
    held_out = (ds.x_train[n_train:], ds.y_train[n_train:])
    test_idx = data.shard(min(args.test_samples, len(ds.y_test)), rank, size, shuffle=False)
    x_test, y_test = ds.x_test[test_idx], ds.y_test[test_idx]
    out: dict[str, Any] = {
        "ranks": size,
        "sites": dlion.sites(),
        "emulate": dlion.config().emulate,
        "data": f"{ds.name} from {ds.source}",
        "threads": args.threads,
        "policies": {},
    }
    for policy in policies:
        ctx = _Run(args, policy, ds, n_train, held_out, x_test, y_test, dlion, keras, tf)
        result = ctx.train()
        if rank == 0:
            out["policies"][policy] = result
            print(
                f"[microcloud] {policy}: {result['steps']} steps in {result['train_s']:.1f} s, "
                f"final accuracy {result['final_accuracy']:.4f}, "
                f"MB/link {result['mb_per_link']}",
                flush=True,
            )
        del ctx
        keras.backend.clear_session()
    if rank == 0:
        with open(args.result, "w") as f:
            json.dump(out, f, indent=1)
    dlion.shutdown()


def past(next_eval: float, train_s: float, every: float) -> float:
    """The first evaluation time of the ``every`` grid after ``train_s`` (from ``next_eval``)."""
    while next_eval <= train_s:
        next_eval += every
    return next_eval


def decide(
    a: argparse.Namespace,
    train_s: float,
    next_eval: float,
    steps: int,
    accuracy: float,
    evaluating: bool,
) -> tuple[float, float]:
    """Rank 0's (evaluate, stop) flags at a check, applied at the next check; ``evaluating``:
    this check evaluates (the previous decision), which moves ``next_eval`` past ``train_s``
    first (else every evaluation would be decided twice). ``accuracy``: the last evaluation's."""
    if evaluating:
        next_eval = past(next_eval, train_s, a.eval_every)
    stop = train_s >= a.budget or bool(a.max_steps and steps >= a.max_steps)
    stop = stop or bool(a.stop_at and accuracy >= a.stop_at)
    return float(train_s >= next_eval or stop), float(stop)


class _Run:
    """One policy's training run on this rank."""

    def __init__(self, args, policy, ds, n_train, held_out, x_test, y_test, dlion, keras, tf):
        self.args, self.policy, self.dlion, self.tf = args, policy, dlion, tf
        self.pending: tuple[Any, np.ndarray] | None = None  # rank 0's decision in flight
        self.x_test, self.y_test = x_test, y_test
        rank, size = dlion.rank(), dlion.size()
        from dlion import data

        self.shard = data.ShardIterator(
            ds.x_train,
            ds.y_train,
            data.shard(n_train, rank, size, seed=args.seed),
            seed=args.seed,
        )
        keras.utils.set_random_seed(args.seed + rank)  # rank 0's weights are broadcast below
        self.model = build_model(keras, ds.input_shape, ds.num_classes)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.exchange = make_exchange(policy, args, self.model, dlion)
        inner = keras.optimizers.SGD(args.lr, momentum=0.9)
        if self.exchange is None:  # the no-communication reference: plain Keras
            self.opt = inner
        else:
            self.opt = dlion.DistributedOptimizer(
                inner, exchange=self.exchange, name=f"mc.{policy}"
            )
        dlion.broadcast_variables(self.model.variables, root_rank=0)
        self.batcher = None
        self.kt = None
        # --global-batch (the dynamic scenarios): the same global batch at any size
        self.local_batch = max(1, args.global_batch // size) if args.global_batch else args.batch
        if policy in BATCHED:
            # clock="auto": wall time (it sees CPU quotas), CPU time where ranks oversubscribe.
            gb = args.global_batch or args.batch * size
            self.batcher = dlion.DynamicBatcher(gb, exchange=self.exchange)
        if policy in TRANSFERRING:
            self.kt = dlion.KnowledgeTransfer(
                args.kt_every, alpha=0.5, held_out=held_out, loss_fn=loss_fn
            )
        spec = [tf.TensorSpec([None, *ds.input_shape], tf.float32), tf.TensorSpec([None], tf.int64)]
        model = self.model

        @tf.function(input_signature=spec)
        def grads_of(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            return loss, tape.gradient(loss, model.trainable_variables)

        @tf.function
        def predict(x):
            return tf.argmax(model(x, training=False), axis=1)

        self.grads_of, self.predict = grads_of, predict
        self.el = elastic.Elastic(args, dlion) if args.journal else None

    # -- pieces -------------------------------------------------------------------------------
    def accuracy(self) -> float:
        correct = np.array(
            [np.sum(self.predict(self.x_test).numpy() == self.y_test), len(self.y_test)], float
        )
        self.dlion.allreduce(correct, op="sum", name=f"mc.{self.policy}.accuracy")
        return float(correct[0] / correct[1])

    def step(self, step: int, last: bool) -> None:
        dlion, b = self.dlion, self.batcher
        x, y = self.shard.next(b.local_batch if b is not None else self.local_batch)
        if b is not None:
            with b.compute():
                _, grads = self.grads_of(x, y)
        else:
            with dlion.emulate.slowdown(step):
                _, grads = self.grads_of(x, y)
        if last:
            self.exchange.synchronize_next()
        self.opt.apply_gradients(zip(grads, self.model.trainable_variables))
        if b is not None:
            b.step_done(len(y))
        if self.kt is not None:
            self.kt.maybe_transfer(step + 1, self.model)

    def control(
        self, train_s: float, next_eval: float, steps: int, accuracy: float
    ) -> tuple[bool, bool]:
        """(evaluate now, stop now), as rank 0 decided at the previous check; starts sending
        its decision of this check (``accuracy`` is the last evaluation's), applied at the
        next one. The decision travels while the next ``CHECK`` steps train, so the harness
        adds no round trip to the training clock (a blocking broadcast every ``CHECK`` steps
        cost a policy with 90 ms steps about 15% of its time on the 40 ms WAN)."""
        previous = self.decided()
        flags = np.zeros(2)
        if self.dlion.rank() == 0:  # a sum where only rank 0 adds anything: its flags
            flags[:] = decide(self.args, train_s, next_eval, steps, accuracy, previous[0])
        handle = self.dlion.allreduce_async(flags, "sum", name=f"mc.{self.policy}.control")
        self.pending = (handle, flags)
        return previous

    def decided(self) -> tuple[bool, bool]:
        """The decision in flight, waited for ((False, False) when none)."""
        if self.pending is None:
            return False, False
        handle, flags = self.pending
        self.pending = None
        handle.wait()
        return bool(flags[0]), bool(flags[1])

    def evaluate(self, curve: list, train_s: float, steps: int) -> float:
        """Append the test accuracy now to ``curve`` (and the journal); its seconds."""
        e0, w0 = time.perf_counter(), time.time()
        acc = self.accuracy()
        curve.append((train_s, steps, acc))
        if self.el is not None:
            self.el.log(
                {"ev": "eval", "wall": w0, "end": time.time(), "step": steps, "accuracy": acc}
            )
        return time.perf_counter() - e0

    # -- the run --------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        dlion, a, el = self.dlion, self.args, self.el
        resumed = el.resume(self) if el is not None else (0, None)  # (step, saved world size)
        curve: list = []
        self.evaluate(curve, 0.0, resumed[0])
        self.step(resumed[0], last=False)  # warm-up (traces the tf.functions), not timed
        sent0 = {p: s.bytes_sent for p, s in dlion.link_stats().items()}
        steps, train_s, eval_s = resumed[0] + 1, 0.0, 0.0
        # the dynamic scenarios: the clock goes on from where the last attempt's left it,
        # recovery included (microcloud_clock.py); the first attempt starts it at 0
        base = el.started(steps, resumed) if el is not None else 0.0
        next_eval = (base // a.eval_every + 1) * a.eval_every
        t0 = time.perf_counter()
        while True:
            self.step(steps, last=False)
            steps += 1
            if el is not None:
                el.maybe_save(self, steps)
            if steps % CHECK:
                continue
            train_s = base + time.perf_counter() - t0 - eval_s
            if el is not None:
                el.log({"ev": "progress", "wall": time.time(), "step": steps})
            evaluate, stop = self.control(train_s, next_eval, steps, curve[-1][2])
            if evaluate:
                eval_s += self.evaluate(curve, train_s, steps)
                next_eval = past(next_eval, train_s, a.eval_every)
            if stop:
                break
        self.decided()  # the decision of the last check (nothing left in flight)
        if callable(getattr(self.exchange, "synchronize_next", None)):
            # peer policies (and the outer synchronization, where it offers it): nothing sent
            # is left unapplied when training ends
            self.step(steps, last=True)
            steps += 1
            train_s = base + time.perf_counter() - t0 - eval_s
            self.evaluate(curve, train_s, steps)
        elif getattr(self.exchange, "overlap", 0) and callable(getattr(self.opt, "flush", None)):
            # OuterSync with overlap: the rounds still in flight are completed and applied
            self.opt.flush()
            train_s = base + time.perf_counter() - t0 - eval_s
            self.evaluate(curve, train_s, steps)
        if el is not None:
            el.log({"ev": "end", "wall": time.time(), "step": steps})
        return self.summary(curve, steps, train_s - base, sent0)

    def summary(self, curve, steps, train_s, sent0) -> dict[str, Any]:
        dlion = self.dlion
        sites, me = dlion.sites(), dlion.rank()
        mine = [
            (p, (s.bytes_sent - sent0.get(p, 0)) / 1e6, sites[p] != sites[me])
            for p, s in dlion.link_stats().items()
        ]
        links = [m for r in dlion.allgather_object(mine) for m in r]
        wan = [mb for _, mb, cross in links if cross]
        lan = [mb for _, mb, cross in links if not cross]
        if not counts_links(self.exchange, dlion):
            links, wan, lan = [], [], []  # the collective engine's bytes are not in link_stats
        return {
            "describe": describe(self.exchange, self.args),
            "curve": [{"t": t, "step": s, "accuracy": acc} for t, s, acc in curve],
            "steps": steps,
            "train_s": train_s,
            "steps_per_s": steps / train_s if train_s > 0 else 0.0,
            "final_accuracy": curve[-1][2],
            "mb_per_link": float(np.mean([mb for _, mb, _ in links])) if links else None,
            "mb_per_wan_link": float(np.mean(wan)) if wan else None,
            "mb_per_site_link": float(np.mean(lan)) if lan else None,
            "batch_split": list(self.batcher.batches) if self.batcher else None,
            "transfers": len(self.kt.history) if self.kt else None,
        }


def build_model(keras: Any, input_shape: tuple, classes: int) -> Any:
    """The CNN of examples/train.py."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(classes),
        ]
    )


if __name__ == "__main__":
    main()
