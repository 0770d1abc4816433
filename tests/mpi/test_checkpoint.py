"""Checkpoint and resume of every rank's state with real ranks (dlion.checkpoint)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import MPIEXEC, RANK_ENV, ROOT, run_each, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.tf]

TOTAL, EVERY, KILL_AT = 10, 3, 8


def _args(folder, *, kill_at=0, resume=0, kind="allreduce"):
    return ["train", str(folder), str(TOTAL), str(EVERY), str(kill_at), str(resume), kind]


def train(folder, *, kill_at=0, resume=0, np_=2, kind="allreduce"):
    args = _args(folder, kill_at=kill_at, resume=resume, kind=kind)
    return run_mpi("checkpointing", np_, *args, timeout=240)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    """The 2-rank runs that end normally, one job for all (one TensorFlow start on each rank):
    the uninterrupted reference runs of both kinds, and the checkpoint that the world size test
    loads with 3 ranks. {name: every rank's record}; "world_size_dir": that checkpoint."""
    ref, world = tmp_path_factory.mktemp("ref"), tmp_path_factory.mktemp("world")
    scenarios = {
        **{
            kind: ["checkpointing", *_args(ref / kind, kind=kind)] for kind in ("allreduce", "peer")
        },
        "world_size_save": ["checkpointing", "world_size_save", str(world)],
    }
    seen = run_each(2, *scenarios.values(), timeout=480)
    return {"world_size_dir": world, **{k: seen[" ".join(a)] for k, a in scenarios.items()}}


@pytest.mark.parametrize("kind", ["allreduce", "peer"])
def test_killed_run_resumes_from_last_checkpoint_exactly(tmp_path, kind, two_ranks):
    # The reference: the same run, never interrupted.
    ref = two_ranks[kind]
    # Killed (SIGKILL on rank 0) after step 8: the newest checkpoint is step 6.
    killed = train(tmp_path / "ckpt", kill_at=KILL_AT, kind=kind)
    assert killed.returncode != 0, killed.explain()
    before = killed.records()
    assert len(before) == 2 and all(sorted(r["saved"]) == ["3", "6"] for r in before)
    latest = json.loads((tmp_path / "ckpt" / "latest.json").read_text())
    assert latest == {"step": 6, "path": "step-00000006", "job": latest["job"]}
    owner = json.loads((tmp_path / "ckpt" / "owner.json").read_text())
    assert owner["job"] == latest["job"] and owner["resumed_from"] is None
    manifest = json.loads((tmp_path / "ckpt" / "step-00000006" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and len(manifest["sites"]) == 2
    assert manifest["dlion_version"] and manifest["step"] == 6 and manifest["format"] == 2
    assert manifest["job"]["id"] == latest["job"]
    assert sorted(manifest["files"]) == ["rank-00000.npz", "rank-00001.npz"]
    entries = ["data", "extra", "model", "optimizer"] + (["exchange"] if kind == "peer" else [])
    assert sorted(manifest["entries"]) == sorted(entries)

    resumed = train(tmp_path / "ckpt", resume=1, kind=kind)
    assert resumed.returncode == 0, resumed.explain()
    after = resumed.records()
    assert len(after) == 2
    for b, a, r in zip(before, after, ref):
        got = a["restored"]
        want = b["saved"]["6"]
        assert got["step"] == 6
        # exactly what was saved: weights, optimizer slots, data position, extra arrays
        for key in ("weights", "slots", "data", "extra", "exchange"):
            assert got[key] == want[key], (key, got[key], want[key])
        if kind == "peer":  # residuals of the link to the other rank, and the step count
            assert any(k.startswith("residual:") for k in got["exchange"]), got["exchange"]
        assert r["saved"]["6"] == want  # and the checkpoint equals the reference's state then
        # the resumed run continues where it stopped: it ends bit-identical to the reference
        assert a["final"] == r["final"]
    if kind == "allreduce":  # a dense average: replicas stay identical (top-k: they differ)
        assert after[0]["final"]["weights"] == after[1]["final"]["weights"]
    assert after[0]["final"]["data"] != after[1]["final"]["data"]  # each rank its own shard
    # keep=3: step 3, 6, 9 remain (and no temporary files)
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    want = ["latest.json", "owner.json", "step-00000003", "step-00000006", "step-00000009"]
    assert names == want, names
    # the resumed job took the directory over from the job it resumed
    owner_after = json.loads((tmp_path / "ckpt" / "owner.json").read_text())
    assert owner_after["resumed_from"] == latest["job"] != owner_after["job"]


def test_resuming_with_another_world_size_is_a_clear_error(two_ranks):
    tmp_path = two_ranks["world_size_dir"]  # saved by 2 ranks
    res = run_mpi("checkpointing", 3, "world_size_load", str(tmp_path), timeout=120)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert len(recs) == 3
    for r in recs:
        assert r["error"] == "CheckpointError", r
        assert "written by 2 ranks, this job has 3" in r["message"], r["message"]
        assert "resume with 2 ranks" in r["message"]


def test_example_train_saves_and_resumes(tmp_path):
    env = {**os.environ, **RANK_ENV}
    base = [MPIEXEC, "-n", "2", sys.executable, str(ROOT / "examples/train.py"), "--threads=1"]
    ckpt = ["--checkpoint-dir", str(tmp_path), "--checkpoint-every", "2"]

    def run(*extra):
        proc = subprocess.run(
            [*base, *ckpt, *extra], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    first = run("--max-steps", "4")
    assert "after 4 steps" in first and "resumed" not in first
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 4
    second = run("--max-steps", "6", "--resume")
    assert "resumed from step 4" in second and "after 6 steps" in second, second
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 6
