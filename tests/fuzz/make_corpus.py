"""Writes the wire fuzzer's seed corpus: small valid messages of every encoding and kind, the
sparse ones also as runs of consecutive indices (flags CONTIGUOUS, named <encoding>_run-...).

Run from the repository root with the extension installed; the files it writes are committed:
    .venv/bin/python tests/fuzz/make_corpus.py tests/fuzz/corpus/wire
Each file is one message (csrc/wire/format.h), named <encoding>[<bits>]-n<n>-k<k>-b<bucket>.
Values are edge cases as well as random: zeros, the largest finite float32, subnormals, one
all-zero bucket, so that mutations start close to the boundaries the decoder checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import dlion_core as dc

ENC = dc.WIRE_ENCODINGS
KINDS = dc.WIRE_KINDS


def values(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    edge = np.array([0.0, -0.0, 3.4028235e38, -1e-45, 1.2e-38, 65504.0, -1.0], np.float32)
    x[: min(n, edge.size)] = edge[: min(n, edge.size)]
    if n > 12:
        x[8:12] = 0.0  # an all-zero bucket for bucket <= 4
    return x


def messages() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i, (n, bucket) in enumerate([(0, 1), (1, 1), (7, 3), (19, 4), (64, 64), (100, 512)]):
        out.update(messages_of(i, n, bucket))
    return out


def messages_of(i: int, n: int, bucket: int) -> dict[str, bytes]:
    """One message of every encoding for n values; sender i, step 10 + i, group 3 * i."""
    out: dict[str, bytes] = {}
    x = values(n, seed=i)
    kind = (KINDS["gradient"], KINDS["parameters"], KINDS["probe"])[i % 3]
    k = max(n // 3, min(n, 1))
    idx, val = dc.topk(x, k) if n else (np.zeros(0, np.uint32), np.zeros(0, np.float32))

    def put(name: str, enc: str, *arrays: np.ndarray, kk: int = n, **kw: int) -> None:
        msg = dc.wire_encode(kind, i, 10 + i, 3 * i, ENC[enc], n, 0.25, *arrays, **kw)
        out[f"{name}-n{n}-k{kk}-b{kw.get('bucket', 0)}"] = msg

    small = np.clip(x, -6e4, 6e4)  # magnitudes that fp16 and bf16 carry as finite values
    put("dense_f32", "dense_f32", x)
    put("sparse_f32", "sparse_f32", idx, val, kk=k)
    levels, scales = dc.qsgd_encode(val, 8, i, bucket)
    put("sparse_qsgd8", "sparse_qsgd8", idx, levels, scales, kk=k, bucket=bucket)
    if n:  # a run of k consecutive indices from n // 3: CONTIGUOUS, its first index only
        run = np.arange(n // 3, n // 3 + k, dtype=np.uint32)
        put("sparse_f32_run", "sparse_f32", run, x[run], kk=k)
        levels, scales = dc.qsgd_encode(x[run], 8, i, bucket)
        put("sparse_qsgd8_run", "sparse_qsgd8", run, levels, scales, kk=k, bucket=bucket)
    for bits in (2, 4, 8):
        packed, scales = dc.qsgd_encode(x, bits, i, bucket)  # type: ignore[arg-type]
        put(f"qsgd{bits}", "qsgd", packed, scales, bits=bits, bucket=bucket)
    signs, scale = dc.sign_encode(small)
    put("sign", "sign", signs, np.array([scale], np.float32))
    put("fp16", "fp16", dc.to_fp16(small))
    put("bf16", "bf16", dc.to_bf16(small))
    return out


def main(folder: str) -> None:
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for name, msg in messages().items():
        (path / name).write_bytes(msg)
        # every seed is valid as written: the receiver that registered it accepts it
        sender = int.from_bytes(msg[8:12], "little")
        group = int.from_bytes(msg[12:16], "little")
        n = int.from_bytes(msg[32:40], "little")
        h = dc.wire_apply(msg, sender, group, n, np.zeros(n, np.float32))
        run = name.startswith("sparse") and ("_run-" in name or "-k1-" in name)
        assert (h["flags"] == dc.WIRE_FLAG_CONTIGUOUS) == run, name  # both sparse forms are seeds
    print(f"wrote {len(messages())} messages to {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/wire")
