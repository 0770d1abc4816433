"""Horovod's own TF2 and Keras example scripts, written the Horovod way with only the import
line naming dlion, train on real ranks; and Horovod's other names do what they say."""

import numpy as np
import pytest
from conftest import run_each, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.tf]


def _falls(losses, n=5):
    return np.mean(losses[-n:]) < 0.7 * np.mean(losses[:n])


KERAS = [("none", 1), ("fp16", 2)]


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> dict:
    """The four script runs on 2 ranks, one job for all (one TensorFlow start on each rank):
    {(script, compression): (every rank's record, stdout, stderr, checkpoint folder)}."""
    runs = {("tf2", c): (None, ["hvd_tf2_mnist", c]) for c in ("none", "fp16")}
    for compression, passes in KERAS:
        folder = tmp_path_factory.mktemp(f"keras-{compression}")
        runs["keras", compression] = (
            folder,
            ["hvd_keras_mnist", str(folder), compression, str(passes)],
        )
    seen = run_each(2, *(args for _, args in runs.values()), timeout=900)
    return {
        key: (seen[" ".join(args)], *seen.output[" ".join(args)], folder)
        for key, (folder, args) in runs.items()
    }


@pytest.mark.parametrize("compression", ["none", "fp16"])
def test_horovod_tf2_custom_loop_script_trains_to_identical_replicas(compression, scripts):
    recs, stdout, stderr, _ = scripts["tf2", compression]
    assert len(recs) == 2, recs
    assert recs[0]["digest"] == recs[1]["digest"], "replicas ended different"
    for r in recs:
        assert _falls(r["losses"]), r["losses"]
        assert r["accuracy"] > 0.5, r
    assert "Step #0" in stdout and "PerLinkExchange runs as a dense allreduce" in stderr


@pytest.mark.parametrize(("compression", "passes"), KERAS)
def test_horovod_keras_fit_script_trains_to_identical_replicas(compression, passes, scripts):
    recs, stdout, _, tmp_path = scripts["keras", compression]
    assert len(recs) == 2, recs
    assert recs[0]["digest"] == recs[1]["digest"], "replicas ended different"
    assert recs[0]["loss"] == recs[1]["loss"]  # MetricAverageCallback
    for r in recs:
        assert r["loss"][-1] < 0.7 * r["loss"][0], r["loss"]
        assert r["exchanges"] == r["iterations"] == 3 * 24 // passes, r
        want = "cast_allreduce(fp16)" if compression == "fp16" else "perlink(all links fast"
        assert r["exchange"].startswith(want), r
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"checkpoint-{e}.keras" for e in (1, 2, 3)
    ]
    assert "finished gradual learning rate warmup" in stdout


@pytest.fixture(scope="module")
def surface(tmp_path_factory):
    folder = tmp_path_factory.mktemp("surface")
    res = run_mpi("horovod_surface", 3, str(folder), timeout=600)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == 3, res.explain()
    for r in recs:
        r["files"] = sorted(p.name for p in folder.iterdir())
    return recs


def test_names_queries_and_collectives(surface):
    size = 3
    for r in surface:
        rank = r["rank"]
        assert r["ops"] == ["average", "sum", "min", "max", "product", "average"]
        built = r["built"]
        assert built.pop("mpi_built") and built.pop("mpi_enabled")
        assert built.pop("mpi_threads_supported")
        assert not any(built.values()), built  # no Gloo, NCCL, CUDA, ... in dlion
        assert r["cross"] == [0, 1, 0]  # one host: every rank is its own cross group
        assert r["scaled"] == [6.0] * 4 and r["scaled_tf"] == pytest.approx(6.0)
        assert r["grouped"] == [[3.0, 3.0], [3.0, 3.0, 3.0]] and r["grouped_np"] == [[1, 1], [1]]
        rows = np.arange(14.0).reshape(7, 2)
        start, count = [(0, 3), (3, 2), (5, 2)][rank]  # Horovod's split of 7 rows
        assert r["reducescatter"] == (rows[start : start + count] * 6).tolist()
        assert r["reducescatter_tf"] == (rows[start : start + count] * 2).tolist()
        values, received = r["alltoall"]
        assert received == [rank + 1] * size
        assert values == [10.0 * s + rank for s in range(size) for _ in range(rank + 1)]
        assert r["alltoall_even"] == [0.0, 1.0, 2.0]


def test_what_is_not_offered_says_what_to_use(surface):
    for r in surface:
        e = r["errors"]
        assert "Adasum is not offered" in e["adasum"] and "dlion.Average" in e["adasum"]
        assert "Adasum is not offered" in e["opt_adasum"]
        assert "dlion.broadcast_variables(model.variables" in e["global"]
        assert "floating tensors only" in e["scale_int"]
        assert "3 non-negative row counts" in e["alltoall_splits"]
        assert "sparse_as_dense=False" in e["sparse"] and "drop the argument" in e["sparse"]
        assert "not both" in e["both"] and "PeerExchange(codec='fp16')" in e["both"]
        assert "randomk" in e["randomk"] and "topk(ratio)" in e["randomk"]
        assert "backward_passes_per_step must be an int >= 1" in e["passes"]


def test_backward_passes_per_step_equals_one_step_on_the_larger_batch(surface):
    for r in surface:
        assert r["passes_custom"] <= 1e-6, r["passes_custom"]
        assert r["passes_custom_steps"] == [2, 2, 2]  # exchanges of big, small; applies
        assert r["passes_fit"] <= 1e-6, r["passes_fit"]
        assert r["passes_fit_steps"] == [2, 2, 2]


def test_average_replicas_gives_every_rank_the_weighted_mean(surface):
    assert len({r["average_digest"] for r in surface}) == 1
    for r in surface:
        assert r["decentralized"] and r["differed"], r
        assert r["average_err"] <= 1e-6 and r["weighted_err"] <= 1e-6, r


def test_fit_with_a_decentralized_exchange_ends_with_one_model_and_load_model_wraps(surface):
    assert len({r["fit_digest"] for r in surface}) == 1
    assert len({r["wrapped_digest"] for r in surface}) == 1
    for r in surface:
        assert r["loaded"] == ["DistributedOptimizer", "SGD"]
        assert r["config"]["backward_passes_per_step"] == 3
        assert r["config"]["average_aggregated_gradients"] is True
        want = "outer(H=10, lr=0.7, momentum=0.9 nesterov, fragments=2, overlap=0, qsgd 4 bit)"
        assert r["roundtrip"] == [want, 1 << 20], r["roundtrip"]
        assert r["wrapped"] == ["cast_allreduce(fp16)", 2]


def test_keras_schedule_and_best_checkpoint_callbacks(surface):
    for r in surface:
        assert r["schedule"] == pytest.approx([0.1, 0.05, 0.025])
        best = [f for f in r["files"] if f.startswith("best-")]
        assert best and all(f.startswith("best-r0-") for f in best), r["files"]
