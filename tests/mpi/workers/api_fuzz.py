"""Fuzz of dlion's public Python API with generated (mostly bad) arguments on real ranks.

Hypothesis runs derandomized, so every rank draws the same examples. An example is one call
(``allreduce``, ``broadcast``, ``allgather``, the object collectives, ``barrier``,
``allreduce_async``, a weighted ``Allreduce`` exchange, ``checkpoint.save``/``load``,
``Config``) with arguments drawn for every rank: the same on all, one field different on one
rank, or all different. Each rank runs its own arguments; then the ranks compare what they got
over plain mpi4py (not through dlion's engine) and check, identically on every rank:

* every error is a typed dlion error (never another exception; a crash ends the job);
* no rank timed out or found the engine stopped (a hang would end the test by its timeout);
* all ranks succeeded or all failed, and those that succeeded got the same result bits;
* arguments that are valid on every rank give the correct result (numpy reference), and
  arguments that are certainly invalid (types, dtypes, ops, roots, names that differ) fail.

Nothing is asserted inside the Hypothesis test (which would make the ranks shrink apart): the
problems are collected and reported; the test asserts there are none. DLION_FUZZ_EXAMPLES sets
the number of examples, DLION_FUZZ_SEED another seed (the same on every rank) for more.
"""

import os
import pickle
import tempfile

import numpy as np
from _fuzz_oracle import expectation, matches, materialize
from _report import report
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from mpi4py import MPI

import dlion
from dlion import checkpoint

dlion.init()
rank, size = dlion.rank(), dlion.size()
comm = MPI.COMM_WORLD
use_tf = os.environ.get("DLION_FUZZ_TF") == "1"
if use_tf:
    import tensorflow as tf
EXAMPLES = int(os.environ.get("DLION_FUZZ_EXAMPLES", "800"))
SEED = int(os.environ.get("DLION_FUZZ_SEED", "0"))  # 0: derandomized; else this seed on every rank
CKPT = tempfile.mkdtemp(prefix="fuzz-ckpt-", dir=os.environ.get("DLION_TEST_OUT"))
CKPT = comm.bcast(CKPT, root=0)  # one directory for the job

DTYPES = ["float32", "float64", "float16", "int32", "int64", "uint8", "bool", "complex64",
          "<U3", "datetime64[s]", "object"]  # fmt: skip
SHAPES = [(), (0,), (1,), (3,), (2, 3), (3, 2), (4, 1)]
OPS = ["average", "sum", "min", "max", "product", "median", "", None, 3, "SUM"]
ROOTS = [0, 1, size - 1, size, -1, 0.0, "0", None, True]
NAMES = ["x", "y", "", "a" * 100, "名前", 5, None]
WEIGHTS = [0.0, 0.5, 1.0, 3.0, 1e30, 1e39, 1e300]
OBJECTS = ["none", "dict", "floats", "ragged", "str", "bigint", "nan", "lambda", "tuple"]
STEPS = [0, 1, 5, -1, 1.5, "3", None, True, 2**40]
CONFIG_VALUES = [float("inf"), float("nan"), -1, 0, 1, 1.5, 1e10, 2**40, "no", "1", True,
                 None, "/nonexistent-dir/t.json", np.float32(2.5), np.int64(4096)]  # fmt: skip
CONFIG_FIELDS = [f for f in dlion.Config.__dataclass_fields__ if f != "emulate"]
FNS = ["allreduce", "allreduce", "broadcast", "broadcast", "allgather", "allgather_object",
       "broadcast_object", "barrier", "allreduce_async", "weighted", "checkpoint",
       "config"]  # fmt: skip

arrays = st.fixed_dictionaries({
    "kind": st.just("array"), "dtype": st.sampled_from(DTYPES), "shape": st.sampled_from(SHAPES),
    "layout": st.sampled_from(["c", "c", "c", "strided", "readonly"]),
    "seed": st.integers(0, 3), "special": st.sampled_from(["", "", "nan", "inf", "huge"]),
    "tf": st.booleans() if use_tf else st.just(False),
})  # fmt: skip
values = st.one_of(arrays, arrays, st.fixed_dictionaries({"kind": st.sampled_from(OBJECTS)}))
good_arrays = st.fixed_dictionaries({
    "kind": st.just("array"), "dtype": st.sampled_from(["float32", "float64", "int64", "bool"]),
    "shape": st.sampled_from([(3,), (2, 3)]), "layout": st.just("c"), "seed": st.integers(0, 3),
    "special": st.just(""), "tf": st.booleans() if use_tf else st.just(False),
})  # fmt: skip


def mostly_good(good, anything):
    """Half the draws valid, so that one perturbed field on one rank is the only fault."""
    return st.one_of(good, anything)


FIELDS = {
    "x": mostly_good(good_arrays, values),
    "op": mostly_good(st.sampled_from(["sum", "min", "max"]), st.sampled_from(OPS)),
    "root": mostly_good(st.sampled_from([0, size - 1]), st.sampled_from(ROOTS)),
    "name": mostly_good(st.just("x"), st.sampled_from(NAMES)),
    "weight": st.sampled_from(WEIGHTS),
    "step": mostly_good(st.sampled_from([1, 2]), st.sampled_from(STEPS)),
    "keep": st.sampled_from([0, 1, 3, -1, "2"]),
    "field": st.sampled_from(CONFIG_FIELDS), "value": st.sampled_from(range(len(CONFIG_VALUES))),
}  # fmt: skip
USES = {  # the arguments each call takes: the fields a perturbation picks from
    "allreduce": ["x", "op", "name"], "allreduce_async": ["x", "op", "name"],
    "broadcast": ["x", "root", "name"], "broadcast_object": ["x", "root", "name"],
    "allgather": ["x", "name"], "allgather_object": ["x", "name"], "barrier": ["name"],
    "weighted": ["x", "weight", "name"], "checkpoint": ["step", "keep"],
    "config": ["field", "value"],
}  # fmt: skip


def run(fn: str, args: dict):
    """This rank's call; returns a picklable result."""
    x = (
        materialize(args["x"], tf if use_tf else None)
        if fn not in ("barrier", "config", "checkpoint")
        else None
    )
    name = args["name"]
    if fn == "allreduce":
        return dlion.allreduce(x, op=args["op"], name=name)
    if fn == "allreduce_async":
        dlion.allreduce_async(x, op=args["op"], name=name).wait()
        return x
    if fn == "broadcast":
        return dlion.broadcast(x, root_rank=args["root"], name=name)
    if fn == "allgather":
        return dlion.allgather(x, name=name)
    if fn == "allgather_object":
        return dlion.allgather_object(x, name=name)
    if fn == "broadcast_object":
        return dlion.broadcast_object(x, root_rank=args["root"], name=name)
    if fn == "barrier":
        return dlion.barrier(name=name)
    if fn == "weighted":
        exchange = dlion.Allreduce(weight=args["weight"])
        exchange.start(x, name=name).wait()
        return x
    if fn == "checkpoint":
        checkpoint.save(CKPT, args["step"], keep=args["keep"], extra={"v": np.arange(3) + rank})
        return checkpoint.load(CKPT, step=args["step"]).state["extra"]["v"]
    value = CONFIG_VALUES[args["value"]]
    config = dlion.Config.from_env({args["field"]: value}, environ={})
    return getattr(config, args["field"])


def plain(value):
    """``value`` with TF tensors (also inside lists) as numpy arrays."""
    if use_tf and tf.is_tensor(value):
        return np.asarray(value.numpy())  # a 0-d tensor's numpy() is a numpy scalar
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _canon(value):
    if isinstance(value, np.generic):  # a numpy scalar: the same value as its 0-d array
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(_canon(v) for v in value))
    return value


def canonical(value) -> bytes:
    """The result's bits, comparable across ranks (arrays by dtype, shape and bytes)."""
    try:
        return pickle.dumps(_canon(plain(value)))
    except Exception:  # noqa: BLE001 - e.g. a lambda given back
        return repr(value).encode()


def outcome(fn: str, args: dict) -> dict:
    try:
        value = run(fn, args)
    except Exception as e:  # noqa: BLE001 - the check below judges it
        return {"ok": False, "error": type(e).__name__, "dlion": isinstance(e, dlion.DlionError),
                "message": str(e)[:300]}  # fmt: skip
    value = plain(value)
    return {"ok": True, "result": canonical(value), "value": value if fn != "config" else None}


problems: list[str] = []
cases = {"examples": 0, "all_ok": 0, "all_failed": 0, "valid": 0, "invalid": 0, "errors": {}}


@settings(
    derandomize=SEED == 0,
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@seed(SEED)
@given(data=st.data())
def test_api(data):
    fn = data.draw(st.sampled_from(FNS))
    base = {k: data.draw(s) for k, s in FIELDS.items()}
    every = [dict(base) for _ in range(size)]
    mode = data.draw(
        st.sampled_from(["same", "same", "one_field", "one_field", "one_field", "all"])
    )
    if mode == "one_field":
        field, who = data.draw(st.sampled_from(USES[fn])), data.draw(st.integers(0, size - 1))
        every[who][field] = data.draw(FIELDS[field])
    elif mode == "all":
        every = [{k: data.draw(s) for k, s in FIELDS.items()} for _ in range(size)]
    if fn == "config":
        every = [dict(every[0]) for _ in range(size)]  # local: the same on every rank
    mine = outcome(fn, every[rank])
    value = mine.pop("value", None)
    seen = comm.allgather(mine)
    verdict, ref = expectation(fn, every, size, rank, tf if use_tf else None)
    where = f"example {cases['examples']} {fn} {mode} {every}"
    cases["examples"] += 1
    cases[verdict] = cases.get(verdict, 0) + 1
    for r, o in enumerate(seen):
        if not o["ok"]:
            cases["errors"][o["error"]] = cases["errors"].get(o["error"], 0) + 1
            if not o["dlion"] and not (fn == "config" and o["error"] == "TypeError"):
                problems.append(
                    f"{where}: rank {r} raised a non-dlion {o['error']}: {o['message']}"
                )
            if o["error"] in ("PeerTimeoutError", "EngineShutdownError"):
                problems.append(f"{where}: rank {r}: {o['error']}: {o['message']}")
    oks = [o["ok"] for o in seen]
    if all(oks):
        cases["all_ok"] += 1
        if fn not in ("checkpoint", "config") and any(
            o["result"] != seen[0]["result"] for o in seen
        ):
            problems.append(f"{where}: ranks got different results")
    elif not any(oks):
        cases["all_failed"] += 1
    else:
        problems.append(f"{where}: some ranks succeeded, others failed: {seen}")
    if verdict == "valid" and not mine["ok"]:
        problems.append(f"{where}: valid arguments failed on rank {rank}: {mine}")
    elif verdict == "valid" and ref is not None and not matches(value, ref):
        problems.append(f"{where}: rank {rank} got {value!r:.200}, expected {ref!r:.200}")
    if verdict == "invalid" and mine["ok"]:
        problems.append(f"{where}: invalid arguments succeeded on rank {rank}")
    if fn == "config" and mine["ok"]:
        v = CONFIG_VALUES[every[0]["value"]]
        hint = dlion.Config.__dataclass_fields__[every[0]["field"]].type
        if hint == "bool" and not isinstance(v, bool | np.bool_):
            problems.append(f"{where}: {v!r} taken for a bool")


test_api()
usable = np.ones(3)
dlion.allreduce(usable, op="sum", name="after")
report(rank, {"cases": cases, "problems": problems[:20], "n_problems": len(problems),
              "usable": bool(np.all(usable == size))})  # fmt: skip
dlion.shutdown()
