"""Wire format (csrc/wire): round trips of every encoding against numpy references, and
rejection of every corrupted, truncated, misaddressed or malformed message, leaving out untouched.
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
# (encoding name, qsgd bits) for every encoding the format has.
CASES = [
    ("dense_f32", 0),
    ("sparse_f32", 0),
    ("sparse_qsgd8", 0),
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
    enc = ENC[name]

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
    assert (h["encoding"], h["n"], h["weight"], h["flags"]) == (ENC[name], n, 0.5, 0)
    assert len(msg) == dc.WIRE_HEADER_BYTES + h["payload_bytes"]
    assert h["payload_bytes"] == dc.wire_payload_bytes(
        h["encoding"], n, h["k"], h["bits"], h["bucket"]
    )
    out2 = base.copy()
    apply(msg, out2, weight=2.0)  # an explicit weight overrides the header's
    np.testing.assert_allclose(out2, base + 2 * ref, rtol=1e-6, atol=1e-6)


def test_header_layout():
    msg, _ = make("dense_f32", 0, 4, seed=0, weight=0.25)
    fields = struct.unpack_from("<4sHHIIQHBBfQQQQ", msg)
    assert fields[:-1] == (b"DLN1", 1, GRADIENT, SENDER, GROUP, STEP, 1, 32, 0, 0.25, 4, 4, 16)
    zeroed = msg[:56] + bytes(8) + msg[64:]
    assert fields[-1] == dc.wire_checksum(zeroed)


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
