"""The dynamic-membership scenarios of the micro-cloud benchmark: a site leaves and comes back.

One seed of scenario ``wan-leave`` is, per policy, one supervised job: ``python -m dlion.run
--hosts FILE`` over ``mpiexec``, the worker checkpointing every ``--checkpoint-every`` steps
and resuming with ``dlion.checkpoint.load(..., elastic="average")`` after each restart
(benchmarks/microcloud_elastic.py). This module edits the host list while it runs: when the
training clock (benchmarks/microcloud_clock.py: training seconds since the first start,
evaluation excluded, recoveries counted) reaches ``--leave-at``, the leaving site's line goes;
at ``--rejoin-at`` it comes back. Each edit writes another file and renames it into place
(atomic). The supervisor sees the change within ``DISCOVER_EVERY`` s, stops the job (SIGTERM,
``GRACE`` s) and starts it on the hosts listed then. Every attempt runs under the emulation of
the sites present (the worker's ``--topology``). The same seed's run without the event, the
scenario's ``base`` measured in the same command, is what it is compared with
(benchmarks/microcloud_elastic_report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import microcloud_clock as jclock
import microcloud_launch as launcher
import topology as topo
from microcloud_elastic_report import NO_EVENT

DISCOVER_EVERY = 0.5  # s between the supervisor's reads of the host list
GRACE = 5.0  # s between SIGTERM and SIGKILL of a stopped job
BACKOFF = 0.5  # s before the first restart (doubling, python -m dlion.run --backoff)


def hosts_text(sites: list[tuple[str, int]]) -> str:
    """A host list (``host:slots:site`` lines) with every site's ranks on this machine."""
    return "".join(f"localhost:{n}:{name}\n" for name, n in sites)


def write_hosts(path: Path, sites: list[tuple[str, int]]) -> None:
    """Replace the host list at ``path`` atomically: another file, then a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(hosts_text(sites))
    os.replace(tmp, path)


def plan(tp: topo.Topology, leaves: str, leave_at: float, rejoin_at: float) -> list[dict]:
    """The host-list edits: ``leaves`` goes at ``leave_at`` s, comes back at ``rejoin_at``
    (0: never), on the training clock."""
    if leaves not in dict(tp.sites):
        raise ValueError(f"site {leaves!r} is not one of {[s for s, _ in tp.sites]}")
    if len(tp.sites) < 2:
        raise ValueError("a site can leave only a topology of at least two sites")
    rest = [(s, n) for s, n in tp.sites if s != leaves]
    edits = [{"at_s": leave_at, "what": f"{leaves} leaves", "sites": rest}]
    if rejoin_at:
        edits.append({"at_s": rejoin_at, "what": f"{leaves} rejoins", "sites": list(tp.sites)})
    return edits


def supervisor_command(
    args: argparse.Namespace, tp: topo.Topology, worker: list[str], hosts: Path, edits: int
) -> list[str]:
    """``python -m dlion.run ... -- python microcloud_worker.py ...`` for one policy."""
    return [
        sys.executable,
        "-m",
        "dlion.run",
        f"--hosts={hosts}",
        f"--discover-every={DISCOVER_EVERY}",
        f"--backoff={BACKOFF}",
        f"--grace={GRACE}",
        f"--max-restarts={edits + 2}",  # one per edit, and two failures
        "--min-np=1",
        "--",
        sys.executable,
        str(launcher.HERE / "microcloud_worker.py"),
        *worker,
    ]


def launch(
    args: argparse.Namespace,
    key: str,
    tp: topo.Topology,
    *,
    seed: int,
    policy: str,
    budget: float,
) -> dict[str, Any]:
    """One policy of one seed of dynamic scenario ``key``: its run, as the worker's (curve on
    the training clock, recoveries included) with ``elastic`` (restarts, recoveries, edits)."""
    edits = plan(tp, launcher.SCENARIOS[key].leaves, args.leave_at, args.rejoin_at)
    timeout = args.timeout or 240 + 2 * budget + 90 * len(edits)
    with tempfile.TemporaryDirectory(prefix="microcloud-dyn-") as tmp:
        d = Path(tmp)
        hosts, journal, result = d / "hosts.txt", d / "journal.jsonl", d / "result.json"
        write_hosts(hosts, tp.sites)
        wa = launcher.worker_args(
            args, "supervised", tp, seed=seed, policies=policy, budget=budget, result=str(result)
        )
        wa += [
            f"--journal={journal}",
            f"--checkpoint-dir={d / 'ckpt'}",
            f"--checkpoint-every={args.checkpoint_every}",
            f"--topology={tp.describe()}",
            f"--global-batch={args.batch * tp.size}",
        ]
        cmd = supervisor_command(args, tp, wa, hosts, len(edits))
        print(
            f"[microcloud] inprocess/{key} seed {seed}: {policy} ({budget:g} s; "
            + ", ".join(f"{e['what']} at {e['at_s']:g} s" for e in edits)
            + f"): {shlex.join(cmd[:5])} ...",
            flush=True,
        )
        env = launcher.rank_env("")  # the worker derives its emulation per layout
        changes = _supervise(cmd, env, journal, hosts, edits, timeout, f"{key} seed {seed}")
        if not result.exists():
            raise SystemExit(f"[microcloud] {key} seed {seed} {policy}: no result was written")
        raw = json.loads(result.read_text())
        events = jclock.read(journal)
        tl = jclock.timeline(events, changes)
    run = dict(raw["policies"][policy])
    run.update(
        curve=tl["curve"],
        steps=tl["steps"],
        train_s=tl["train_s"],
        steps_per_s=tl["steps"] / tl["train_s"] if tl["train_s"] > 0 else 0.0,
        final_accuracy=tl["curve"][-1]["accuracy"],
        elastic={k: tl[k] for k in ("restarts", "recoveries", "lost", "save_s", "attempts")}
        | {"edits": changes, "journal": events, "mb_per_link": "the last attempt's"},
    )
    raw["policies"] = {policy: run}
    return raw


def _supervise(
    cmd: list[str],
    env: dict[str, str],
    journal: Path,
    hosts: Path,
    edits: list[dict],
    timeout: float,
    what: str,
) -> list[dict]:
    """Run the supervisor; make each edit when the journal's clock reaches it; the edits made
    (with their wall time and clock reading)."""
    proc = subprocess.Popen(cmd, env=env, cwd=launcher.ROOT, text=True)
    deadline = time.monotonic() + timeout
    pending, done = list(edits), []
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"[microcloud] {what} did not finish within {timeout:.0f} s")
            if pending:
                now = time.time()
                at = jclock.clock(jclock.read(journal), now)
                if at >= pending[0]["at_s"]:
                    e = pending.pop(0)
                    write_hosts(hosts, e["sites"])
                    line = ",".join(f"localhost:{n}:{s}" for s, n in e["sites"])
                    done.append({"wall": now, "clock_s": at, "what": e["what"], "hosts": line})
                    print(f"[microcloud] {what}: {e['what']} at {at:.1f} s", flush=True)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.terminate()  # the supervisor stops the job (SIGTERM, then SIGKILL)
            try:
                proc.wait(GRACE + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
    if proc.returncode != 0:
        raise SystemExit(f"[microcloud] {what} failed (supervisor exit {proc.returncode})")
    return done


def launch_seed(
    args: argparse.Namespace,
    mode: str,
    key: str,
    tp: topo.Topology,
    *,
    seed: int,
    policies: str,
    budget: float,
) -> dict[str, Any]:
    """One seed of dynamic scenario ``key`` (the shape of ``microcloud_launch.launch``'s
    result): first every policy without the event (scenario ``plain``, one job, as the plain
    scenario runs), then each policy with it (one supervised job each). Runs without the event
    are named ``{policy} (no event)``."""
    if mode != "inprocess":
        raise SystemExit(f"scenario {key}: in-process mode only (see --help)")
    sc = launcher.SCENARIOS[key]
    plain_tp = launcher.SCENARIOS[sc.plain].topology(tp.size, args.slow_step)
    raw = launcher.launch(
        args, mode, sc.plain, plain_tp, seed=seed, policies=policies, budget=budget
    )
    runs = {}
    for policy in policies.split(","):
        dyn = launch(args, key, tp, seed=seed, policy=policy, budget=budget)
        runs[policy] = dyn["policies"][policy]
    runs.update({f"{name}{NO_EVENT}": run for name, run in raw["policies"].items()})
    raw["policies"] = runs
    return raw


def describe_events(args: argparse.Namespace, key: str) -> dict[str, Any] | None:
    """What a dynamic scenario does, for the JSON (None for the others)."""
    sc = launcher.SCENARIOS[key]
    if not sc.leaves:
        return None
    return {
        "leaves": sc.leaves,
        "leave_at_s": args.leave_at,
        "rejoin_at_s": args.rejoin_at or None,
        "checkpoint_every": args.checkpoint_every,
        "without_event": sc.plain,
        "supervisor": (
            f"python -m dlion.run --discover-every {DISCOVER_EVERY:g} --backoff {BACKOFF:g} "
            f"--grace {GRACE:g}"
        ),
        "clock": "training s since the first start, evaluation excluded, recoveries counted",
    }
