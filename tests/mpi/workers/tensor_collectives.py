"""Public collectives on numpy arrays and TF tensors, on real ranks, against local references.

Each rank's input is a function of its rank, so every rank computes the exact expected result.
Checks dtypes, shapes, variable first dimensions, graph mode (tf.function), objects, and that
bad input fails with an error naming the rank and the tensor, on every rank, without a hang.
"""

import numpy as np
import tensorflow as tf
from _report import report

import dlion

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
dlion.init()
rank, size = dlion.rank(), dlion.size()
checks = 0


def value(r: int, shape=(3, 4)) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) % 7 + r + 1).astype(np.float64)


REF = {
    "sum": sum(value(r) for r in range(size)),
    "average": sum(value(r) for r in range(size)) / size,
    "min": np.min([value(r) for r in range(size)], axis=0),
    "max": np.max([value(r) for r in range(size)], axis=0),
    "product": np.prod([value(r) for r in range(size)], axis=0),
}

# allreduce: every op on every dtype it applies to, numpy (in place) and TF (new tensor).
for dtype in ("float32", "float64", "float16", "bfloat16", "int32", "int64", "uint8"):
    for op in ("average", "sum", "min", "max", "product"):
        if op == "average" and dtype.startswith(("int", "uint")):
            continue
        t = tf.constant(value(rank), dtype=dtype)
        out = dlion.allreduce(t, op=op, name=f"t-{dtype}-{op}")
        assert isinstance(out, tf.Tensor) and out.dtype == t.dtype and out.shape == t.shape
        tol = {"float16": 1e-2, "bfloat16": 2e-2}.get(dtype, 1e-6)
        # Integers wrap around like numpy's (uint8 products overflow on 3 ranks).
        want = REF[op].astype(np.int64).astype(dtype) if "int" in dtype else REF[op]
        np.testing.assert_allclose(
            tf.cast(out, tf.float64).numpy(), want, rtol=tol, err_msg=f"{dtype} {op}"
        )
        checks += 1
        if dtype in ("float32", "float64", "int32", "int64", "uint8"):
            a = value(rank).astype(dtype)
            assert dlion.allreduce(a, op=op, name=f"n-{dtype}-{op}") is a  # in place
            np.testing.assert_allclose(a, want, rtol=1e-6)
            checks += 1
flags = tf.constant([True, rank == 0, False])
assert dlion.allreduce(flags, op="max", name="any").numpy().tolist() == [True, True, False]
assert dlion.allreduce(flags, op="min", name="all").numpy().tolist() == [True, size == 1, False]
v = tf.Variable(tf.fill([5], float(rank)))  # a variable in, a tensor out
assert np.allclose(dlion.allreduce(v, op="sum", name="var").numpy(), sum(range(size)))
assert dlion.allreduce(3.0 * rank, op="sum", name="scalar") == 3.0 * sum(range(size))
checks += 4

# allgather: first dimension differs per rank (rank 1 sends nothing), dtypes kept.
for dtype in ("float32", "int64", "bool", "float16"):
    rows = 0 if rank == 1 else rank + 2
    t = tf.cast(tf.fill([rows, 2, 3], rank + 1), dtype)
    got = dlion.allgather(t, name=f"gather-{dtype}")
    want = np.concatenate([np.full([0 if r == 1 else r + 2, 2, 3], r + 1) for r in range(size)])
    assert got.dtype == t.dtype and got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(tf.cast(got, tf.float64).numpy(), want.astype(dtype))
    n = dlion.allgather(np.full((rank + 1,), rank, np.int32), name=f"gather-np-{dtype}")
    assert n.tolist() == [r for r in range(size) for _ in range(r + 1)]
    checks += 2

# broadcast from every root: TF tensors of several dtypes, and numpy in place.
for root in range(size):
    for dtype in ("float32", "int32", "bool", "bfloat16"):
        t = tf.cast(
            tf.range(6) * (rank + 1) > 2 if dtype == "bool" else tf.range(6) * (rank + 1), dtype
        )
        got = dlion.broadcast(t, root_rank=root, name=f"b-{root}-{dtype}")
        exp = tf.range(6) * (root + 1)
        exp = tf.cast(exp > 2 if dtype == "bool" else exp, dtype)
        assert got.dtype == t.dtype and bool(tf.reduce_all(got == exp)), (root, dtype)
        checks += 1

# Objects: tensors come back as tensors, of any shape per rank.
objs = dlion.allgather_object(tf.ones([rank + 1, 2], tf.int64) * rank, name="objs")
assert [tuple(o.shape) for o in objs] == [(r + 1, 2) for r in range(size)]
assert all(isinstance(o, tf.Tensor) and o.dtype == tf.int64 for o in objs)
root_t = dlion.broadcast_object(tf.constant([rank, 7], tf.int32), root_rank=size - 1)
assert isinstance(root_t, tf.Tensor) and root_t.numpy().tolist() == [size - 1, 7]
assert dlion.broadcast_object({"r": rank}, root_rank=0) == {"r": 0}
checks += 3


# Inside a tf.function: the collectives run as py_functions, in data-dependency order.
@tf.function
def graph_step(x):
    s = dlion.allreduce(x, op="sum", name="graph-sum")
    g = dlion.allgather(tf.reshape(s, [1, -1]) * tf.cast(rank + 1, s.dtype), name="graph-gather")
    return dlion.broadcast(g, root_rank=0, name="graph-bcast")


for _ in range(2):
    out = graph_step(tf.fill([4], float(rank)))
    total = sum(range(size))
    np.testing.assert_allclose(out.numpy(), [[total * (r + 1)] * 4 for r in range(size)])
    checks += 1

# Bad input: clear errors naming rank and tensor, raised on every rank (or locally, before
# anything is submitted, when every rank makes the same mistake).
errors = {}
try:
    dlion.allreduce(tf.constant(["a", "b"]), name="names")
except dlion.InvalidArgumentError as e:
    errors["string"] = str(e)
try:
    dlion.allreduce(np.arange(3), op="average", name="ints")
except dlion.InvalidArgumentError as e:
    errors["int_average"] = str(e)
try:
    dlion.allreduce(tf.ones([2]), op="median", name="median")
except dlion.InvalidArgumentError as e:
    errors["op"] = str(e)
try:
    dlion.allgather(tf.ones([2, 3 if rank == size - 1 else 4]), name="ragged")
except dlion.MismatchError as e:
    errors["trailing"] = str(e)
try:
    dlion.allreduce(tf.ones([4 if rank == size - 1 else 5]), op="max", name="shapes")
except dlion.MismatchError as e:
    errors["shape"] = str(e)
dlion.barrier(name="still-usable")
report(rank, {"checks": checks, "errors": errors})
dlion.shutdown()
