"""Bad input on real ranks (issue 18): a typed error on every rank naming the rank and what
differs, or the correct result; never a crash, a hang or a silently wrong result."""

import pytest
from conftest import run_each, run_mpi

pytestmark = pytest.mark.mpi


def _errors_everywhere(recs, case, kind, *needles):
    for rec in recs:
        seen = rec["seen"][case]
        assert seen["error"] == kind and seen["is_dlion"], (rec["rank"], case, seen)
        for needle in needles:
            assert needle in seen["message"], (rec["rank"], case, needle, seen["message"])


@pytest.mark.parametrize("np_", [2, 3])
def test_collectives_refuse_or_negotiate_bad_input(np_):
    res = run_mpi("bad_input", np_, "collectives", timeout=180)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert [r["rank"] for r in recs] == list(range(np_)), res.explain()
    last = np_ - 1
    for rec in recs:
        seen = rec["seen"]
        # objects travel pickled: root's value everywhere, in place for an object array
        assert seen["dict_broadcast"] == {"error": None, "value": "{'lr': 0.1}"}, seen
        assert seen["object_array_broadcast"]["value"] == {
            "array": [{"a": 0}, None],
            "dtype": "object",
        }
        assert seen["list_broadcast"]["value"] == {"array": [1.5, 2.0], "dtype": "float64"}
        assert seen["int_min"]["value"] == {"array": [1, -last], "dtype": "int64"}
        assert rec["usable"], rec
    _errors_everywhere(recs, "object_allreduce", "InvalidArgumentError", "holds Python objects")
    _errors_everywhere(recs, "object_allgather", "InvalidArgumentError", "holds Python objects")
    _errors_everywhere(
        recs, "dtype_shape_broadcast", "MismatchError", "int32[4]", "int64[2]", "rank 1 submitted"
    )
    _errors_everywhere(recs, "shape_broadcast", "MismatchError", "float64[2,3]", "float64[3,2]")
    _errors_everywhere(recs, "op_min_max", "MismatchError", "allreduce(min)", "allreduce(max)")
    _errors_everywhere(recs, "op_sum_max", "MismatchError", ", sum,", "allreduce(max)")
    _errors_everywhere(recs, "op_sum_average", "MismatchError", ", sum,", ", average,")
    _errors_everywhere(
        recs, "int_op_min_product", "MismatchError", "allreduce(min)", "allreduce(product)"
    )
    _errors_everywhere(recs, "roots_differ_object", "MismatchError", "different roots", "root 1")
    _errors_everywhere(
        recs, "calls_differ", "MismatchError", "allgather_object", "broadcast_object"
    )
    _errors_everywhere(recs, "root_not_int", "InvalidArgumentError", "valid roots", "as an int")
    # One rank's bad argument: it raises its own error, the others fail at once naming it.
    for case, own, others in [
        ("one_rank_bad_op", "op must be one of", f"rank {last} submitted allgather"),
        ("one_rank_non_contiguous", "not C-contiguous", f"refused (rank {last}'s error)"),
        ("one_rank_bad_root", "valid roots", f"refused (rank {last}'s error)"),
        ("one_rank_bad_name", "name must be a str", "<invalid name>"),
        ("one_rank_unpicklable", "cannot be pickled", f"rank {last} refused the call"),
        ("one_rank_ragged_min", "expected a numpy array", f"rank {last} refused the call"),
    ]:
        for rec in recs:
            seen = rec["seen"][case]
            assert seen["is_dlion"], (case, seen)
            want = own if rec["rank"] == last else others
            assert want in seen["message"], (rec["rank"], case, want, seen["message"])


def test_settings_that_change_operations_are_refused_at_init():
    res = run_mpi("bad_input", 2, "init_settings", timeout=120)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == 2
    for r in recs:
        assert r["error"] == "InvalidArgumentError", r
        assert "rank 1 runs dlion with other settings than rank 0" in r["message"]
        assert "lan_bandwidth_Bps=1000000000.0 (DLION_LAN_BANDWIDTH_BPS" in r["message"]
        assert r["initialized"] is False


def test_a_bad_option_on_one_rank_fails_init_everywhere_at_once():
    res = run_mpi("bad_input", 3, "init_bad_option", timeout=120)
    assert res.returncode == 0, res.explain()
    assert res.seconds < 50, res.explain()  # not the 60 s stall timeout of the tests
    recs = res.records()
    assert len(recs) == 3
    for r in recs:
        assert r["initialized"] is False
        assert "abort_on_exception (DLION_ABORT_ON_EXCEPTION) takes True or False" in r["message"]
        assert "got 'no'" in r["message"]
    assert recs[2]["error"] == "OptionTypeError"
    assert all(r["error"] == "InvalidArgumentError" for r in recs[:2])
    assert "dlion.init failed on rank 2" in recs[0]["message"]


def test_an_unwritable_timeline_fails_at_init():
    res = run_mpi("bad_input", 2, "init_bad_timeline", timeout=120)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == 2 and all(r["ok"] for r in recs)
    assert "timeline (DLION_TIMELINE)='/nonexistent-dlion-dir/trace.json'" in recs[0]["message"]
    assert "does not exist" in recs[0]["message"]
    assert "dlion.init failed on rank 0" in recs[1]["message"]


def test_infinite_stall_timeout_means_never():
    res = run_mpi("bad_input", 2, "never_time_out", timeout=120)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == 2
    for r in recs:
        assert r["init"]["error"] is None and r["later"]["error"] is None, r
        assert r["later"]["value"] == {"array": [2.0] * 4, "dtype": "float64"}
        assert r["timeout"] == r["engine_timeout"] == 1e9


@pytest.fixture(scope="module")
def tf_cases(tmp_path_factory) -> dict[str, list[dict]]:
    """The TensorFlow scenarios of bad_input_tf, one job for all (one TF start on each rank)."""
    folder = tmp_path_factory.mktemp("throwaway")
    return run_each(
        2,
        ["bad_input_tf", "weight"],
        ["bad_input_tf", "gradients"],
        ["bad_input_tf", "throwaway", str(folder)],
        timeout=300,
    )


@pytest.mark.tf
def test_weights_not_finite_in_the_buffer_dtype_fail_the_step_everywhere(tf_cases):
    recs = tf_cases["bad_input_tf weight"]
    assert len(recs) == 2
    for rec in recs:
        seen = rec["seen"]
        for case in ("one_rank", "all_ranks", "overflow"):
            assert seen[case]["error"] in ("InvalidArgumentError", "MismatchError"), (case, seen)
            assert seen[case]["is_dlion"]
        assert "Allreduce(weight=1e+39)" in seen["all_ranks"]["message"]
        assert "not finite in the buffer's dtype float32" in seen["all_ranks"]["message"]
        assert rec["after"]["error"] is None and rec["changed"], rec
    # the bad rank names its weight; the other fails at once, naming the bad rank's refusal
    assert "Allreduce(weight=1e+39)" in recs[1]["seen"]["one_rank"]["message"]
    assert "refused (rank 1's error)" in recs[0]["seen"]["one_rank"]["message"]
    assert "weight x gradient is not finite" in recs[0]["seen"]["overflow"]["message"]


@pytest.mark.tf
def test_gradients_that_are_not_tensors_are_named(tf_cases):
    recs = tf_cases["bad_input_tf gradients"]
    assert len(recs) == 2
    for rec in recs:
        for case, kind in (("numpy", "numpy.ndarray"), ("list", "builtins.list")):
            seen = rec["seen"][case]
            assert seen["error"] == "InvalidArgumentError", seen
            assert f"gradient 0 (for 'sequential/dense/kernel') is a {kind}" in seen["message"]
            assert "tf.convert_to_tensor" in seen["message"]
        assert rec["ok"]["error"] is None


@pytest.mark.tf
def test_same_architecture_after_a_throwaway_model_trains_and_restores(tf_cases):
    recs = next(v for k, v in tf_cases.items() if k.startswith("bad_input_tf throwaway "))
    assert len(recs) == 2
    assert recs[0]["names"] != recs[1]["names"]  # Keras numbered rank 0's layers on
    for rec in recs:
        assert rec["names"] != rec["fresh_names"]
        for key in ("train", "saved", "loaded"):
            assert rec[key]["error"] is None, (key, rec[key])
        assert rec["same"] and rec["replicas_equal"], rec
