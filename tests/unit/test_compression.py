"""dlion.Compression: compressors and error feedback compose; nothing is lost."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dlion
from dlion.compression import Compression, ErrorFeedback

LOSSY = {
    "topk": lambda: Compression.topk(0.05),
    "topk_exact": lambda: Compression.topk(0.05, exact=True),
    "topk+qsgd8": lambda: Compression.topk(0.05, values=Compression.qsgd(8)),
    "randomk": lambda: Compression.randomk(0.1, seed=3),
    "qsgd8": lambda: Compression.qsgd(8),
    "qsgd4": lambda: Compression.qsgd(4),
    "qsgd2": lambda: Compression.qsgd(2),
    "sign": Compression.sign,
    "fp16": lambda: Compression.fp16,
    "bf16": lambda: Compression.bf16,
}


@pytest.mark.parametrize("name", sorted(LOSSY))
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3000), steps=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_error_feedback_loses_nothing(name, n, steps, seed):
    ef = Compression.with_memory(LOSSY[name]())
    rng = np.random.default_rng(seed)
    total_in = np.zeros(n, np.float64)
    total_sent = np.zeros(n, np.float64)
    for _ in range(steps):
        g = rng.standard_normal(n).astype(np.float32)
        total_in += g
        total_sent += ef.decompress(ef.compress(g, key="w"))
    np.testing.assert_allclose(total_sent + ef.residual("w"), total_in, rtol=1e-4, atol=1e-4)


def test_topk_wire_size_and_decompress_adds_into_out():
    x = np.arange(-50, 50, dtype=np.float32)
    c = Compression.topk(0.1, exact=True).compress(x)
    assert c.nbytes == 10 * (4 + 4)  # uint32 index + float32 value
    out = np.ones(100, np.float32)
    Compression.topk(0.1, exact=True).decompress(c, out=out)
    kept = np.argsort(-np.abs(x), kind="stable")[:10]
    expect = np.ones(100, np.float32)
    expect[kept] += x[kept]
    np.testing.assert_array_equal(out, expect)


def test_none_is_exact_and_rejects_memory():
    x = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    np.testing.assert_array_equal(Compression.none.decompress(Compression.none.compress(x)), x)
    with pytest.raises(ValueError, match="lossless"):
        Compression.with_memory(Compression.none)


def test_incompatible_combinations_are_rejected():
    with pytest.raises(ValueError, match="only once"):
        ErrorFeedback(Compression.with_memory(Compression.sign()))
    with pytest.raises(ValueError, match="sparse again"):
        Compression.topk(0.1, values=Compression.randomk(0.5))
    with pytest.raises(ValueError, match="ratio"):
        Compression.topk(0.0)
    with pytest.raises(ValueError, match="bits"):
        Compression.qsgd(3)


def test_bad_input_is_a_clear_error():
    with pytest.raises(dlion.InvalidArgumentError, match="float32"):
        Compression.fp16.compress(np.ones(4))
    with pytest.raises(dlion.InvalidArgumentError, match="contiguous"):
        Compression.sign().compress(np.ones((4, 4), np.float32)[:, 0])
    ef = Compression.with_memory(Compression.qsgd(8))
    ef.compress(np.ones(8, np.float32), key="a")
    with pytest.raises(ValueError, match="one key per tensor"):
        ef.compress(np.ones(9, np.float32), key="a")


def test_describe_names_the_composition():
    c = Compression.with_memory(Compression.topk(0.01, values=Compression.qsgd(8)))
    assert c.describe() == "topk(0.01)+qsgd8+ef"
