"""Compression kernels vs memcpy, np.argpartition and tf.math.top_k, measured in one run.

For each float32 size (Gaussian data), every kernel's median time is printed next to the time
of copying the same bytes (``np.copyto`` into an existing, already touched array: the memcpy
reference). The reference is timed anew in every row, alternating with the kernel (copy,
kernel, copy, kernel, ...), and each row's ratio is the median kernel time over the median copy
time of those same repetitions: on a shared machine the load drifts within seconds, and a
reference timed once at the start made later rows look slower or faster than they are. QSGD,
decoders and casts write into existing arrays too (no fresh pages on either side); top-k,
random-k and sign allocate their small outputs (sign: n / 8 bytes). Top-k rows add
``np.argpartition`` and ``tf.math.top_k`` (both on |x|) for the same k. One process.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .report import Report


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m dlion.bench compress``."""
    p.add_argument("--sizes", type=float, nargs="+", default=[1e6, 2.5e7])
    p.add_argument("--ratio", type=float, default=0.01, help="k/n for top-k and random-k")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions (median)")
    p.add_argument("--no-tf", action="store_true", help="skip the tf.math.top_k reference")
    p.add_argument("--json", action="store_true", help="one JSON object per row")


def _median(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up: page faults, caches
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _paired_medians(
    fn: Callable[[], object], ref: Callable[[], object], reps: int
) -> tuple[float, float]:
    """Median times of ``fn`` and ``ref``, run alternately (ref, fn, ref, fn, ...)."""
    fn()  # warm-up: page faults, caches
    ref()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        for f, out in ((ref, times[1]), (fn, times[0])):
            t = time.perf_counter()
            f()
            out.append(time.perf_counter() - t)
    return float(np.median(times[0])), float(np.median(times[1]))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print its rows."""
    rep = Report(
        [
            ("kernel", "{}"),
            ("elements", "{:.1e}"),
            ("ratio", "{:g}"),
            ("seconds", "{:.2e}"),
            ("memcpy_s", "{:.2e}"),
            ("vs_memcpy", "{:.2f}"),
            ("argpartition_s", "{:.2e}"),
            ("tf_topk_s", "{:.2e}"),
        ],
        args.json,
        0,
    )
    import dlion_core as core

    from ..config import Config

    core.set_simd(Config.from_env().simd)  # DLION_SIMD: this tool runs without dlion.init
    tf: Any = None
    if not args.no_tf:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from ..quiet import import_tensorflow

        tf = import_tensorflow()
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    for n in (int(s) for s in args.sizes):
        _bench_size(n, args, rep, tf)
    return 0


def _bench_size(n: int, args: argparse.Namespace, rep: Report, tf: Any) -> None:
    import dlion_core as core

    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    dst, ref = np.empty_like(x), np.empty_like(x)

    def memcpy() -> None:
        np.copyto(ref, x)

    k = max(1, int(args.ratio * n))
    absx = np.abs(x)
    argp = _median(lambda: np.argpartition(absx, n - k)[n - k :], max(3, args.reps // 2))
    tf_topk = None
    if tf is not None:
        t = tf.constant(absx)
        tf_topk = _median(lambda: tf.math.top_k(t, k=k, sorted=False), 3)
    packed, scales = core.qsgd_encode(x, 8, 1, 512)
    into = {  # encoders write into existing arrays too, like the memcpy reference
        b: dict(zip(("packed_out", "scales_out"), core.qsgd_encode(x, b, 1, 512)))
        for b in (2, 4, 8)
    }
    bits, scale = core.sign_encode(x)
    half, bf = core.to_fp16(x), core.to_bf16(x)
    idx, vals = core.topk(x, k, True)
    out = np.zeros(n, np.float32)
    kernels: list[tuple[str, float, Callable[[], object], bool]] = [
        ("topk_exact", k / n, lambda: core.topk(x, k, True), True),
        ("topk_fast", k / n, lambda: core.topk(x, k, False), True),
        ("randomk", k / n, lambda: core.randomk(x, k, 1), False),
        ("scatter_add", k / n, lambda: core.scatter_add(idx, vals, out), False),
        ("qsgd8_encode", 8, lambda: core.qsgd_encode(x, 8, 1, 512, **into[8]), False),
        ("qsgd4_encode", 4, lambda: core.qsgd_encode(x, 4, 1, 512, **into[4]), False),
        ("qsgd2_encode", 2, lambda: core.qsgd_encode(x, 2, 1, 512, **into[2]), False),
        ("qsgd8_decode", 8, lambda: core.qsgd_decode(packed, scales, n, 8, 512, out=dst), False),
        ("sign_encode", 1, lambda: core.sign_encode(x), False),
        ("sign_decode", 1, lambda: core.sign_decode(bits, scale, n, out=dst), False),
        ("fp16_encode", 16, lambda: core.to_fp16(x, out=half), False),
        ("fp16_decode", 16, lambda: core.from_fp16(half, out=dst), False),
        ("bf16_encode", 16, lambda: core.to_bf16(x, out=bf), False),
        ("bf16_decode", 16, lambda: core.from_bf16(bf, out=dst), False),
    ]
    for name, ratio, fn, is_topk in kernels:
        secs, copy = _paired_medians(fn, memcpy, args.reps)
        row = {
            "kernel": name,
            "elements": n,
            "ratio": ratio,
            "seconds": secs,
            "memcpy_s": copy,
            "vs_memcpy": secs / copy,
        }
        if is_topk:
            row.update(
                {
                    "argpartition_s": argp,
                    "tf_topk_s": tf_topk,
                    "vs_argpartition": argp / secs,
                    "vs_tf_topk": tf_topk / secs if tf_topk else None,
                }
            )
        rep.row(row)
