"""The receiver's finite check of DENSE_F32 / FP16 / BF16 payloads rides on the checksum's pass
(32-byte stripes) and looks again only at the short rest: a non-finite value anywhere, in a
stripe or in the rest, is rejected naming the first one, and finite payloads of any length
apply. Also the sender's copy-while-checksumming of dense float32 (the engine's encoder)
produces what wire_encode (copy, then checksum) does."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_wire import ENC, GRADIENT, GROUP, SENDER, STEP, apply, assert_rejected, with_payload

import dlion_core as dc

F32_BAD = [0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF]
HALF_BAD = {"fp16": [0x7C00, 0xFC00, 0x7E00, 0xFFFF], "bf16": [0x7F80, 0xFF80, 0x7FC1, 0xFFFF]}


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["dense_f32", "fp16", "bf16"]),
    n=st.integers(1, 200),
    data=st.data(),
)
def test_first_non_finite_anywhere_is_named(name, n, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if name == "dense_f32":
        v = rng.standard_normal(n).astype(np.float32)
        # Near-misses: all-ones exponent minus one bit, and the largest finite value.
        v[rng.random(n) < 0.2] = np.finfo(np.float32).max
        bits = v.view(np.uint32)
        bad_values = F32_BAD
    else:
        v = rng.integers(0, 0x7000, n).astype(np.uint16)  # finite halves
        bits = v
        bad_values = HALF_BAD[name]
    out = np.zeros(n, np.float32)
    apply(with_payload(name, n, v), out)  # every finite payload applies
    where = sorted(set(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3))))
    for i in where:
        bits[i] = data.draw(st.sampled_from(bad_values))
    label = "values" if name == "dense_f32" else f"{name} values"
    out = np.zeros(n, np.float32)
    assert_rejected(with_payload(name, n, v), out, f"{label}[{where[0]}]", "finite")


def test_large_dense_payload_bad_value_in_a_stripe():
    n = 1_000_003
    v = np.ones(n, np.float32)
    out = np.zeros(n, np.float32)
    apply(with_payload("dense_f32", n, v), out)
    for i in (0, 7, 8, 12345, n - 9, n - 1):
        v[:] = 1.0
        v[i] = np.inf
        assert_rejected(with_payload("dense_f32", n, v), out.copy(), f"values[{i}]")


def test_dense_message_checksum_matches_a_fresh_hash():
    """wire_encode copies the payload, then checksums it; the checksum field is XXH64 of the
    message with that field read as zero."""
    for n in (0, 1, 7, 8, 9, 1000, 4099):
        v = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        msg = bytearray(dc.wire_encode(GRADIENT, SENDER, STEP, GROUP, ENC["dense_f32"], n, 1.0, v))
        stored = int.from_bytes(msg[56:64], "little")
        msg[56:64] = bytes(8)
        assert dc.wire_checksum(bytes(msg)) == stored
