"""Codec kernels of dlion_core (QSGD, sign, fp16/bf16 casts, error feedback) against numpy."""

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dlion_core as dc
from dlion.errors import InvalidArgumentError

LEVELS = {8: 127, 4: 7, 2: 1}
finite32 = st.floats(-(2.0**100), 2.0**100, width=32, allow_subnormal=True)


def bucket_scales(x, bucket):
    n = x.size
    pad = np.zeros(-n % bucket, np.float32)
    return np.abs(np.concatenate([x, pad])).reshape(-1, bucket).max(axis=1) if n else pad[:0]


def fields(packed, n, bits):
    """Levels by plain bit extraction: element i in bits [i*bits, (i+1)*bits), two's complement."""
    allbits = np.unpackbits(packed, bitorder="little")[: n * bits].reshape(n, bits)
    v = (allbits.astype(np.int64) << np.arange(bits)).sum(axis=1)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v)


@pytest.mark.parametrize("bits", [8, 4, 2])
@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(0, 300), elements=finite32), bucket=st.integers(1, 70))
def test_qsgd_roundtrip_bound_and_layout(bits, x, bucket):
    L = LEVELS[bits]
    packed, scales = dc.qsgd_encode(x, bits, seed=7, bucket=bucket)
    assert packed.dtype == np.uint8 and packed.size == -(-x.size * bits // 8)
    assert scales.dtype == np.float32 and np.array_equal(scales, bucket_scales(x, bucket))
    y = dc.qsgd_decode(packed, scales, x.size, bits, bucket)
    assert y.dtype == np.float32 and y.shape == (x.size,)
    scale = np.repeat(scales, bucket)[: x.size].astype(np.float64)
    err = np.abs(y.astype(np.float64) - x)
    assert np.all(err <= scale / L * (1 + 1e-5) + 1e-44)
    q = fields(packed, x.size, bits)
    assert np.all(np.abs(q) <= L)
    assert np.all((q == 0) | (np.sign(q) == np.sign(x)))
    on_level = (x == 0) | (np.abs(x) == scale)
    assert np.array_equal(y[on_level], x[on_level])
    if x.size * bits % 8:
        assert packed[-1] >> (x.size * bits % 8) == 0  # unused bits are zero


def test_qsgd_bit_layout():
    x = np.array([1, -1, 0, 1, -1], np.float32)  # every value on a level
    assert dc.qsgd_encode(x, 8, 0)[0].view(np.int8).tolist() == [127, -127, 0, 127, -127]
    # 4 bits: element 2j in the low nibble; -7 = 0b1001
    assert dc.qsgd_encode(x, 4, 0)[0].tolist() == [0x97, 0x70, 0x09]
    # 2 bits: element 4j+k in bits 2k..2k+1; -1 = 0b11
    assert dc.qsgd_encode(x, 2, 0)[0].tolist() == [0b01001101, 0b11]


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_qsgd_unbiased(bits):
    rng = np.random.default_rng(bits)
    x = rng.standard_normal(256).astype(np.float32)
    reps = 2000
    total = np.zeros(x.size)
    for seed in range(reps):
        total += dc.qsgd_decode(*dc.qsgd_encode(x, bits, seed, 64), x.size, bits, 64)
    step = np.repeat(bucket_scales(x, 64), 64) / LEVELS[bits]
    # per element: variance <= step^2 / 4; allow 5 standard errors
    assert np.all(np.abs(total / reps - x) <= 5 * 0.5 * step / np.sqrt(reps) + 1e-7)


def test_qsgd_deterministic_per_seed_and_default_bucket():
    x = np.random.default_rng(0).standard_normal((30, 70)).astype(np.float32)  # any shape
    a, sa = dc.qsgd_encode(x, 4, 123)
    b, sb = dc.qsgd_encode(x, 4, 123)
    c, _ = dc.qsgd_encode(x, 4, 124)
    assert np.array_equal(a, b) and np.array_equal(sa, sb) and not np.array_equal(a, c)
    assert sa.size == -(-x.size // 512)


def test_qsgd_tiny_and_zero_buckets():
    x = np.zeros(1024, np.float32)
    x[600:610] = np.float32(1e-40) * np.arange(10)  # subnormal bucket
    packed, scales = dc.qsgd_encode(x, 8, 1)
    assert scales[0] == 0 and scales[1] == x[609]
    y = dc.qsgd_decode(packed, scales, x.size, 8)
    assert np.all(y[:512] == 0) and np.all(np.abs(y - x) <= scales[1] / 127 * 1.01)


def test_sign_roundtrip():
    x = np.array([1.5, -2.0, 0.0, -0.0, 3.0, -0.5, 2.0, 1.0, -1.0], np.float32)
    bits, scale = dc.sign_encode(x)
    assert bits.dtype == np.uint8 and bits.tolist() == [0b11011101, 0]
    assert scale == pytest.approx(np.abs(x).mean())
    y = dc.sign_decode(bits, scale, x.size)
    assert np.array_equal(y, np.where(x >= 0, np.float32(scale), np.float32(-scale)))
    big = np.random.default_rng(1).standard_normal(10001).astype(np.float32)
    b2, s2 = dc.sign_encode(big)
    assert np.array_equal(np.unpackbits(b2, bitorder="little")[: big.size], big >= 0)
    assert s2 == np.float32(np.abs(big.astype(np.float64)).mean())


def cast_inputs():
    rng = np.random.default_rng(3)
    halves = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    mids = (halves[:-1] + halves[1:]) / 2  # exact ties, in float32
    special = [0.0, -0.0, np.inf, -np.inf, 65504, 65519.99, 65520, 1e30, 6e-8, 3e-8, 1e-45]
    rand = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([halves, mids, special]).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), -x, rand[np.isfinite(rand)]])
    return x.astype(np.float32)


def bf16_reference(x):
    u = x.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), (u >> 16).astype(np.uint16) | 0x40, rounded)


def test_fp16_matches_numpy_bit_for_bit():
    x = cast_inputs()
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16)
    h = dc.to_fp16(x)
    assert h.dtype == np.float16 and np.array_equal(h.view(np.uint16), ref.view(np.uint16))
    every = np.arange(65536, dtype=np.uint16).view(np.float16)
    back = dc.from_fp16(every)
    assert np.array_equal(back.view(np.uint32), every.astype(np.float32).view(np.uint32))
    nan = dc.to_fp16(np.array([np.nan, -np.nan], np.float32))
    assert np.all(np.isnan(nan)) and np.signbit(nan).tolist() == [False, True]


def test_bf16_matches_reference():
    x = np.concatenate([cast_inputs(), np.array([np.nan, 3.4028235e38], np.float32)])
    b = dc.to_bf16(x)
    assert b.dtype == np.uint16 and np.array_equal(b, bf16_reference(x))
    assert np.isnan(dc.from_bf16(b[-2:-1]))[0] and dc.from_bf16(b[-1:])[0] == np.inf
    assert np.array_equal(dc.from_bf16(b).view(np.uint32), b.astype(np.uint32) << 16)


def test_casts_keep_shape_and_fill_out():
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    assert dc.to_fp16(x).shape == (3, 5) and dc.from_bf16(dc.to_bf16(x)).shape == (3, 5)
    out = np.empty(15, np.float32)
    assert dc.from_fp16(dc.to_fp16(x), out=out) is out
    with pytest.raises(InvalidArgumentError, match="out"):
        dc.from_fp16(dc.to_fp16(x), out=np.empty(14, np.float32))


@pytest.mark.parametrize("sparse_every", [0, 3])
def test_error_feedback_loses_nothing(sparse_every):
    rng = np.random.default_rng(sparse_every)
    n = 5000
    residual = np.zeros(n, np.float32)
    total_in, total_sent = np.zeros(n), np.zeros(n)
    for step in range(20):
        g = rng.standard_normal(n).astype(np.float32)
        total_in += g
        dc.ef_compensate(residual, g)
        if sparse_every and step % sparse_every == 0:
            idx = np.flatnonzero(rng.random(n) < 0.1).astype(np.uint32)  # top-k-like set
            total_sent[idx] += residual[idx]
            dc.ef_after_sparse(residual, idx)
        else:
            sent = dc.qsgd_decode(*dc.qsgd_encode(residual, 4, step), n, 4)
            total_sent += sent
            dc.ef_after_dense(residual, sent)
    np.testing.assert_allclose(total_sent + residual, total_in, atol=1e-4)


def test_empty_inputs():
    x = np.zeros(0, np.float32)
    packed, scales = dc.qsgd_encode(x, 4, 0)
    assert packed.size == 0 and scales.size == 0
    assert dc.qsgd_decode(packed, scales, 0, 4).size == 0
    bits, scale = dc.sign_encode(x)
    assert bits.size == 0 and scale == 0.0 and dc.sign_decode(bits, scale, 0).size == 0
    assert dc.to_fp16(x).size == 0 and dc.from_bf16(np.zeros(0, np.uint16)).size == 0
    dc.ef_after_sparse(x.copy(), np.zeros(0, np.uint32))


def test_invalid_arguments():
    x = np.ones(10, np.float32)
    with pytest.raises(InvalidArgumentError, match="bits must be 2, 4 or 8"):
        dc.qsgd_encode(x, 3, 0)
    with pytest.raises(InvalidArgumentError, match="bucket"):
        dc.qsgd_encode(x, 8, 0, bucket=0)
    packed, scales = dc.qsgd_encode(x, 8, 0)
    with pytest.raises(InvalidArgumentError, match="packed has 10 elements, expected 11"):
        dc.qsgd_decode(packed, scales, 11, 8)
    with pytest.raises(InvalidArgumentError, match="float32.*astype"):
        dc.qsgd_encode(x.astype(np.float64), 8, 0)
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        dc.sign_encode(np.ones((4, 4), np.float32)[:, ::2])
    with pytest.raises(InvalidArgumentError, match="float16"):
        dc.from_fp16(x)
    with pytest.raises(InvalidArgumentError, match="uint32"):
        dc.ef_after_sparse(x, np.array([1], np.int64))
    with pytest.raises(InvalidArgumentError, match=r"idx\[1\] = 10 is out of range"):
        dc.ef_after_sparse(x, np.array([1, 10], np.uint32))
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(InvalidArgumentError, match="read-only"):
        dc.ef_compensate(ro, x)
    with pytest.raises(InvalidArgumentError, match="grad has 9 elements"):
        dc.ef_compensate(x, x[:9])


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "inf")])
def test_non_finite_input_names_the_index(bad, word):
    x = np.ones(2000, np.float32)
    x[1234] = bad
    x[1500] = np.nan
    for encode in (lambda: dc.qsgd_encode(x, 8, 0), lambda: dc.sign_encode(x)):
        with pytest.raises(InvalidArgumentError, match=rf"x\[1234\] is {word}"):
            encode()


def test_read_only_input_is_used_without_copy():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    x.flags.writeable = False
    packed, scales = dc.qsgd_encode(x, 8, 0)
    bits, _ = dc.sign_encode(x)
    assert dc.to_fp16(x).size == 1000 and dc.to_bf16(x).size == 1000
    packed.flags.writeable = False
    scales.flags.writeable = False
    assert dc.qsgd_decode(packed, scales, 1000, 8).size == 1000
    residual = np.zeros(1000, np.float32)
    dc.ef_compensate(residual, x)
    assert np.array_equal(residual, x)


def test_qsgd_encode_into_existing_arrays_matches_and_checks_sizes():
    x = np.random.default_rng(5).standard_normal(3000).astype(np.float32)
    packed, scales = dc.qsgd_encode(x, 4, 9, 512)
    p2, s2 = np.zeros_like(packed), np.zeros_like(scales)
    r = dc.qsgd_encode(x, 4, 9, 512, packed_out=p2, scales_out=s2)
    assert r[0] is p2 and r[1] is s2
    np.testing.assert_array_equal(p2, packed)
    np.testing.assert_array_equal(s2, scales)
    with pytest.raises(InvalidArgumentError, match="out"):
        dc.qsgd_encode(x, 4, 9, 512, packed_out=np.zeros(packed.size + 1, np.uint8))


# Both instruction-set variants of the kernels, via the binding that dlion.init uses.
SIMD_MODES = ["auto", "baseline"]


@contextlib.contextmanager
def simd_mode(mode):
    dc.set_simd(mode)
    try:
        if mode == "baseline":
            assert dc.simd() == "baseline"
        yield
    finally:
        dc.set_simd("auto")


SPECIAL32 = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 65504, 65519.99, 65520, -65520, 1e30, 6e-8, 3e-8]
    + [2.0**-24, 2.0**-25, 1.5 * 2.0**-25, 2.0**-14, 2.0**-14 - 2.0**-25, 1e-45, 3.4028235e38],
    np.float32,
)
any32 = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda u: np.uint32(u).view(np.float32)),
    st.sampled_from(SPECIAL32),
    st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
)


def fp16_reference(x):
    """numpy's astype(float16) (round to nearest even) for non-NaN; for NaN the documented
    quiet NaN 0x7e00 | sign | payload >> 13 (numpy keeps the payload without the quiet bit)."""
    u = x.view(np.uint32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float16).view(np.uint16)
    nan = ((u >> 16) & 0x8000) | 0x7E00 | ((u >> 13) & 0x3FF)
    return np.where(np.isnan(x), nan.astype(np.uint16), h)


@pytest.mark.parametrize("mode", SIMD_MODES)
@settings(max_examples=150, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(0, 70), elements=any32))
def test_fp16_bits_match_numpy_on_both_paths(mode, x):
    with simd_mode(mode):
        h = dc.to_fp16(x)
    assert np.array_equal(h.view(np.uint16), fp16_reference(x))


def sign_reference(x):
    """Bits (1: x >= 0, packed little-endian) and mean |x| summed as the kernel documents it:
    8 double accumulators, lane j adding x[j], x[j + 8], ... in order, then lanes 0..7."""
    pad = np.zeros(-x.size % 8, np.float64)
    lanes = np.abs(np.concatenate([x.astype(np.float64), pad])).reshape(-1, 8)
    total = 0.0
    for j in range(8):
        total += float(np.cumsum(lanes[:, j])[-1]) if lanes.size else 0.0  # cumsum: sequential
    scale = np.float32(total / x.size) if x.size else np.float32(0)
    return np.packbits(x >= 0, bitorder="little"), scale


finite_any32 = any32.filter(lambda v: np.isfinite(v))


@pytest.mark.parametrize("mode", SIMD_MODES)
@settings(max_examples=150, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(0, 140), elements=finite_any32))
def test_sign_matches_numpy_reference_on_both_paths(mode, x):
    with simd_mode(mode):
        bits, scale = dc.sign_encode(x)
    ref_bits, ref_scale = sign_reference(x)
    assert np.array_equal(bits, ref_bits)
    assert np.float32(scale).view(np.uint32) == ref_scale.view(np.uint32)


@pytest.mark.parametrize("bits", [8, 4, 2])
@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(0, 600), elements=finite32),
    bucket=st.integers(1, 600),
    seed=st.integers(0, 2**64 - 1),
    tiny=st.booleans(),
)
def test_qsgd_paths_give_the_same_bytes(bits, x, bucket, seed, tiny):
    if tiny:  # scales below 2^-96 take the pre-scaled path
        x = (x * np.float32(2.0**-110)).astype(np.float32)
    out = {}
    for mode in SIMD_MODES:
        with simd_mode(mode):
            packed, scales = dc.qsgd_encode(x, bits, seed, bucket)
        out[mode] = (packed.tobytes(), scales.tobytes())
        q = fields(packed, x.size, bits)
        assert np.all(np.abs(q) <= LEVELS[bits])
    assert out["auto"] == out["baseline"]


@pytest.mark.parametrize("bits", [8, 2])
def test_qsgd_rounds_up_with_probability_frac(bits):
    """One value between two levels, many seeds: the share rounded up is v - floor(v)."""
    L = LEVELS[bits]
    x = np.full(4096, 0.3, np.float32)
    x[0] = 1.0  # scale 1: v = 0.3 * L
    v = 0.3 * L
    ups = 0
    reps = 50
    for seed in range(reps):
        q = fields(dc.qsgd_encode(x, bits, seed, x.size)[0], x.size, bits)[1:]
        assert set(np.unique(q)) <= {int(np.floor(v)), int(np.floor(v)) + 1}
        ups += int(np.sum(q == np.floor(v) + 1))
    trials = reps * (x.size - 1)
    p = v - np.floor(v)
    assert abs(ups / trials - p) <= 5 * np.sqrt(p * (1 - p) / trials)
