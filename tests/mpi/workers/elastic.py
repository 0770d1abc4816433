"""Checkpoints restored at another world size and site layout (dlion.checkpoint, elastic=).

save DIR (4 ranks, sites A,A,B,B): 7 steps of a small Keras model (SGD with momentum, a
  top-k rank-to-rank PeerExchange with error feedback, so replicas differ and every link keeps
  a residual), uneven batches (a DynamicBatcher holding 14/10/10/6 of 40), a ShardIterator per
  rank, and a numpy toy under OuterSync (top-k across the site pair, with momentum). Saves
  step 7 and reports everything saved; then spoils its state and loads at the same size with
  elastic="average", reporting whether the restore is exact.
load DIR (3 ranks, sites A,A,B; then ranks 0 and 1 alone, sites A,B): first the loads that
  must fail (elastic="best" without knowledge transfer, another architecture, a missing rank
  file), then the merged restore; reports what was restored, draws the rest of the
  interrupted epoch, and runs one exchange of zeros to show where the folded mass went.
"""

import hashlib
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from _flat_params import FlatParams
from _report import report
from mpi4py import MPI

import dlion
from dlion import checkpoint
from dlion.data import ShardIterator, shard

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
scenario, folder = sys.argv[1], Path(sys.argv[2])
WORLD = MPI.COMM_WORLD.rank
N_SAMPLES, SIZES = 200, [30, 20, 10]
rng0 = np.random.default_rng(0)
X = rng0.standard_normal((N_SAMPLES, 6)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)
ROW = {X[i].tobytes(): i for i in range(N_SAMPLES)}  # the rows are distinct


class Var:
    """A numpy-backed variable (what dlion.checkpoint needs of one)."""

    path = "toy/theta"

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)

    def numpy(self) -> np.ndarray:
        return self.a.copy()

    def assign(self, v) -> None:
        self.a[...] = v


class Toy(FlatParams):
    """OuterSync's parameters: flat tensors of SIZES, read and written by range."""

    def __init__(self) -> None:
        super().__init__(
            np.random.default_rng(5).standard_normal(sum(SIZES)).astype(np.float32), SIZES
        )
        self.variables = [Var(self.flat)]


def build(rank: int, size: int, width: int = 5, seed: int = 11):
    keras.utils.set_random_seed(seed + rank)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(width, activation="relu"), keras.layers.Dense(2)]
    )
    exchange = dlion.PeerExchange("topk", k_ratio=0.1, topology="ranks")
    opt = dlion.DistributedOptimizer(
        keras.optimizers.SGD(0.05, momentum=0.9), name="opt", exchange=exchange
    )
    batcher = dlion.DynamicBatcher(40, exchange=exchange)
    data = ShardIterator(X, Y, shard(N_SAMPLES, rank, size, seed=3), seed=rank)
    outer = dlion.OuterSync(2, codec="topk", bits=32, k_ratio=0.2, momentum=0.9)
    return {
        "model": model,
        "optimizer": opt,
        "data": data,
        "batcher": batcher,
        "exchange": exchange,
        "outer": outer,
        "toy": Toy(),
    }


def lists(arrays) -> list:
    return [np.asarray(a).reshape(-1).tolist() for a in arrays]


def digest(objs: dict) -> str:
    h = hashlib.sha256()
    for name in ("model", "optimizer", "toy"):
        for v in objs[name].variables:
            h.update(np.asarray(v.numpy()).tobytes())
    h.update(repr(objs["data"].state()).encode())
    for name in ("exchange", "outer"):
        for k, v in sorted(objs[name].state().items()):
            if not k.startswith("link:"):
                h.update(k.encode() + np.asarray(v).tobytes())
    return h.hexdigest()


def arrays_of(state: dict, prefix: str) -> dict:
    return {k: np.asarray(v).tolist() for k, v in state.items() if k.startswith(prefix)}


def outcome(fn) -> dict:
    try:
        fn()
        return {"error": None}
    except Exception as e:  # noqa: BLE001 - the test inspects type and text
        return {"error": type(e).__name__, "message": str(e)}


if scenario == "save":
    dlion.init(site="AABB"[WORLD])
    rank, size = dlion.rank(), dlion.size()
    o = build(rank, size)
    model, opt, data, outer, toy = o["model"], o["optimizer"], o["data"], o["outer"], o["toy"]
    o["batcher"].set_state({**o["batcher"].state(), "batches": np.array([14, 10, 10, 6])})
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    a_q = np.random.default_rng(100 + rank).uniform(0.5, 2.0, sum(SIZES)).astype(np.float32)
    b_q = np.random.default_rng(200 + rank).standard_normal(sum(SIZES)).astype(np.float32)
    drawn: list[int] = []
    for _step in range(7):
        x, y = data.next(o["batcher"].local_batch)
        drawn += [ROW[r.tobytes()] for r in x]
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        g = a_q * toy.flat - b_q
        outer.start(g, name="toy.g").wait()
        outer.before_apply(toy, name="toy")
        toy.flat -= np.float32(0.05) * g
        outer.after_apply(toy, name="toy")
    checkpoint.save(folder, 7, **o)
    saved = digest(o)
    record = {
        "weights": lists(v.numpy() for v in model.variables),
        "slots": lists(v.numpy() for v in opt.variables),
        "slot_dtypes": [str(v.dtype) for v in opt.variables],
        "toy": toy.flat.tolist(),
        "exchange": arrays_of(o["exchange"].state(), "residual:"),
        "outer": {
            **arrays_of(outer.state(), "outer:residual:"),
            **arrays_of(outer.state(), "outer:size:"),
            **arrays_of(outer.state(), "anchor:"),
            **arrays_of(outer.state(), "moment:"),
        },
        "drawn": drawn,
        "data": data.state(),
        "batch": o["batcher"].local_batch,
    }
    # Same size, same sites: elastic= is the exact per-rank resume.
    for v in model.variables:
        v.assign(v + 1.0)
    data.next(3)
    toy.flat += 1.0
    ckpt = checkpoint.load(folder, elastic="average", **o)
    record["same_size_exact"] = digest(o) == saved and ckpt.elastic is None
    report(rank, record)
    dlion.shutdown()

elif scenario == "load":
    records: dict = {}
    for label, n, sites in (("three", 3, "AAB"), ("two", 2, "AB")):
        comm = MPI.COMM_WORLD.Split(0 if WORLD < n else MPI.UNDEFINED, WORLD)
        if comm == MPI.COMM_NULL:
            continue
        dlion.init(comm=comm, site=sites[WORLD])
        rank, size = dlion.rank(), dlion.size()
        o = build(rank, size, seed=99)
        rec: dict = {}
        if label == "three":
            before = digest(o)
            rec["best"] = outcome(lambda o=o: checkpoint.load(folder, elastic="best", **o))
            wide = {**o, "model": build(rank, size, width=7)["model"]}
            rec["architecture"] = outcome(
                lambda w=wide: checkpoint.load(folder, elastic="average", **w)
            )
            broken = folder.parent / (folder.name + "-broken")
            if rank == 0:
                shutil.copytree(folder, broken)
                (broken / "step-00000007" / "rank-00003.npz").unlink()
            dlion.barrier()
            rec["missing"] = outcome(
                lambda o=o, b=broken: checkpoint.load(b, elastic="average", **o)
            )
            rec["unchanged"] = digest(o) == before
        ckpt = checkpoint.load(folder, elastic="average", **o)
        assert ckpt.elastic is not None
        ex, outer, data = o["exchange"], o["outer"], o["data"]
        rec.update(
            report=vars(ckpt.elastic),
            weights=lists(v.numpy() for v in o["model"].variables),
            slots=lists(v.numpy() for v in o["optimizer"].variables),
            toy=o["toy"].flat.tolist(),
            pending=arrays_of(ex.state(), "pending:"),
            outer=arrays_of(outer.state(), "outer:pending:"),
            anchors=arrays_of(outer.state(), "anchor:"),
            moments=arrays_of(outer.state(), "moment:"),
            outer_step=outer.step,
            data={k: v for k, v in data.state().items() if k != "order"},
            batches=list(o["batcher"].batches),
            weight=ex.current_weight(),
        )
        # The rest of the interrupted epoch, then the next epoch of this rank's own shard.
        fresh = build(rank, size, seed=99)["data"]
        fresh.set_state(dict(ckpt.state["data"]))
        rec["prefix"] = [int(i) for i in fresh.remaining()]
        drawn = [ROW[r.tobytes()] for r in data.next(len(rec["prefix"]) + 5)[0]]
        rec["drawn"], rec["after"] = drawn[: len(rec["prefix"])], drawn[len(rec["prefix"]) :]
        rec["after_epoch"] = data.local_epoch
        rec["own_shard"] = [int(i) for i in shard(N_SAMPLES, rank, size, seed=3)]
        # One exchange of zeros: the folded mass is in every rank's aggregate or residuals.
        name = next(k for k in rec["pending"]).partition(":")[2]
        buf = np.zeros(len(rec["pending"][f"pending:{name}"]), np.float32)
        ex.start(buf, name=name).wait()
        rec["zero_out"] = buf.tolist()
        rec["zero_residuals"] = arrays_of(ex.state(), "residual:")
        rec["name"] = name
        records[label] = rec
        dlion.shutdown()
        comm.Free()
    report(WORLD, records)

else:
    raise SystemExit(f"unknown scenario {scenario}")
