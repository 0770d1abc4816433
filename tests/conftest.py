"""Shared test helpers: launch real MPI ranks with the environment's mpiexec."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ROOT / "tests" / "mpi" / "workers"
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")

# One TF/BLAS thread per rank: up to 4 ranks share 2 cores.
RANK_ENV = {
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONUNBUFFERED": "1",
    # The source tree first; then what the caller's PYTHONPATH adds (a build installed with
    # pip --target, so that its dlion_core is the one tested).
    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    "DLION_STALL_WARNING_S": "5",
    "DLION_STALL_TIMEOUT_S": "60",
    "DLION_LIVENESS_TIMEOUT_S": "10",
}


@dataclass
class MpiResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    _records: list[dict]

    def records(self) -> list[dict]:
        """What each rank passed to workers/_report.report(), sorted by rank."""
        return self._records

    def explain(self) -> str:
        return (
            f"exit {self.returncode} after {self.seconds:.1f} s\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-6000:]}"
        )


def run_mpi(
    worker: str,
    np: int,
    *args: str,
    timeout: float = 120,
    env: dict | None = None,
    mpiexec_args: list[str] | None = None,
    survive_signals: bool = False,
) -> MpiResult:
    """Run tests/mpi/workers/<worker>.py on `np` ranks; fail the test if it outlives `timeout`."""
    with tempfile.TemporaryDirectory(prefix="dlion-test-") as out:
        full_env = {**os.environ, **RANK_ENV, "DLION_TEST_OUT": out, **(env or {})}
        cmd = [
            MPIEXEC,
            *(mpiexec_args or []),
            "-n",
            str(np),
            sys.executable,
            str(WORKERS / f"{worker}.py"),
            *args,
        ]
        if survive_signals:
            # Hydra tears the whole job down when a rank dies of a signal; behind a shell the
            # death is a plain exit status, and -disable-auto-cleanup lets the others run on
            # (Hydra then tells them with SIGUSR1, whose default action would end them).
            script = "trap '' USR1; " + " ".join(shlex.quote(c) for c in cmd[cmd.index("-n") + 2 :])
            cmd = [MPIEXEC, "-disable-auto-cleanup", "-n", str(np), "sh", "-c", script]
        start = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(
                f"{' '.join(cmd)} did not finish within {timeout} s (a hang)\n"
                f"--- stdout ---\n{e.stdout}\n--- stderr ---\n{e.stderr}"
            )
        seconds = time.monotonic() - start
        records = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
        records.sort(key=lambda r: r["rank"])
    return MpiResult(proc.returncode, proc.stdout, proc.stderr, seconds, records)


class Scenarios(dict):
    """``{"SCENARIO joined by spaces": every rank's record for it}`` (see :func:`run_each`)."""

    output: dict[str, tuple[str, str]]


def run_each(np: int, *scenarios: list[str], **kwargs) -> Scenarios:
    """Run several scenarios in one job (workers/each.py: one start of Python, MPI and
    TensorFlow for all), each ``[NAME=VALUE, ...] WORKER [ARG, ...]``; fail the test if the job
    fails. Returns ``{"SCENARIO joined by spaces": every rank's record for it}``, each record
    with its ``"rank"``; ``.output[SCENARIO]`` is what the scenario printed on Python's
    ``sys.stdout`` and ``sys.stderr``, all ranks' one after the other."""
    args: list[str] = []
    for scenario in scenarios:
        args += ([] if not args else ["--"]) + list(scenario)
    res = run_mpi("each", np, *args, **kwargs)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert [r["rank"] for r in recs] == list(range(np)), res.explain()
    labels = [" ".join(s) for s in scenarios]
    for r in recs:
        assert sorted(r["scenarios"]) == sorted(labels), (r["rank"], res.explain())
    out = Scenarios(
        (label, [{"rank": r["rank"], **r["scenarios"][label]} for r in recs]) for label in labels
    )
    out.output = {
        label: (
            "".join(r["output"][label]["stdout"] for r in recs),
            "".join(r["output"][label]["stderr"] for r in recs),
        )
        for label in labels
    }
    return out
