"""Direct knowledge transfer (dlion.KnowledgeTransfer) on real ranks; argv[1] is a shared folder.

Every rank trains a small MLP with BatchNorm (Adam, so there are slots) on its own
Fashion-MNIST shard from the same start; rank 1 then gets large random weights (the bad
replica). Then, each part reported under its own key:

merge: one held-out-scored transfer per alpha (1.0, 0.9, 0.5), each from the same snapshot; each
  rank compares its new weights with the numpy reference (the convex combination of its own and
  the best rank's weights where it merged, else its own), measures its distance to the best
  replica before and after, and checks that its optimizer slots did not change.
margin: callable scores set per rank (rank 1 best, rank 0 within the 2% margin, rank 2 far
  worse); then all equal (a tie).
seconds: score="train_loss", unit="seconds": a short training loop, rank 1 reporting bad losses.
checkpoint: the transfer's state through dlion.checkpoint into a fresh KnowledgeTransfer.
failure: scoring raises on rank 1 only; every rank gets the error, naming rank 1.
"""

import sys
import time

import keras
import numpy as np
import tensorflow as tf
from _report import report

import dlion
from dlion import checkpoint, data

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
folder = sys.argv[1]
dlion.init()
rank, size = dlion.rank(), dlion.size()
ds = data.load_fashion_mnist()
x_all, y_all = ds.x_train[:3000].reshape(3000, -1), ds.y_train[:3000]
x_held, y_held = ds.x_test[:256].reshape(256, -1), ds.y_test[:256]
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

keras.utils.set_random_seed(3 + rank)
model = keras.Sequential(
    [
        keras.Input((784,)),
        keras.layers.Dense(32),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(10),
    ]
)
opt = keras.optimizers.Adam(1e-2)
dlion.broadcast_variables(model.weights, root_rank=0)
shard = data.ShardIterator(x_all, y_all, data.shard(len(x_all), rank, size), seed=rank)


@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    opt.apply_gradients(
        zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    )
    return loss


for _ in range(20):
    train_step(*shard.next(32))
if rank == 1:  # the bad replica
    rng = np.random.default_rng(7)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, 3.0, tuple(v.shape)).astype(np.float32))

snapshot = [v.numpy().copy() for v in model.weights]
slots = [v.numpy().copy() for v in opt.variables]
bytes_expected = sum(a.size for a in snapshot) * 4


def restore() -> None:
    for v, a in zip(model.weights, snapshot):
        v.assign(a)


def dist(a: list, b: list) -> float:
    return float(np.sqrt(sum(np.sum((x.astype(np.float64) - y) ** 2) for x, y in zip(a, b))))


def slots_changed() -> float:
    return max(float(np.max(np.abs(v.numpy() - s))) for v, s in zip(opt.variables, slots))


out: dict = {"n_weights": len(model.weights), "n_trainable": len(model.trainable_variables)}

# --- merge --------------------------------------------------------------------------------------
everyone = dlion.allgather_object(snapshot)
merge = {}
for alpha in (1.0, 0.9, 0.5):
    restore()
    kt = dlion.KnowledgeTransfer(5, alpha=alpha, held_out=(x_held, y_held), loss_fn=loss_fn)
    early = kt.maybe_transfer(4, model)
    rep = kt.maybe_transfer(5, model)
    after = [v.numpy() for v in model.weights]
    best = everyone[rep.best_rank]
    if rep.merged:
        want = [alpha * b.astype(np.float64) + (1 - alpha) * o for b, o in zip(best, snapshot)]
    else:
        want = snapshot
    merge[str(alpha)] = {
        "early": early is not None,
        "best": rep.best_rank,
        "scores": list(rep.scores),
        "merged_ranks": list(rep.merged_ranks),
        "merged": rep.merged,
        "bytes": rep.bytes_broadcast,
        "max_err": max(float(np.max(np.abs(a - w))) for a, w in zip(after, want)),
        "scale": max(float(np.max(np.abs(w))) for w in want),
        "dist_before": dist(snapshot, best),
        "dist_after": dist(after, best),
        "slots_changed": slots_changed(),
        "history": len(kt.history),
    }
out["merge"] = merge
out["bytes_expected"] = bytes_expected

# --- margin -------------------------------------------------------------------------------------
restore()
fixed = {0: 1.01, 1: 1.0}.get(rank, 2.0)
kt = dlion.KnowledgeTransfer(1, alpha=1.0, margin=0.02, score=lambda m: fixed)
rep = kt.maybe_transfer(1, model)
after = [v.numpy() for v in model.weights]
tie = dlion.KnowledgeTransfer(1, alpha=1.0, score=lambda m: 0.5).maybe_transfer(1, model)
out["margin"] = {
    "best": rep.best_rank,
    "merged_ranks": list(rep.merged_ranks),
    "bytes": rep.bytes_broadcast,
    "unchanged": all(np.array_equal(a, s) for a, s in zip(after, snapshot)),
    "equal_best": all(np.array_equal(a, b) for a, b in zip(after, everyone[1])),
    "tie_best": tie.best_rank,
    "tie_merged": list(tie.merged_ranks),
    "tie_bytes": tie.bytes_broadcast,
}

# --- seconds + train_loss -----------------------------------------------------------------------
restore()
kt = dlion.KnowledgeTransfer(0.25, unit="seconds", score="train_loss", alpha=1.0)
start = time.monotonic()
for step in range(1, 41):
    loss = float(train_step(*shard.next(32)))
    kt.observe_loss(loss + (100.0 if rank == 1 else 0.0))
    time.sleep(0.02)
    kt.maybe_transfer(step, model)
out["seconds"] = {
    "elapsed": time.monotonic() - start,
    "steps": [r.step for r in kt.history],
    "best": [r.best_rank for r in kt.history],
    "merged_ranks": [list(r.merged_ranks) for r in kt.history],
}

# --- checkpoint ---------------------------------------------------------------------------------
checkpoint.save(folder, 40, kt=kt)
kt2 = dlion.KnowledgeTransfer(0.25, unit="seconds", score="train_loss")
checkpoint.load(folder, kt=kt2)
out["checkpoint"] = {
    "equal": kt2.history == kt.history and kt2.state()["last_step"] == kt.state()["last_step"],
    "n": len(kt2.history),
}

# --- failure ------------------------------------------------------------------------------------


def broken(m):
    if rank == 1:
        raise ValueError("no score here")
    return 1.0


try:
    dlion.KnowledgeTransfer(1, score=broken).maybe_transfer(1, model)
    out["failure"] = "no error"
except dlion.DlionError as e:
    out["failure"] = str(e)

report(rank, out)
dlion.shutdown()
