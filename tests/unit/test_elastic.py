"""Re-sharding the interrupted epoch and folding residuals (a restore at another world size),
against simple numpy references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlion.checkpoint.fold import fold_exchange
from dlion.data import ShardIterator, reshard_remaining, shard


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(0, 150),
    old=st.integers(1, 6),
    new=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_reshard_remaining_cuts_the_union_evenly(n, old, new, seed, data):
    perm = np.random.default_rng(seed).permutation(n)
    pieces = np.array_split(perm, old)
    keep = [p[: data.draw(st.integers(0, len(p)))] for p in pieces]
    parts = reshard_remaining(keep, new, seed=seed)
    # reference: the sorted union, permuted by default_rng([seed, new]), cut as array_split
    union = np.sort(np.concatenate(keep))
    ref = np.array_split(union[np.random.default_rng([seed, new]).permutation(union.size)], new)
    assert len(parts) == new
    for got, want in zip(parts, ref, strict=True):
        np.testing.assert_array_equal(got, want)
    assert sorted(np.concatenate(parts).tolist()) == union.tolist()
    lengths = [p.size for p in parts]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_reshard_remaining_refuses_a_sample_left_twice():
    with pytest.raises(ValueError, match="sample 3 is left in two shards"):
        reshard_remaining([np.array([1, 3]), np.array([3, 4])], 2)
    with pytest.raises(ValueError, match="size must be >= 1"):
        reshard_remaining([np.array([1])], 0)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 120),
    old=st.integers(1, 5),
    new=st.integers(1, 5),
    seed=st.integers(0, 1000),
    data=st.data(),
)
def test_new_iterators_cover_the_interrupted_epoch_exactly_once(n, old, new, seed, data):
    x = np.arange(n)  # a sample's value is its index
    before = [ShardIterator(x, x, shard(n, i, old, seed), seed=i) for i in range(old)]
    drawn: list[list[int]] = [[] for _ in range(old)]
    for i, it in enumerate(before):
        if len(it):
            for b in data.draw(st.lists(st.integers(1, 40), max_size=5)):
                drawn[i] += it.next(b)[0].tolist()
    # reference: a pass has len(shard) samples; what this rank drew of its current pass
    consumed = [
        d[(len(d) // len(it)) * len(it) :] if len(it) else []
        for d, it in zip(drawn, before, strict=True)
    ]
    parts = reshard_remaining([it.remaining() for it in before], new, seed=seed)
    epoch = min(it.local_epoch for it in before)
    rest: list[int] = []
    for k in range(new):
        it = ShardIterator(x, x, shard(n, k, new, seed), seed=k)
        it.resume_pass(parts[k], epoch)
        assert it.local_epoch == (epoch if parts[k].size else epoch + 1)
        left = len(parts[k])
        while left:
            b = min(left, data.draw(st.integers(1, 30)))
            if data.draw(st.booleans()):  # a checkpoint in the middle resumes exactly
                twin = ShardIterator(x, x, shard(n, k, new, seed), seed=k)
                twin.set_state(it.state())
                np.testing.assert_array_equal(twin.remaining(), it.remaining())
                it = twin
            rest += it.next(b)[0].tolist()
            left -= b
        if len(it):  # then the usual next epoch of its own shard
            own = shard(n, k, new, seed)
            want = own[np.random.default_rng([k, epoch + 1]).permutation(own.size)]
            np.testing.assert_array_equal(it.remaining(), want)
            assert it.local_epoch == epoch + 1 and "order" not in it.state()
    assert sorted(sum(consumed, []) + rest) == list(range(n))


def test_fold_rank_to_rank_residuals_weights_each_link_by_receiver_and_sender():
    rng = np.random.default_rng(1)
    a, w = [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]
    states = [{"step:g": 4, "link:1:bytes_sent": 9} for _ in range(3)]
    want = np.zeros(7)
    for i in range(3):
        for p in range(3):
            if p != i:
                r = rng.standard_normal(7).astype(np.float32)
                states[i][f"residual:{p}:g"] = r
                want += a[p] * w[i] * r
    pending, (arrays, elements, norm) = fold_exchange(states, ["A", "B", "C"], a, w, "here")
    np.testing.assert_allclose(pending["g"], want, rtol=1e-6, atol=1e-7)
    assert (arrays, elements) == (6, 42)
    all_r = np.concatenate([v for s in states for k, v in s.items() if k.startswith("residual")])
    assert norm == pytest.approx(float(np.linalg.norm(all_r.astype(np.float64))))


@pytest.mark.parametrize("sites", [["A", "A", "A", "B", "B"], ["A", "B", "B", "C"]])
def test_fold_site_pair_pieces_at_their_offsets_for_every_rank_of_the_receiving_site(sites):
    n, rng = 23, np.random.default_rng(2)
    order = list(dict.fromkeys(sites))
    members = {s: [q for q, t in enumerate(sites) if t == s] for s in order}
    a = list(rng.dirichlet(np.ones(len(sites))))
    states: list[dict] = [{"size:x": n} for _ in sites]
    want = np.zeros(n)
    for s in order:
        for t in order:
            if s == t:
                continue
            for i, cut_s in enumerate(np.array_split(np.arange(n), len(members[s]))):
                for j, cut_t in enumerate(np.array_split(np.arange(n), len(members[t]))):
                    idx = np.intersect1d(cut_s, cut_t)
                    if idx.size:
                        r = rng.standard_normal(idx.size).astype(np.float32)
                        sender = members[s][i]
                        states[sender][f"residual:{members[t][j]}:x@{s}>{t}#{i}.{j}"] = r
                        want[idx] += sum(a[q] for q in members[t]) * r
    states[0]["pending:x"] = np.ones(n, np.float32)  # an earlier restore's, not yet sent
    want += 0.25 * np.ones(n)
    w = [0.25] + [0.75 / (len(sites) - 1)] * (len(sites) - 1)
    pending, _ = fold_exchange(states, sites, a, w, "here")
    np.testing.assert_allclose(pending["x"], want, rtol=1e-5, atol=1e-6)


def test_fold_refuses_what_it_does_not_know():
    from dlion.errors import CheckpointError

    with pytest.raises(CheckpointError, match="does not know how to fold"):
        fold_exchange([{"mystery:x": 1}], ["A"], [1.0], [1.0], "here")
    with pytest.raises(CheckpointError, match="not a wide-area piece"):
        fold_exchange(
            [{"residual:1:x@A>B#0.0": np.ones(2)}, {}], ["A", "B"], [0.5] * 2, [0.5] * 2, "here"
        )


def test_replica_weights_from_the_batcher_and_knowledge_transfer_states():
    from dlion.checkpoint.elastic import replica_weights
    from dlion.errors import CheckpointError

    metas = [
        {
            "entries": {
                "b": {"class": "DynamicBatcher", "keys": []},
                "kt": {"class": "KnowledgeTransfer", "keys": []},
            }
        }
    ] * 3
    states = [{"b": {"batches": np.array([6, 3, 1])}, "kt": {"history_best": np.array([0, 2])}}] * 3
    assert replica_weights(metas, states, "average") == ([0.6, 0.3, 0.1], [0.6, 0.3, 0.1], None)
    assert replica_weights(metas, states, "best") == ([0.0, 0.0, 1.0], [0.6, 0.3, 0.1], 2)
    plain = [{"entries": {"x": {"kind": "arrays", "keys": ["a"]}}}] * 2
    assert replica_weights(plain, [{"x": {}}] * 2, "average")[0] == [0.5, 0.5]
    with pytest.raises(CheckpointError, match="no KnowledgeTransfer state with a score"):
        replica_weights(plain, [{"x": {}}] * 2, "best")
