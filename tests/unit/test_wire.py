"""Wire format (csrc/wire): round trips of every encoding against numpy references, and
rejection of every corrupted, truncated, misaddressed or malformed message, leaving out untouched.
Sparse encodings are tested in both forms: explicit indices, and CONTIGUOUS (one run of
consecutive indices sent as its first one only, format.h section 5).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dlion
import dlion_core as dc
from dlion.errors import DlionError, ProtocolError

ENC = dc.WIRE_ENCODINGS
GRADIENT = dc.WIRE_KINDS["gradient"]
SENDER, GROUP, STEP = 3, 11, 42
CONTIGUOUS = dc.WIRE_FLAG_CONTIGUOUS
# (encoding name, qsgd bits) for every encoding the format has; ":run" is a sparse encoding
# carrying one run of consecutive indices (flags CONTIGUOUS).
CASES = [
    ("dense_f32", 0),
    ("sparse_f32", 0),
    ("sparse_qsgd8", 0),
    ("sparse_f32:run", 0),
    ("sparse_qsgd8:run", 0),
    ("qsgd", 8),
    ("qsgd", 4),
    ("qsgd", 2),
    ("sign", 0),
    ("fp16", 0),
    ("bf16", 0),
]


def make(name: str, bits: int, n: int, seed: int, weight: float = 0.5, bucket: int = 7):
    """A valid message of this encoding for a random x, and its decoded dense reference."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    k = max(n // 3, min(n, 1))
    ref = np.zeros(n, np.float32)
    name, _, form = name.partition(":")
    enc = ENC[name]
    if form == "run":  # entries n // 3 .. n // 3 + k - 1, with n // 3 + k <= n
        first = n // 3 if n // 3 + k <= n else 0
        idx = np.arange(first, first + k, dtype=np.uint32)
        return make_sparse(name, n, idx, x[idx], weight, seed, bucket)

    def encode(*arrays, **kw):
        return dc.wire_encode(GRADIENT, SENDER, STEP, GROUP, enc, n, weight, *arrays, **kw)

    if name == "dense_f32":
        return encode(x), x
    if name == "sparse_f32":
        idx, val = dc.topk(x, k)
        ref[idx] = val
        return encode(idx, val), ref
    if name == "sparse_qsgd8":
        idx, val = dc.topk(x, k)
        levels, scales = dc.qsgd_encode(val, 8, seed, bucket)
        ref[idx] = dc.qsgd_decode(levels, scales, k, 8, bucket)
        return encode(idx, levels, scales, bucket=bucket), ref
    if name == "qsgd":
        packed, scales = dc.qsgd_encode(x, bits, seed, bucket)  # type: ignore[arg-type]
        ref = dc.qsgd_decode(packed, scales, n, bits, bucket)  # type: ignore[arg-type]
        return encode(packed, scales, bits=bits, bucket=bucket), ref
    if name == "sign":
        signs, scale = dc.sign_encode(x)
        return encode(signs, np.array([scale], np.float32)), dc.sign_decode(signs, scale, n)
    to, back = (dc.to_fp16, dc.from_fp16) if name == "fp16" else (dc.to_bf16, dc.from_bf16)
    h = to(x)
    return encode(h), back(h)


def make_sparse(name, n, idx, val, weight=0.5, seed=0, bucket=7, contiguous=None):
    """A sparse message carrying (idx, val) and its decoded dense reference (numpy)."""
    ref = np.zeros(n, np.float32)
    arrays: tuple = (idx, val)
    if name == "sparse_qsgd8":
        levels, scales = dc.qsgd_encode(val, 8, seed, bucket)
        val = dc.qsgd_decode(levels, scales, idx.size, 8, bucket)
        arrays = (idx, levels, scales)
    ref[idx] = val
    msg = dc.wire_encode(
        GRADIENT,
        SENDER,
        STEP,
        GROUP,
        ENC[name],
        n,
        weight,
        *arrays,
        bucket=bucket,
        contiguous=contiguous,
    )
    return msg, ref


def apply(
    msg: bytes,
    out: np.ndarray,
    expected_sender: int = SENDER,
    group: int = GROUP,
    n: int | None = None,
    weight: float | None = None,
) -> dict:
    size = out.size if n is None else n
    return dc.wire_apply(msg, expected_sender, group, size, out, weight)


@pytest.mark.parametrize("name,bits", CASES)
@pytest.mark.parametrize("n", [0, 1, 5, 64, 1000, 40_000])
def test_round_trip(name, bits, n):
    msg, ref = make(name, bits, n, seed=n + bits)
    base = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    out = base.copy()
    h = apply(msg, out)
    np.testing.assert_allclose(out, base + np.float32(0.5) * ref, rtol=1e-6, atol=1e-6)
    assert (h["kind"], h["sender"], h["step"], h["group"]) == (GRADIENT, SENDER, STEP, GROUP)
    base_name, _, form = name.partition(":")
    assert (h["encoding"], h["n"], h["weight"]) == (ENC[base_name], n, 0.5)
    if form == "run" or (base_name.startswith("sparse") and n <= 5):  # k <= 1: a run too
        assert h["flags"] == (CONTIGUOUS if h["k"] else 0), h
    else:
        assert h["flags"] == 0 and h["first"] is None, h
    assert len(msg) == dc.WIRE_HEADER_BYTES + h["payload_bytes"]
    assert h["payload_bytes"] == dc.wire_payload_bytes(
        h["encoding"], n, h["k"], h["bits"], h["bucket"], h["flags"]
    )
    out2 = base.copy()
    apply(msg, out2, weight=2.0)  # an explicit weight overrides the header's
    np.testing.assert_allclose(out2, base + 2 * ref, rtol=1e-6, atol=1e-6)


def test_header_layout():
    msg, _ = make("dense_f32", 0, 4, seed=0, weight=0.25)
    fields = struct.unpack_from("<4sHHIIQHBBfQQQQ", msg)
    assert fields[:-1] == (b"DLN1", 2, GRADIENT, SENDER, GROUP, STEP, 1, 32, 0, 0.25, 4, 4, 16)
    assert dc.WIRE_VERSION == 2
    zeroed = msg[:56] + bytes(8) + msg[64:]
    assert fields[-1] == dc.wire_checksum(zeroed)


def test_contiguous_header_and_payload_layout():
    # sparse_f32, n = 10, entries 4, 5, 6: header flags 1, payload u32 first, f32 values[3]
    idx = np.array([4, 5, 6], np.uint32)
    val = np.array([1.5, -2.0, 0.25], np.float32)
    msg, _ = make_sparse("sparse_f32", 10, idx, val)
    fields = struct.unpack_from("<4sHHIIQHBBfQQQQ", msg)
    assert fields[:-1] == (b"DLN1", 2, GRADIENT, SENDER, GROUP, STEP, 2, 32, 1, 0.5, 10, 3, 16)
    assert struct.unpack_from("<I3f", msg, 64) == (4, 1.5, -2.0, 0.25) and len(msg) == 64 + 16
    # sparse_qsgd8, bucket 2: u32 bucket, u32 first, f32 scales[2], i8 levels[3]
    msg, _ = make_sparse("sparse_qsgd8", 10, idx, val, bucket=2)
    fields = struct.unpack_from("<4sHHIIQHBBfQQQQ", msg)
    assert fields[6:9] == (3, 8, 1) and fields[12] == 4 + 4 + 8 + 3 == len(msg) - 64
    assert struct.unpack_from("<II2f", msg, 64) == (2, 4, 2.0, 0.25)
    # the same indices as an explicit idx[3] section (flags 0): 4 * 3 bytes more
    explicit, _ = make_sparse("sparse_f32", 10, idx, val, contiguous=False)
    assert explicit[27] == 0 and len(explicit) == 64 + 24
    assert struct.unpack_from("<3I3f", explicit, 64) == (4, 5, 6, 1.5, -2.0, 0.25)


def test_checksum_reference_vectors():
    # XXH64 (seed 0) reference values.
    assert dc.wire_checksum(b"") == 0xEF46DB3751D8E999
    assert dc.wire_checksum(b"a") == 0xD24EC4F1A98C6E5B
    assert dc.wire_checksum(b"abc") == 0x44BC2CF5AD770999


def test_protocol_error_is_exported():
    assert dlion.ProtocolError is ProtocolError and issubclass(ProtocolError, DlionError)
    assert "ProtocolError" in dlion.__all__


def assert_rejected(msg, out, *field_words, **kw):
    before = out.copy()
    with pytest.raises(ProtocolError) as info:
        apply(msg, out, **kw)
    text = str(info.value)
    assert f"from rank {kw.get('expected_sender', SENDER)}" in text and "not applied" in text
    for word in field_words:
        assert word in text, text
    assert out.tobytes() == before.tobytes()


cases = st.sampled_from(CASES)


@settings(max_examples=1000, deadline=None)
@given(case=cases, n=st.integers(1, 40), seed=st.integers(0, 2**16), data=st.data())
def test_any_single_byte_change_is_rejected(case, n, seed, data):
    msg, _ = make(*case, n=n, seed=seed)
    pos = data.draw(st.integers(0, len(msg) - 1), label="pos")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != msg[pos]), label="byte")
    bad = msg[:pos] + bytes([new]) + msg[pos + 1 :]
    out = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    assert_rejected(bad, out)


@settings(max_examples=300, deadline=None)
@given(case=cases, n=st.integers(0, 40), seed=st.integers(0, 2**16), data=st.data())
def test_truncated_or_extended_is_rejected(case, n, seed, data):
    msg, _ = make(*case, n=n, seed=seed)
    if data.draw(st.booleans(), label="truncate"):
        bad = msg[: data.draw(st.integers(0, len(msg) - 1), label="len")]
    else:
        bad = msg + data.draw(st.binary(min_size=1, max_size=16), label="extra")
    out = np.ones(n, np.float32)
    assert_rejected(bad, out)


@pytest.mark.parametrize("name,bits", CASES)
def test_wrong_sender_group_or_n(name, bits):
    msg, _ = make(name, bits, 10, seed=1)
    out = np.zeros(10, np.float32)
    assert_rejected(msg, out, "sender is 3", "expected 4", expected_sender=4)
    assert_rejected(msg, out, "group is 11", "expected 12", group=12)
    out9 = np.zeros(9, np.float32)
    assert_rejected(msg, out9, "n is 10", "expected 9", n=9)


def sparse_msg(name: str, idx: list[int], n: int = 10) -> bytes:
    i = np.array(idx, np.uint32)
    v = np.ones(len(idx), np.float32)
    if name == "sparse_f32":
        return dc.wire_encode(GRADIENT, SENDER, STEP, GROUP, ENC[name], n, 1.0, i, v)
    levels, scales = dc.qsgd_encode(v, 8, 0, 4)
    return dc.wire_encode(
        GRADIENT, SENDER, STEP, GROUP, ENC[name], n, 1.0, i, levels, scales, bucket=4
    )


@pytest.mark.parametrize("name", ["sparse_f32", "sparse_qsgd8"])
@pytest.mark.parametrize(
    "idx,words",
    [
        ([1, 10], ["idx[1] is 10", "< n = 10"]),
        ([0, 2**32 - 1], ["idx[1] is 4294967295"]),
        ([5, 2], ["idx[1] is 2", "strictly increasing"]),
        ([3, 3], ["idx[1] is 3", "strictly increasing"]),
    ],
)
def test_bad_indices_rejected_despite_checksum(name, idx, words):
    out = np.zeros(10, np.float32)
    assert_rejected(sparse_msg(name, idx), out, *words)
    apply(sparse_msg(name, [0, 9]), out)  # the same message with good indices applies
    assert out[0] == out[9] == 1 and out.sum() == 2


def test_sender_arguments_are_checked():
    x = np.zeros(4, np.float32)
    with pytest.raises(dlion.InvalidArgumentError):
        dc.wire_encode(GRADIENT, 0, 0, 0, ENC["dense_f32"], 5, 1.0, x)  # n != x.size
    with pytest.raises(dlion.InvalidArgumentError):
        dc.wire_encode(GRADIENT, 0, 0, 0, ENC["qsgd"], 4, 1.0, x, x, bits=3)
    with pytest.raises(dlion.InvalidArgumentError):
        dc.wire_encode(GRADIENT, 0, 0, 0, 99, 4, 1.0, x)
    msg, _ = make("dense_f32", 0, 4, seed=0)
    with pytest.raises(dlion.InvalidArgumentError):
        apply(msg, np.zeros(4, np.float64))


def with_payload(name: str, n: int, *arrays: np.ndarray, **kw: int) -> bytes:
    """A message carrying exactly these payload arrays (sparse_f32: at indices 0..k-1)."""
    if name == "sparse_f32":
        arrays = (np.arange(arrays[0].size, dtype=np.uint32), *arrays)
    return dc.wire_encode(GRADIENT, SENDER, STEP, GROUP, ENC[name], n, 1.0, *arrays, **kw)


F32_BAD = [np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("name", ["dense_f32", "sparse_f32"])
@pytest.mark.parametrize("bad", F32_BAD)
def test_non_finite_values_are_rejected(name, bad):
    v = np.arange(6, dtype=np.float32)
    v[4] = bad
    out = np.zeros(6, np.float32)
    assert_rejected(with_payload(name, 6, v), out, "values[4]", "infinite or NaN", "finite")
    v[4] = np.finfo(np.float32).max  # the largest finite value is fine
    apply(with_payload(name, 6, v), out)
    assert out[4] == v[4]


@pytest.mark.parametrize(
    "name,bad", [("fp16", 0x7C00), ("fp16", 0xFE00), ("bf16", 0x7F80), ("bf16", 0xFFC1)]
)
def test_non_finite_halves_are_rejected(name, bad):
    h = np.zeros(5, np.uint16)
    h[2] = bad
    out = np.zeros(5, np.float32)
    assert_rejected(with_payload(name, 5, h), out, f"{name} values[2]", "finite")
    h[2] = 0x7BFF if name == "fp16" else 0x7F7F  # the largest finite 16-bit values
    apply(with_payload(name, 5, h), out)
    assert np.isfinite(out).all() and out[2] > 6e4


@pytest.mark.parametrize(
    "bits,byte,level", [(8, 0x80, -128), (4, 0x08, -8), (4, 0x80, -8), (2, 0x02, -2), (2, 0x20, -2)]
)
def test_qsgd_level_beyond_minus_l_is_rejected(bits, byte, level):
    # -(L + 1) would decode to (L + 1) / L * scale: beyond the scale, -inf at the largest one.
    n = 8 // bits * 2  # two bytes of levels
    packed = np.array([0, byte], np.uint8)
    scales = np.array([np.finfo(np.float32).max], np.float32)
    msg = with_payload("qsgd", n, packed, scales, bits=bits, bucket=n)
    out = np.zeros(n, np.float32)
    assert_rejected(msg, out, "packed levels byte [1]", f"a level {level}", f"[{level + 1}, ")
    packed[1] = byte + (byte >> (bits - 1))  # the same field one level up: -L, accepted
    msg = with_payload("qsgd", n, packed, scales, bits=bits, bucket=n)
    apply(msg, out)
    assert np.isfinite(out).all() and out.min() == -scales[0]


def test_sparse_qsgd8_level_minus_128_is_rejected():
    idx = np.array([1, 4], np.uint32)
    scales = np.ones(1, np.float32)
    out = np.zeros(6, np.float32)
    for levels, ok in (([3, -128], False), ([3, -127], True)):
        lv = np.array(levels, np.int8)
        msg = dc.wire_encode(
            GRADIENT, SENDER, STEP, GROUP, ENC["sparse_qsgd8"], 6, 1.0, idx, lv, scales, bucket=2
        )
        if ok:
            apply(msg, out)
            assert out[4] == -1.0
        else:
            assert_rejected(msg, out, "packed levels byte [1]", "a level -128")


def reseal(msg: bytes, **header: int) -> bytes:
    """msg with these header fields (flags, k) overwritten and its checksum recomputed."""
    b = bytearray(msg)
    for field, value in header.items():
        offset, fmt = {"flags": (27, "<B"), "k": (40, "<Q"), "payload_bytes": (48, "<Q")}[field]
        struct.pack_into(fmt, b, offset, value)
    b[56:64] = bytes(8)
    struct.pack_into("<Q", b, 56, dc.wire_checksum(bytes(b)))
    return bytes(b)


def reference_payload_bytes(name: str, k: int, contiguous: bool, bucket: int) -> int:
    """format.h section 4, written out: what a sparse message's payload must weigh."""
    idx_bytes = 4 if contiguous else 4 * k
    if name == "sparse_f32":
        return idx_bytes + 4 * k
    return 4 + idx_bytes + 4 * -(-k // bucket) + k


def index_sets(n: int) -> st.SearchStrategy[list[int]]:
    """Sorted distinct indices < n: a run of consecutive ones (any first, any length) or any set."""
    run = st.integers(0, n).flatmap(
        lambda k: st.integers(0, n - k).map(lambda first: list(range(first, first + k)))
    )
    return st.one_of(run, st.sets(st.integers(0, n - 1), max_size=n).map(sorted))


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(["sparse_f32", "sparse_qsgd8"]),
    n=st.integers(1, 300),
    bucket=st.integers(1, 40),
    contiguous=st.sampled_from([None, False]),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_sparse_forms_against_numpy(name, n, bucket, contiguous, seed, data):
    idx_list = data.draw(index_sets(n), label="idx")
    idx = np.array(idx_list, np.uint32)
    k = idx.size
    rng = np.random.default_rng(seed)
    val = rng.standard_normal(k).astype(np.float32)
    msg, dense = make_sparse(name, n, idx, val, 0.5, seed, bucket, contiguous)
    # numpy reference: consecutive indices travel as CONTIGUOUS unless contiguous=False
    run = k >= 1 and idx_list == list(range(idx_list[0], idx_list[0] + k))
    as_run = run and contiguous is None
    assert len(msg) == 64 + reference_payload_bytes(name, k, as_run, bucket)
    base = rng.standard_normal(n).astype(np.float32)
    out = base.copy()
    h = apply(msg, out)
    assert h["flags"] == (CONTIGUOUS if as_run else 0)
    assert h["first"] == (idx_list[0] if as_run else None)
    want = base.copy()
    want[idx] += np.float32(0.5) * dense[idx]  # dense: the values (decoded 8-bit) at idx
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    outside = np.ones(n, bool)
    outside[idx] = False
    assert out[outside].tobytes() == base[outside].tobytes()  # nothing else is touched


def test_contiguous_true_needs_consecutive_indices():
    v = np.ones(2, np.float32)
    with pytest.raises(dlion.InvalidArgumentError, match="not consecutive"):
        make_sparse("sparse_f32", 10, np.array([1, 3], np.uint32), v, contiguous=True)
    msg, _ = make_sparse("sparse_f32", 10, np.array([1, 2], np.uint32), v, contiguous=True)
    assert msg[27] == CONTIGUOUS
    with pytest.raises(dlion.InvalidArgumentError, match="sparse encoding"):
        dc.wire_encode(GRADIENT, 0, 0, 0, ENC["dense_f32"], 2, 1.0, v, contiguous=True)
    with pytest.raises(dlion.InvalidArgumentError):
        dc.wire_payload_bytes(ENC["dense_f32"], 4, 4, 32, 0, CONTIGUOUS)
    with pytest.raises(dlion.InvalidArgumentError):
        dc.wire_payload_bytes(ENC["sparse_f32"], 4, 0, 32, 0, CONTIGUOUS)  # k = 0
    with pytest.raises(dlion.InvalidArgumentError):
        dc.wire_payload_bytes(ENC["sparse_f32"], 4, 2, 32, 0, 2)  # an unknown flag
    assert dc.wire_payload_bytes(ENC["sparse_f32"], 4, 2, 32, 0, CONTIGUOUS) == 12


@pytest.mark.parametrize("name", ["sparse_f32", "sparse_qsgd8"])
def test_bad_flags_and_first_rejected_despite_checksum(name):
    out = np.zeros(10, np.float32)
    run = sparse_msg(name, [4, 5, 6])  # CONTIGUOUS, first 4
    explicit = sparse_msg(name, [1, 5])
    assert run[27] == CONTIGUOUS and explicit[27] == 0
    for bad in (2, 0x80, 0xFF):  # unknown bits, with or without CONTIGUOUS
        assert_rejected(reseal(run, flags=bad), out, f"flags is {bad}", "expected 0 or 1")
    # CONTIGUOUS on an explicit message (or cleared on a run): the payload no longer fits
    assert_rejected(reseal(explicit, flags=CONTIGUOUS), out, "payload_bytes", "flags = 1")
    assert_rejected(reseal(run, flags=0), out, "payload_bytes", "flags = 0")
    # CONTIGUOUS with k = 0
    empty = sparse_msg(name, [])
    assert_rejected(reseal(empty, flags=CONTIGUOUS), out, "k is 0", ">= 1 with flags CONTIGUOUS")
    # a run past the end: first + k > n
    assert_rejected(sparse_msg(name, [8, 9, 10]), out, "first is 8", "<= n - k = 7")
    assert_rejected(sparse_msg(name, [2**32 - 1]), out, "first is 4294967295", "<= n - k = 9")
    apply(sparse_msg(name, [7, 8, 9]), out)  # the last possible run applies
    assert out[7] == out[8] == out[9] == 1 and out.sum() == 3


def test_contiguous_flag_on_a_dense_encoding_is_rejected():
    msg, _ = make("dense_f32", 0, 4, seed=0)
    out = np.zeros(4, np.float32)
    assert_rejected(reseal(msg, flags=CONTIGUOUS), out, "flags is 1", "sparse encodings 2 and 3")
