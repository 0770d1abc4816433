"""GaiaExchange and AkoExchange: selection rules against numpy, what is kept, nothing lost."""

import pytest
from conftest import run_mpi

pytestmark = pytest.mark.mpi


def _check_books(rec: dict) -> None:
    assert rec["max_residual_error"] < 1e-5, rec  # the engine kept what the rule says
    assert rec["lost"] < 1e-4 * rec["scale"], rec  # received + residuals == sent gradients
    assert rec["residual_nonzero"] > 0, rec  # the filter really held entries back


def test_gaia_is_dense_inside_a_site_and_filters_across_sites():
    res = run_mpi("baselines", 4, "gaia", env={"DLION_TEST_SITES": "A,A,B,B"}, timeout=180)
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        _check_books(rec)
        assert rec["intra_dense"], rec
        # Across sites only the significant entries travel: some, but far from all.
        fractions = rec["cross_fraction"]
        assert len(fractions) == 2 * 7
        assert 0.01 < min(fractions) and max(fractions) < 0.9, fractions
        assert rec["describe"].startswith("gaia(threshold=0.25, lr=0.5")


SIZES = (6000, 4000)  # the worker's two fused buffers (workers/baselines.py)


def _ako_message_bytes(k: int, bits: int, bucket: int) -> int:
    """One Ako message on the wire (csrc/wire/format.h): the 64-byte header, then the values
    only; a partition is one run of consecutive indices, sent as flags CONTIGUOUS with the u32
    `first` in place of k u32 indices."""
    if bits == 32:  # SPARSE_F32: u32 first, f32 values[k]
        return 64 + 4 + 4 * k
    # SPARSE_QSGD8: u32 bucket, u32 first, f32 scales[ceil(k / bucket)], i8 levels[k]
    return 64 + 4 + 4 + 4 * -(-k // bucket) + k


def test_ako_sends_partition_step_mod_p_carrying_its_last_p_gradients():
    res = run_mpi("baselines", 3, "ako", timeout=180)
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        _check_books(rec)
        assert rec["ako_sum_error"] < 1e-4, rec
        # Bytes per link per step: the values only (two groups of 6000 and 4000, p = 3).
        for step, (sent, msgs) in enumerate(zip(rec["bytes_per_step"], rec["msgs_per_step"])):
            j = step % 3  # partition j of n: [j * n // 3, (j + 1) * n // 3)
            want = sum(_ako_message_bytes((j + 1) * n // 3 - j * n // 3, 32, 512) for n in SIZES)
            assert set(sent.values()) == {want} and set(msgs.values()) == {2}, (step, sent, want)
        # bits=8 (bucket 100), one group of 6000: 2000 entries a step
        ako8 = rec["ako8"]
        for sent, msgs in zip(ako8["bytes_per_step"], ako8["msgs_per_step"]):
            assert set(sent.values()) == {_ako_message_bytes(2000, 8, 100)}, sent
            assert set(msgs.values()) == {1}, msgs
        assert ako8["outside_exact"] and ako8["inside_err"] <= 1.0 + 1e-4, ako8
