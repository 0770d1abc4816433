"""Checkpoints that must not load (issue 18); the scenario is argv[1], the directory argv[2].

save: train one step and save step 1 (model, optimizer, a stateful counter, an extra dict).
spoil KIND [OTHER]: after the save, change the state, spoil the checkpoint on the last rank only
  (KIND: truncate, flip, architecture, set_state, format, unbuilt (truncate, with an optimizer
  not built yet), mixed (a file of the job that saved into OTHER)) and load; every rank reports
  the error and whether its state is exactly as before the load.
spoil_each OTHER KIND...: spoil, one KIND after the other in this one job (one TensorFlow start
  for all), each on a fresh state and on its own copy of the checkpoint, in <directory>/KIND;
  each rank reports {KIND: what spoil reports for it}.
write: save step 1 into the directory as a fresh job (a second job must be refused).
resume_then_write: load the newest checkpoint, then save step 2 (allowed: it resumed).
"""

import hashlib
import json
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from _report import report

import dlion
from dlion import checkpoint

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
scenario, folder = sys.argv[1], Path(sys.argv[2])
kind = sys.argv[3] if len(sys.argv) > 3 and scenario == "spoil" else ""
dlion.init()
rank, size = dlion.rank(), dlion.size()
last = size - 1


class Counter:
    """A stateful entry; its set_state refuses on the last rank in the set_state case."""

    def __init__(self) -> None:
        self.n = 0

    def state(self) -> dict:
        return {"n": self.n}

    def set_state(self, state: dict) -> None:
        if kind == "set_state" and rank == last:
            raise ValueError("this counter refuses to be restored")
        self.n = int(state["n"])


def make_model(width: int = 6) -> keras.Model:
    keras.utils.set_random_seed(1 + rank)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(width), keras.layers.Dense(2)])


def train_step(model: keras.Model, opt: dlion.DistributedOptimizer) -> None:
    x = tf.constant(np.random.default_rng(rank).standard_normal((8, 4)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    opt.apply_gradients(
        zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    )


def digest(model, opt, counter, extra) -> str:
    h = hashlib.sha256()
    for v in [*model.variables, *(opt.variables if opt.built else [])]:
        h.update(np.asarray(v.numpy()).tobytes())
    h.update(json.dumps([counter.n, opt.built, sorted(extra)]).encode())
    for key in sorted(extra):
        h.update(np.asarray(extra[key]).tobytes())
    return h.hexdigest()


def outcome(fn) -> dict:
    try:
        fn()
        return {"error": None}
    except Exception as e:  # noqa: BLE001 - the test inspects type and text
        return {"error": type(e).__name__, "message": str(e)}


def state(width: int = 6):
    model = make_model(width)
    opt = dlion.DistributedOptimizer(
        keras.optimizers.SGD(0.1, momentum=0.9), exchange=dlion.Allreduce()
    )
    return model, opt, Counter(), {"a": np.arange(3.0) + rank}


if scenario in ("save", "write"):
    model, opt, counter, extra = state()
    train_step(model, opt)
    counter.n = 5
    seen = outcome(
        lambda: checkpoint.save(folder, 1, model=model, optimizer=opt, counter=counter, extra=extra)
    )
    report(rank, seen)

elif scenario == "resume_then_write":
    model, opt, counter, extra = state()
    loaded = outcome(
        lambda: checkpoint.load(folder, model=model, optimizer=opt, counter=counter, extra=extra)
    )
    saved = outcome(
        lambda: checkpoint.save(folder, 2, model=model, optimizer=opt, counter=counter, extra=extra)
    )
    report(rank, {"loaded": loaded, "saved": saved})

elif scenario not in ("spoil", "spoil_each"):
    raise SystemExit(f"unknown scenario {scenario}")


def spoil(folder: Path, other: Path) -> dict:
    """Spoil the checkpoint in ``folder`` as ``kind`` says, load it; what the load did."""
    step = folder / "step-00000001"
    mine = step / f"rank-{last:05d}.npz"
    model, opt, counter, extra = state(width=7 if kind == "architecture" and rank == last else 6)
    for v in model.variables:  # other values than the checkpoint's (no exchange: the
        v.assign(v + 1.0)  # architecture case has another model on the last rank)
    if kind != "unbuilt":
        opt.build(model.trainable_variables)
        for v in opt.variables[-2:]:
            v.assign(tf.ones_like(v) * 3)
    counter.n, extra["b"] = 9, np.ones(2)
    dlion.barrier()
    if rank == last and kind in ("truncate", "unbuilt"):
        mine.write_bytes(mine.read_bytes()[:-100])
    elif rank == last and kind == "flip":
        data = bytearray(mine.read_bytes())
        data[len(data) // 2] ^= 0x01
        mine.write_bytes(bytes(data))
    elif rank == last and kind == "mixed":  # a file of another job's checkpoint of this step
        mine.write_bytes((other / "step-00000001" / mine.name).read_bytes())
    elif rank == 0 and kind == "format":
        manifest = json.loads((step / "manifest.json").read_text())
        (step / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))
    dlion.barrier()
    before = digest(model, opt, counter, extra)
    seen = outcome(
        lambda: checkpoint.load(folder, model=model, optimizer=opt, counter=counter, extra=extra)
    )
    return {**seen, "unchanged": digest(model, opt, counter, extra) == before, "built": opt.built}


if scenario == "spoil":
    report(rank, spoil(folder, Path(sys.argv[4]) if len(sys.argv) > 4 else folder))

elif scenario == "spoil_each":
    seen_each = {}
    for kind in sys.argv[4:]:  # the Counter reads the global kind
        seen_each[kind] = spoil(folder / kind, Path(sys.argv[3]))
        dlion.barrier()
    report(rank, seen_each)


dlion.shutdown()
