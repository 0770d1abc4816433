"""Micro-cloud benchmark: Allreduce, Gaia, Ako and DLion on the same emulated micro-cloud.

    python benchmarks/microcloud.py --quick          # < 10 min on 2 cores: lan 12 s and
                                                     # wan-hetero 70 s per policy, target 0.80
    python benchmarks/microcloud.py                  # all four scenarios, longer budgets
    python benchmarks/microcloud.py --scenarios wan --policies dlion,allreduce --budget 30
    mpiexec -n 4 python benchmarks/microcloud.py --scenarios wan-hetero   # under mpiexec
    python benchmarks/microcloud.py --quick --microcloud    # real namespaces (root; see below)
    python benchmarks/microcloud.py --topology "A:2,B:1,C:1 A-B:20mbit:40ms A-C:10mbit:60ms \\
        B-C:10mbit:60ms cpu=C:0.5" --microcloud              # a topology of your own

Trains the CNN of examples/train.py on Fashion-MNIST (same seed, same data split, same initial
weights) with each policy in turn, on 4 ranks (``--np``), per scenario:

  lan          homogeneous LAN: one site, no link caps
  wan          2 sites (ranks A,A,B,B) joined by a 20 Mbit/s, 40 ms WAN
  wan-hetero   the same, compute speeds 1,1,0.5,0.5
  wan-dynamic  the same, and rank 2 becomes 3x slower at step --slow-step (dynamism)

Policies: ``allreduce`` (the dense average; in-process emulation paces only peer messages, so
it runs as ``dlion.PeerExchange("dense")``, which computes the same average with every link
paced; ``examples/train.py --exchange dense``), ``gaia`` (dlion.GaiaExchange), ``ako``
(dlion.AkoExchange), ``dlion`` (PerLinkExchange + DynamicBatcher + KnowledgeTransfer).

Per scenario and policy it records the test-accuracy curve over *training* wall time
(evaluation excluded), the time to ``--target`` accuracy, the accuracy at the budget, steps/s
and MB sent per link, and writes ``microcloud.json``, ``microcloud.md`` and one PNG per
scenario into ``--out`` (default benchmarks/results/). Links are emulated in-process
(``DLION_EMULATE``) by default; ``--microcloud`` runs each scenario under
../shared/tools/microcloud (relative to the project root, or $MICROCLOUD) instead (root;
network namespaces, shaped links; compute speeds stay emulated in-process; Allreduce is then
the real collective ``dlion.Allreduce``).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import microcloud_report as report  # noqa: E402
import topology as topo  # noqa: E402

POLICIES = ("allreduce", "gaia", "ako", "dlion")
#: Selectable with --policies besides POLICIES: a Horovod-equivalent flat allreduce and DLion's
#: ablations (rank to rank instead of site-aware, no dynamic batching, no knowledge transfer,
#: the wide-area phase overlapped with the next step).
EXTRA_POLICIES = ("horovod", "dlion-ranks", "dlion-nobatch", "dlion-nokt", "dlion-overlap")
WAN = "A-B:20mbit:40ms"
TOOL = Path(os.environ.get("MICROCLOUD") or ROOT.parent / "shared" / "tools" / "microcloud")


@dataclass(frozen=True)
class Scenario:
    """One micro-cloud: a title and a topology string (benchmarks/topology.py) for n ranks."""

    title: str
    spec: str  # format fields: {a} ranks of site A, {b} of B, {n} all, {half}, {slow_step}

    def topology(self, n: int, slow_step: int) -> topo.Topology:
        half = n // 2
        speeds = ",".join("1" if r < half else "0.5" for r in range(n))
        return topo.parse(
            self.spec.format(a=half, b=n - half, n=n, half=half, slow_step=slow_step, speeds=speeds)
        )

    @property
    def two_sites(self) -> bool:
        return "B:" in self.spec


SCENARIOS = {
    "lan": Scenario("homogeneous LAN (4 ranks, one site)", "A:{n}"),
    "wan": Scenario("2 sites, 20 Mbit/s 40 ms WAN", "A:{a},B:{b} " + WAN),
    "wan-hetero": Scenario(
        "2 sites, WAN, compute 1,1,0.5,0.5", "A:{a},B:{b} " + WAN + " compute={speeds}"
    ),
    "wan-dynamic": Scenario(
        "2 sites, WAN, compute 1,1,0.5,0.5, rank 2 3x slower mid-run",
        "A:{a},B:{b} " + WAN + " compute={speeds} slow={half}:3@{slow_step}",
    ),
}
# --quick: two scenarios, short budgets (s), and a lower default target (0.85 takes ~300 steps,
# more than a 70 s budget gives the slower policies on the WAN).
QUICK = {"lan": 12.0, "wan-hetero": 70.0}
QUICK_TARGET = 0.80
FULL = {"lan": 60.0, "wan": 180.0, "wan-hetero": 180.0, "wan-dynamic": 180.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"scenarios and budgets {QUICK}")
    p.add_argument("--scenarios", default=None, help=f"comma-separated of {list(SCENARIOS)}")
    p.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated of {POLICIES}")
    p.add_argument("--budget", type=float, default=None, help="training seconds per policy")
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help=f"target test accuracy (0.85; --quick {QUICK_TARGET})",
    )
    p.add_argument("--np", type=int, default=4, help="ranks (even for two sites)")
    p.add_argument(
        "--topology",
        default=None,
        help="a topology of your own (benchmarks/topology.py), run as scenario 'custom', e.g. "
        "'A:2,B:1,C:1 A-B:20mbit:40ms A-C:10mbit:60ms B-C:10mbit:60ms compute=1,1,0.5,1'",
    )
    p.add_argument("--evals", type=int, default=20, help="evaluations per run (about)")
    p.add_argument("--test-samples", type=int, default=2000, help="test subset evaluated")
    p.add_argument("--slow-step", type=int, default=150, help="wan-dynamic: step of slowdown")
    p.add_argument("--max-steps", type=int, default=0, help="also stop a run after N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gaia-threshold", type=float, default=0.01)
    p.add_argument("--ako-partitions", type=int, default=4)
    p.add_argument("--staleness", type=int, default=0, help="for every peer policy")
    p.add_argument(
        "--no-charge", action="store_true", help="do not charge DLion's collectives WAN time"
    )
    p.add_argument("--microcloud", action="store_true", help="run under shared/tools/microcloud")
    p.add_argument("--timeout", type=float, default=0, help="seconds per scenario (0: auto)")
    p.add_argument("--out", default=str(HERE / "results"), help="results folder")
    p.add_argument("--data", default=None, help="Fashion-MNIST IDX folder")
    args = p.parse_args(argv)
    budgets = QUICK if args.quick else FULL
    if args.topology:
        try:
            custom = topo.parse(args.topology)
        except ValueError as e:
            p.error(str(e))
        SCENARIOS["custom"] = Scenario(f"custom: {custom.describe()}", custom.describe())
        FULL["custom"] = 180.0
        args.np = custom.size
        if not args.scenarios:
            args.scenarios = "custom"
    names = args.scenarios.split(",") if args.scenarios else list(budgets)
    bad = [s for s in names if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {bad}: use {list(SCENARIOS)}")
    pols = args.policies.split(",")
    if [x for x in pols if x not in POLICIES + EXTRA_POLICIES] or not pols:
        p.error(
            f"--policies {args.policies!r}: use a comma-separated subset of "
            f"{POLICIES + EXTRA_POLICIES}"
        )
    halves = [s for s in names if s != "custom" and SCENARIOS[s].two_sites]
    if args.np < 2 or (args.np % 2 and halves):
        p.error(f"--np {args.np}: need at least 2 ranks, and an even number for two sites")
    if args.target is None:
        args.target = QUICK_TARGET if args.quick else 0.85
    if not 0 < args.target <= 1:
        p.error(f"--target {args.target}: must be in (0, 1]")
    if args.budget is not None and args.budget <= 0:
        p.error(f"--budget {args.budget}: must be > 0")
    args.scenario_budgets = {s: args.budget or budgets.get(s, FULL[s]) for s in names}
    return args


def worker_args(args: argparse.Namespace, key: str, result: str) -> list[str]:
    budget = args.scenario_budgets[key]
    out = [
        f"--policies={args.policies}",
        f"--budget={budget}",
        f"--eval-every={budget / args.evals}",
        f"--test-samples={args.test_samples}",
        f"--seed={args.seed}",
        f"--gaia-threshold={args.gaia_threshold}",
        f"--ako-partitions={args.ako_partitions}",
        f"--staleness={args.staleness}",
        f"--max-steps={args.max_steps}",
        f"--charge-collectives={0 if args.no_charge or args.microcloud else 1}",
        f"--result={result}",
    ]
    if args.microcloud:
        out.append("--collective-allreduce")
    else:
        out.append("--sites=" + ",".join(scenario_topology(args, key).site_of_rank()))
    if args.data:
        out.append(f"--data={args.data}")
    return out


def scenario_topology(args: argparse.Namespace, key: str) -> topo.Topology:
    """The topology of scenario ``key`` on ``--np`` ranks."""
    return SCENARIOS[key].topology(args.np, args.slow_step)


def rank_env(emulate: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        OMP_NUM_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONUNBUFFERED="1",
        DLION_EMULATE=emulate,
    )
    return env


def launch(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """Run one scenario on --np ranks; returns rank 0's raw results."""
    tp = scenario_topology(args, key)
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    worker = str(HERE / "microcloud_worker.py")
    budget = args.scenario_budgets[key]
    timeout = args.timeout or 120 + len(args.policies.split(",")) * (2 * budget + 60)
    with tempfile.TemporaryDirectory(prefix="microcloud-") as tmp:
        result = str(Path(tmp) / "result.json")
        py = [sys.executable, worker, *worker_args(args, key, result)]
        if args.microcloud:
            env = rank_env(tp.emulate_realnet())
            env["MPIEXEC"] = mpiexec
            cmd = [str(TOOL), "run", "--", *py]
            _tool_up(tp, env)
        else:
            env = rank_env(tp.emulate_inprocess())
            cmd = [mpiexec, "-n", str(tp.size), *py]
        print(
            f"[microcloud] {key}: {shlex.join(cmd[:4])} ... (budget {budget:g} s/policy)",
            flush=True,
        )
        try:
            proc = subprocess.run(cmd, env=env, cwd=ROOT, timeout=timeout, text=True)
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"[microcloud] scenario {key} did not finish within {timeout:.0f} s"
            ) from None
        finally:
            if args.microcloud:
                subprocess.run([str(TOOL), "down"], env=env, check=False)
        if proc.returncode != 0 or not Path(result).exists():
            raise SystemExit(f"[microcloud] scenario {key} failed (exit {proc.returncode})")
        return json.loads(Path(result).read_text())


def _tool_up(tp: topo.Topology, env: dict[str, str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit("--microcloud needs root (network namespaces, tc); run as root or drop it")
    if not os.access(TOOL, os.X_OK):
        raise SystemExit(f"--microcloud: {TOOL} not found or not executable (set MICROCLOUD=path)")
    subprocess.run([str(TOOL), "down"], env=env, check=False, capture_output=True)
    subprocess.run([str(TOOL), "up", *tp.microcloud_up()], env=env, check=True)


def collect(
    args: argparse.Namespace, raws: dict[str, dict[str, Any]], started: float
) -> dict[str, Any]:
    mode = "microcloud (namespaces, shaped links)" if args.microcloud else "in-process emulation"
    results: dict[str, Any] = {
        "mode": ("quick, " if args.quick else "") + mode,
        "command": "python benchmarks/microcloud.py " + shlex.join(sys.argv[1:]),
        "target_accuracy": args.target,
        "budget_s": max(args.scenario_budgets.values()),
        "test_samples": args.test_samples,
        "evals_per_run": args.evals,
        "seconds_total": time.perf_counter() - started,
        "scenarios": {},
    }
    for key, raw in raws.items():
        sc, budget = SCENARIOS[key], args.scenario_budgets[key]
        results["scenarios"][key] = {
            "title": sc.title,
            "topology": scenario_topology(args, key).describe(),
            "budget_s": budget,
            "emulate": raw["emulate"],
            "sites": raw["sites"],
            "data": raw["data"],
            "policies": report.summarize(raw, args.target, budget),
        }
    return results


def under_mpiexec() -> bool:
    return any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    if under_mpiexec():
        raws = {k: run_here(args, k) for k in _single(args)}
        if raws[next(iter(raws))] is None:
            return  # not rank 0
    else:
        raws = {k: launch(args, k) for k in args.scenario_budgets}
    results = collect(args, raws, started)
    paths = report.write(results, Path(args.out))
    print(report.table(results))
    print("[microcloud] wrote " + ", ".join(paths.values()), flush=True)


def _single(args: argparse.Namespace) -> list[str]:
    keys = list(args.scenario_budgets)
    if len(keys) != 1:
        raise SystemExit(
            f"under mpiexec the benchmark runs one scenario (dlion starts once per process); "
            f"pass --scenarios with one of {list(SCENARIOS)}, or run it without mpiexec"
        )
    return keys


def run_here(args: argparse.Namespace, key: str) -> Any:
    """Run scenario ``key`` in this process (under mpiexec); rank 0 returns its raw results."""
    import microcloud_worker
    from mpi4py import MPI

    if args.microcloud:
        raise SystemExit("--microcloud launches mpiexec itself: run it without mpiexec")
    comm = MPI.COMM_WORLD
    if comm.size != args.np:
        args.np = comm.size
    os.environ["DLION_EMULATE"] = scenario_topology(args, key).emulate_inprocess()
    result = str(Path(tempfile.gettempdir()) / f"microcloud-{os.getpid()}-{comm.rank}.json")
    result = comm.bcast(result, root=0)
    microcloud_worker.main(worker_args(args, key, result))
    if comm.rank != 0:
        return None
    raw = json.loads(Path(result).read_text())
    os.unlink(result)
    return raw


if __name__ == "__main__":
    main()
