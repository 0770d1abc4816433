"""Checkpoints are all or nothing (issue 18): a file that is damaged, of another job, format or
architecture on one rank fails the load on every rank and leaves every rank's state as it was;
two jobs cannot write one directory."""

import shutil

import pytest
from conftest import run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.tf]

NP = 2
LAST = NP - 1


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two checkpoints of step 1, each written by its own job."""
    base = tmp_path_factory.mktemp("ckpt")
    for name in ("a", "b"):
        res = run_mpi("checkpoint_bad", NP, "save", str(base / name), timeout=180)
        assert res.returncode == 0, res.explain()
        assert all(r["error"] is None for r in res.records()), res.records()
    return base


SPOILED = {
    "truncate": "differs from the manifest",
    "flip": "differs from the manifest",
    "mixed": "differs from the manifest",
    "architecture": "variable 0: saved",
    "set_state": "this counter refuses to be restored",
    "unbuilt": "differs from the manifest",
    "format": "checkpoint format 1",
}


@pytest.fixture(scope="module")
def spoiled(saved, tmp_path_factory):
    """Every kind of spoiled checkpoint loaded by one job (one TensorFlow start for all), each
    on a fresh state and its own copy of checkpoint a: {kind: every rank's record}."""
    base = tmp_path_factory.mktemp("spoiled")
    for kind in SPOILED:
        shutil.copytree(saved / "a", base / kind)
    res = run_mpi(
        "checkpoint_bad", NP, "spoil_each", str(base), str(saved / "b"), *SPOILED, timeout=300
    )
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == NP, res.explain()
    return {kind: [rec[kind] | {"rank": rec["rank"]} for rec in recs] for kind in SPOILED}


@pytest.mark.parametrize("kind, why", list(SPOILED.items()))
def test_a_bad_checkpoint_on_one_rank_fails_everywhere_and_changes_nothing(spoiled, kind, why):
    bad = 0 if kind == "format" else LAST
    for rec in spoiled[kind]:
        assert rec["error"] == "CheckpointError", rec
        assert f"failed on rank {bad}" in rec["message"], rec["message"]
        assert why in rec["message"], rec["message"]
        assert rec["unchanged"], rec  # weights, slots, counter, extra: exactly as before
        assert rec["built"] == (kind != "unbuilt"), rec


def test_a_second_job_cannot_write_into_another_jobs_directory(saved, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(saved / "a", folder)
    res = run_mpi("checkpoint_bad", NP, "write", str(folder), timeout=180)
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        assert rec["error"] == "CheckpointError", rec
        assert "holds the checkpoints of another job" in rec["message"], rec["message"]
        assert "did not resume from it" in rec["message"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "latest.json",
        "owner.json",
        "step-00000001",
    ]
    # A job that resumed from the directory continues it.
    res = run_mpi("checkpoint_bad", NP, "resume_then_write", str(folder), timeout=180)
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        assert rec["loaded"]["error"] is None and rec["saved"]["error"] is None, rec
    assert (folder / "step-00000002" / "manifest.json").exists()
