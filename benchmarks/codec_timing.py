"""Timing print (not a test) of the codec kernels against np.copyto of the same float32 array.

    PYTHONPATH=. .venv/bin/python benchmarks/codec_timing.py [n]

Median of 9 runs after one warm-up, single thread. Decoders and casts write into preallocated
`out=` arrays, like np.copyto; "new" rows allocate their result.
"""

import statistics
import sys
import time

import numpy as np

import dlion_core as dc


def median_ms(f, reps=9):
    f()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(n):
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    dst = np.empty_like(x)
    packed, scales = dc.qsgd_encode(x, 8, 1)
    bits, scale = dc.sign_encode(x)
    h, b = dc.to_fp16(x), dc.to_bf16(x)
    h_out, b_out = np.empty(n, np.float16), np.empty(n, np.uint16)
    rows = [
        ("np.copyto (memcpy reference)", lambda: np.copyto(dst, x)),
        ("qsgd_encode 8 bit", lambda: dc.qsgd_encode(x, 8, 1)),
        ("qsgd_encode 4 bit", lambda: dc.qsgd_encode(x, 4, 1)),
        ("qsgd_encode 2 bit", lambda: dc.qsgd_encode(x, 2, 1)),
        ("qsgd_decode 8 bit, out=", lambda: dc.qsgd_decode(packed, scales, n, 8, out=dst)),
        ("qsgd_decode 8 bit, new", lambda: dc.qsgd_decode(packed, scales, n, 8)),
        ("sign_encode", lambda: dc.sign_encode(x)),
        ("sign_decode, out=", lambda: dc.sign_decode(bits, scale, n, out=dst)),
        ("to_fp16, out=", lambda: dc.to_fp16(x, out=h_out)),
        ("from_fp16, out=", lambda: dc.from_fp16(h, out=dst)),
        ("to_bf16, out=", lambda: dc.to_bf16(x, out=b_out)),
        ("from_bf16, out=", lambda: dc.from_bf16(b, out=dst)),
    ]
    reference = None
    print(f"n = {n:,} float32")
    for name, f in rows:
        ms = median_ms(f)
        reference = reference or ms
        print(f"{name:30s} {ms:8.2f} ms  {ms / reference:5.2f}x memcpy")


if __name__ == "__main__":
    main(int(float(sys.argv[1])) if len(sys.argv) > 1 else 25_000_000)
