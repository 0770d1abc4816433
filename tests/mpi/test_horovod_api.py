"""Horovod-style API on real ranks: tensor collectives, join with uneven data, model.fit with
callbacks, and the timeline files."""

import json

import pytest
from conftest import run_each, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.tf]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    """The 2-rank scenarios, one job for all (one TensorFlow start on each rank): the folders
    of the timelines, and {scenario: every rank's record}."""
    join, misuse = tmp_path_factory.mktemp("join"), tmp_path_factory.mktemp("misuse")
    scenarios = {
        "tensor_collectives": ["tensor_collectives"],
        "join": [f"DLION_TIMELINE={join / 'trace.json'}", "uneven", "join"],
        "misuse": ["uneven", "misuse", str(misuse / "t.json")],
        "fit": ["fit"],
    }
    recs = run_each(2, *scenarios.values(), timeout=600)
    return {
        "join_dir": join,
        "misuse_dir": misuse,
        **{name: recs[" ".join(s)] for name, s in scenarios.items()},
    }


@pytest.mark.parametrize("np_", [2, 3])
def test_tensor_collectives_match_references_and_name_bad_input(np_, request):
    if np_ == 2:
        recs = request.getfixturevalue("two_ranks")["tensor_collectives"]
    else:
        res = run_mpi("tensor_collectives", np_, timeout=300)
        assert res.returncode == 0, res.explain()
        recs = res.records()
    assert [r["rank"] for r in recs] == list(range(np_)), recs
    for r in recs:
        assert r["checks"] > 60
        e = r["errors"]
        assert f"rank {r['rank']}: allreduce 'names': dtype string" in e["string"]
        assert "'ints'" in e["int_average"] and "op='sum'" in e["int_average"]
        assert "'median'" in e["op"]
        # The mismatches are seen on every rank and name the rank that differs.
        assert f"allgather 'ragged': rank {np_ - 1} passes" in e["trailing"]
        assert f"allreduce 'shapes': rank {np_ - 1} passes" in e["shape"]


@pytest.mark.parametrize("np_", [2, 3])
def test_join_with_uneven_data_finishes_with_identical_weights(np_, tmp_path, request):
    if np_ == 2:
        two_ranks = request.getfixturevalue("two_ranks")
        trace, recs = two_ranks["join_dir"] / "trace.json", two_ranks["join"]
    else:
        trace = tmp_path / "trace.json"
        res = run_mpi("uneven", np_, "join", timeout=300, env={"DLION_TIMELINE": str(trace)})
        assert res.returncode == 0, res.explain()
        recs = res.records()
    assert len(recs) == np_, recs
    assert len({r["digest"] for r in recs}) == 1, "ranks ended with different weights"
    for r in recs:
        assert r["lasts"] == [0, 0]  # rank 0 has the most batches: it joins last
        assert r["steps"] == 20 and r["iterations"] == 20  # joined ranks applied too
        assert r["max_abs_err"] <= 1e-5 * max(1.0, r["scale"]), r
        # One control round and the gradients per step (the first step of the layout also
        # votes apart; each join() ends with one more control round): the non-finite vote
        # rides in the control round, joined or not.
        assert r["ops"] <= 2 * r["rounds"] + 1 + 2, r
    for rank in range(np_):
        _check_trace(trace.with_name(f"trace.rank{rank}.json"), rank, joined=rank != 0)


def _check_trace(path, rank, joined):
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert spans and all(e["pid"] == rank for e in events)
    for e in spans:
        assert isinstance(e["ts"], (int, float)) and e["dur"] >= 0 and e["name"] and e["cat"]
    names = {e["name"] for e in spans}
    assert {"compute", "pack", "exchange", "wait", "apply", "step", "join"} <= names, names
    exchange = [e for e in spans if e["name"] == "exchange"]
    assert len(exchange) == 20
    assert all(e["args"]["op"] == "DistributedOptimizer.grads[0]" for e in exchange)
    assert all(e["args"]["bytes"] == (784 * 16 + 16 + 16 * 10 + 10) * 4 for e in exchange)
    assert any(e["args"].get("joined") for e in spans if e["name"] == "apply") == joined
    assert any(e["ph"] == "M" and e["args"].get("name") == f"rank {rank}" for e in events)


def test_collectives_while_others_joined_fail_everywhere_without_hang(two_ranks):
    tmp_path, recs = two_ranks["misuse_dir"], two_ranks["misuse"]
    assert len(recs) == 2, recs
    for r in recs:
        assert r["error"] == "MismatchError", r
        assert "allreduce 'loss'" in r["message"] and "dlion.join.control" in r["message"]
        assert r["timeline"] == r["timeline_expected"] == str(tmp_path / f"t.rank{r['rank']}.json")
        doc = json.loads((tmp_path / f"t.rank{r['rank']}.json").read_text())
        steps = [e for e in doc["traceEvents"] if e["name"] == "step"]
        assert len(steps) == 2 and all(e["pid"] == r["rank"] for e in steps)


def test_model_fit_matches_the_custom_loop_and_callbacks_follow_horovod(two_ranks):
    recs = two_ranks["fit"]
    assert len(recs) == 2, recs
    assert recs[0]["digest"] == recs[1]["digest"], "ranks ended with different weights"
    assert recs[0]["history"] == recs[1]["history"]  # MetricAverageCallback
    for r in recs:
        assert r["moved"] > 1e-2, "training did not change the weights"
        assert r["max_abs_err"] <= 1e-5 * max(1.0, r["scale"]), r
        assert r["tape_err"] <= 1e-5 * max(1.0, r["scale"]), r  # tape inside a tf.function
        assert r["exchanges"] == 16 and r["iterations"] == 16
        assert r["seen_lr"] == pytest.approx(r["ref_lr"], rel=1e-6)
        assert r["seen_lr"][0] == pytest.approx(0.05 / 2) and r["seen_lr"][-1] == pytest.approx(
            0.05
        )
