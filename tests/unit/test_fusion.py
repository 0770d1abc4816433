"""Tensor fusion: pack then unpack returns every gradient exactly; groups respect the limit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")
from dlion.tensorflow import fusion  # noqa: E402

DTYPES = [tf.float16, tf.bfloat16, tf.float32, tf.float64]

shapes = st.lists(st.integers(0, 7), min_size=0, max_size=3).map(tuple)
grads_st = st.lists(
    st.tuples(shapes, st.sampled_from(DTYPES), st.booleans()), min_size=1, max_size=8
)


@settings(max_examples=60, deadline=None)
@given(spec=grads_st, fusion_bytes=st.sampled_from([1024, 64, 1 << 20]), seed=st.integers(0, 99))
def test_pack_unpack_roundtrip(spec, fusion_bytes, seed):
    rng = np.random.default_rng(seed)
    grads = [
        None if none else tf.cast(rng.standard_normal(shape), dtype) for shape, dtype, none in spec
    ]
    names = [f"v{i}" for i in range(len(grads))]
    plan = fusion.plan(grads, names, fusion_bytes)
    out = [None] * len(grads)
    seen = []
    for group in plan.groups:
        buf = plan.pack(grads, group)
        assert buf.dtype in (np.float32, np.float64) and buf.flags.c_contiguous
        if len(group.slots) > 1:
            assert buf.nbytes <= max(fusion_bytes, max(s.size for s in group.slots) * buf.itemsize)
        plan.unpack(group, out)
        seen += [s.index for s in group.slots]
    assert sorted(seen) == [i for i, g in enumerate(grads) if g is not None]
    for g, o in zip(grads, out):
        if g is None:
            assert o is None
            continue
        assert o.dtype == g.dtype and tuple(o.shape) == tuple(g.shape)
        np.testing.assert_array_equal(
            tf.cast(o, tf.float64).numpy(), tf.cast(g, tf.float64).numpy()
        )


def test_signature_follows_layout():
    a = [tf.zeros((3, 4)), tf.zeros((4,))]
    b = [tf.zeros((3, 5)), tf.zeros((4,))]
    names = ["w", "b"]
    assert fusion.plan(a, names, 1 << 20).signature == fusion.plan(a, names, 1 << 20).signature
    assert fusion.plan(a, names, 1 << 20).signature != fusion.plan(b, names, 1 << 20).signature
    assert fusion.plan(a, ["w", "c"], 1 << 20).signature != fusion.plan(a, names, 1 << 20).signature


def test_buffer_is_reused_and_results_do_not_alias_it():
    g = [tf.constant([1.0, 2.0, 3.0])]
    plan = fusion.plan(g, ["w"], 1 << 20)
    (group,) = plan.groups
    out = [None]
    plan.pack(g, group)
    plan.unpack(group, out)
    group.buffer[:] = -7.0  # the next step overwrites the buffer
    np.testing.assert_array_equal(out[0].numpy(), [1.0, 2.0, 3.0])
    assert plan.pack(g, group) is group.buffer
