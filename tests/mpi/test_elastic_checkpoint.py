"""A checkpoint of 4 ranks (sites A,A,B,B) restored on 3 (A,A,B) and on 2 (A,B) ranks
(dlion.checkpoint.load(..., elastic="average")), against numpy references computed here from
what the saving ranks reported. Two launches: the save, and one load job (3 ranks, then 2 of
them on a sub-communicator)."""

import numpy as np
import pytest
from conftest import run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.tf]

SAVED_SITES = ["A", "A", "B", "B"]
BATCHES = np.array([14, 10, 10, 6])
A = BATCHES / BATCHES.sum()  # replica weights = message weights: the saved batch shares
SHARD, EPOCH_SAMPLES = 50, 200


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("elastic") / "ckpt"
    res = run_mpi("elastic", 4, "save", str(folder), timeout=240)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == 4, res.explain()
    return folder, recs


@pytest.fixture(scope="module")
def loaded(saved):
    res = run_mpi("elastic", 3, "load", str(saved[0]), timeout=300)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == 3, res.explain()
    return {"three": [r["three"] for r in recs], "two": [r["two"] for r in recs[:2]]}


def average(per_rank: list) -> list[np.ndarray]:
    """The weighted replica average, variable by variable (equal values stay as they are)."""
    out = []
    for values in zip(*per_rank, strict=True):
        arrays = [np.asarray(v, np.float32) for v in values]
        if all(np.array_equal(arrays[0], x) for x in arrays[1:]):
            out.append(arrays[0])
        else:
            out.append(sum(a * x.astype(np.float64) for a, x in zip(A, arrays, strict=True)))
    return out


def test_same_size_resume_with_elastic_is_exact(saved):
    assert all(r["same_size_exact"] for r in saved[1])


@pytest.mark.parametrize("phase", ["three", "two"])
def test_restore_at_another_size_merges_folds_and_reshards(saved, loaded, phase):
    before, after = saved[1], loaded[phase]
    size = len(after)
    # Weights, optimizer slots, OuterSync's anchors and momentum: the weighted average.
    for key in ("weights", "slots"):
        want = average([r[key] for r in before])
        for rec in after:
            for w, got in zip(want, rec[key], strict=True):
                np.testing.assert_allclose(got, w.reshape(-1), rtol=2e-6, atol=1e-7)
            assert rec[key] == after[0][key]  # every rank identical
    assert after[0]["slots"][0] == before[0]["slots"][0] == [7]  # iterations agree
    toy = average([[r["toy"]] for r in before])[0]
    anchor = average([[r["outer"]["anchor:0"]] for r in before])[0]
    moment = average([[r["outer"]["moment:0"]] for r in before])[0]
    for rec in after:
        np.testing.assert_allclose(rec["toy"], toy, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(rec["anchors"]["anchor:0"], anchor, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(rec["moments"]["moment:0"], moment, rtol=2e-6, atol=1e-7)
        assert rec["outer_step"] == 7
    # Residuals, rank to rank: D = sum_p a_p sum_i w_i r_{i->p}, the mass the merged model lacks.
    name = "opt.grads[0]"
    d = 0.0
    for i, r in enumerate(before):
        for key, value in r["exchange"].items():
            p = int(key.split(":")[1])
            d = d + A[p] * A[i] * np.asarray(value, np.float64)
    # ... and per site pair: a piece S>T#a.b covers shard a of S's cut and b of T's; every
    # rank of T applies it (weight 1: the site sum is weighted already).
    n = before[0]["outer"]["outer:size:toy.outer[0]"]
    members = {s: [q for q, t in enumerate(SAVED_SITES) if t == s] for s in "AB"}
    d_outer = np.zeros(n)
    total_sq, arrays, elements = 0.0, 0, 0
    for r in before:
        for key, value in list(r["exchange"].items()) + list(r["outer"].items()):
            if "residual:" not in key:
                continue
            v = np.asarray(value, np.float64)
            total_sq, arrays, elements = total_sq + float(v @ v), arrays + 1, elements + v.size
            if key.startswith("outer:"):
                piece = key.split("@")[1]
                s, t, a, b = piece[0], piece[2], int(piece[4]), int(piece[6])
                cut_s = np.array_split(np.arange(n), len(members[s]))[a]
                cut_t = np.array_split(np.arange(n), len(members[t]))[b]
                idx = np.intersect1d(cut_s, cut_t)
                d_outer[idx] += sum(A[q] for q in members[t]) * v
    assert arrays == 16  # 4 ranks x 3 links, and one site-pair piece per rank
    for rec in after:
        np.testing.assert_allclose(rec["pending"][f"pending:{name}"], d, rtol=1e-5, atol=1e-7)
        got_outer = rec["outer"]["outer:pending:toy.outer[0]"]
        np.testing.assert_allclose(got_outer, d_outer, rtol=1e-5, atol=1e-7)
        rep = rec["report"]
        assert (rep["residual_arrays"], rep["residual_elements"]) == (arrays, elements)
        assert rep["residual_norm"] == pytest.approx(np.sqrt(total_sq), rel=1e-9)
        assert rep["folded"]["exchange"][name] == pytest.approx(np.linalg.norm(d), rel=1e-5)
        assert rep["saved_size"] == 4 and rep["size"] == size and rep["weights"] == list(A)
    # Nothing lost: after one exchange of zeros, each rank's aggregate plus what its peers'
    # links still owe it (their new residuals, weighted) is exactly the folded mass.
    for lrank, rec in enumerate(after):
        owed = np.asarray(rec["zero_out"], np.float64)
        for k, other in enumerate(after):
            if k != lrank:
                owed += other["weight"] * np.asarray(
                    other["zero_residuals"][f"residual:{lrank}:{name}"]
                )
        np.testing.assert_allclose(owed, d, rtol=1e-5, atol=1e-6)
    # Data: the interrupted epoch's samples each exactly once, before or after the restore.
    consumed = []
    for r in before:
        drawn = r["drawn"]
        consumed += drawn[(len(drawn) // SHARD) * SHARD :]  # this rank's current pass so far
    rest = [i for rec in after for i in rec["drawn"]]
    assert sorted(consumed + rest) == list(range(EPOCH_SAMPLES))
    sizes = sorted(len(rec["prefix"]) for rec in after)
    assert sizes[-1] - sizes[0] <= 1 and sum(sizes) == EPOCH_SAMPLES - len(consumed)
    assert sum(rec["data"]["samples_seen"] for rec in after) == sum(
        r["data"]["samples_seen"] for r in before
    )
    for k, rec in enumerate(after):
        assert rec["drawn"] == rec["prefix"]
        # then the usual next epoch (1) of this rank's own shard at the new size, seed = rank
        own = np.asarray(rec["own_shard"])
        nxt = own[np.random.default_rng([k, 1]).permutation(own.size)][:5]
        assert rec["after"] == nxt.tolist() and rec["after_epoch"] == 1
    # The batcher restarts with an even split, the exchange weighted by it.
    for rec in after:
        assert sum(rec["batches"]) == 40 and max(rec["batches"]) - min(rec["batches"]) <= 1


def test_a_restore_that_cannot_be_satisfied_fails_everywhere_and_changes_nothing(loaded):
    for rec in loaded["three"]:
        assert rec["unchanged"], rec
        for key, why in (
            ("best", "no KnowledgeTransfer state with a score"),
            ("architecture", "not the same architecture"),
            ("missing", "rank-00003.npz: cannot be read"),
        ):
            assert rec[key]["error"] == "CheckpointError", rec[key]
            assert why in rec[key]["message"], rec[key]["message"]
            assert "failed on rank 0" in rec[key]["message"]
