"""The scenarios of the micro-cloud benchmark and how one seed of one is launched.

``launch`` starts one MPI job (``mpiexec`` in-process, or under ../shared/tools/microcloud on
the real network) that trains every policy of one seed in turn (benchmarks/microcloud_worker.py)
and returns rank 0's raw results. ``launch_reference`` starts the no-communication reference:
one process on the host (outside any namespace), no emulation, the machine's cores, the global
batch of the scenario. ``with_bandwidth`` derives a scenario whose every WAN link has one rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import topology as topo  # noqa: E402

WAN = "A-B:20mbit:40ms"
TOOL = Path(os.environ.get("MICROCLOUD") or ROOT.parent / "shared" / "tools" / "microcloud")


@dataclass(frozen=True)
class Scenario:
    """One micro-cloud: a title and a topology string (benchmarks/topology.py) for n ranks."""

    title: str
    spec: str  # format fields: {a} ranks of site A, {b} of B, {n} all, {half}, {slow_step}
    ranks: int = 0  # fixed number of ranks (0: any --np)
    wan_mbit: float | None = None  # every site-to-site link at this rate (--bandwidths)
    base: str = ""  # the scenario this one varies (--bandwidths)
    leaves: str = ""  # dynamic membership: this site leaves and rejoins (microcloud_dynamic.py)
    plain: str = ""  # dynamic membership: the same without the event, run beside it

    def topology(self, n: int, slow_step: int) -> topo.Topology:
        """The topology on ``n`` ranks; ValueError when this scenario cannot have ``n``."""
        if self.ranks and n != self.ranks:
            raise ValueError(f"this scenario has {self.ranks} ranks (--np {self.ranks})")
        half = n // 2
        if "B:" in self.spec and n % 2:
            raise ValueError("two sites of equal size need an even --np")
        speeds = ",".join("1" if r < half else "0.5" for r in range(n))
        tp = topo.parse(
            self.spec.format(a=half, b=n - half, n=n, half=half, slow_step=slow_step, speeds=speeds)
        )
        if self.wan_mbit is not None:
            if not tp.links:
                raise ValueError("it has no WAN link whose rate --bandwidths could set")
            tp = tp.with_link_rate(f"{self.wan_mbit:g}mbit")
        return tp


def with_bandwidth(key: str, mbit: float) -> str:
    """Register (in SCENARIOS) scenario ``key`` with every WAN link at ``mbit`` Mbit/s, latency
    unchanged; returns its key, ``{key}@{mbit}mbit``."""
    base = SCENARIOS[key]
    name = f"{key}@{mbit:g}mbit"
    SCENARIOS[name] = Scenario(
        f"{base.title}; every WAN link {mbit:g} Mbit/s",
        base.spec,
        base.ranks,
        wan_mbit=mbit,
        base=key,
        leaves=base.leaves,  # refused by microcloud.py's options
        plain=base.plain,
    )
    return name


SCENARIOS = {
    "lan": Scenario("homogeneous LAN (one site)", "A:{n}"),
    "wan": Scenario("2 sites, 20 Mbit/s 40 ms WAN", "A:{a},B:{b} " + WAN),
    "wan-hetero": Scenario(
        "2 sites, 20 Mbit/s 40 ms, compute 1,1,0.5,0.5", "A:{a},B:{b} " + WAN + " compute={speeds}"
    ),
    "wan-dynamic": Scenario(
        "2 sites, WAN, compute 1,1,0.5,0.5, rank 2 3x slower mid-run",
        "A:{a},B:{b} " + WAN + " compute={speeds} slow={half}:3@{slow_step}",
    ),
    "wan-leave": Scenario(
        "2 sites, 20 Mbit/s 40 ms, compute 1,1,0.5,0.5; site B leaves and rejoins",
        "A:{a},B:{b} " + WAN + " compute={speeds}",
        leaves="B",
        plain="wan-hetero",
    ),
    "3site": Scenario(
        "3 sites A:2,B:1,C:1, A-B 20 Mbit/s 40 ms, A-C B-C 10 Mbit/s 60 ms, compute 1,1,0.5,0.5",
        "A:2,B:1,C:1 A-B:20mbit:40ms A-C:10mbit:60ms B-C:10mbit:60ms compute=1,1,0.5,0.5",
        ranks=4,
    ),
}


def worker_args(
    args: argparse.Namespace,
    mode: str,
    tp: topo.Topology,
    *,
    seed: int,
    policies: str,
    budget: float,
    result: str,
) -> list[str]:
    """Arguments of benchmarks/microcloud_worker.py for one seed."""
    out = [
        f"--policies={policies}",
        f"--budget={budget}",
        f"--eval-every={args.eval_every}",
        f"--test-samples={args.test_samples}",
        f"--seed={seed}",
        f"--gaia-threshold={args.gaia_threshold}",
        f"--gaia-bits={args.gaia_bits}",
        f"--ako-partitions={args.ako_partitions}",
        f"--staleness={args.staleness}",
        f"--dlion-budget={args.dlion_budget}",
        f"--dlion-budget-fraction={args.dlion_budget_fraction}",
        f"--max-steps={args.max_steps}",
        f"--stop-at={args.stop_at}",
        f"--batch={args.batch}",
        f"--outer-every={args.outer_every}",
        f"--outer-lr={args.outer_lr}",
        f"--outer-momentum={args.outer_momentum}",
        f"--outer-fragments={args.outer_fragments}",
        f"--outer-overlap={args.outer_overlap}",
        f"--outer-bits={args.outer_bits}",
        f"--result={result}",
    ]
    if mode == "inprocess":
        out.append("--sites=" + ",".join(tp.site_of_rank()))
    if args.data:
        out.append(f"--data={args.data}")
    return out


def rank_env(emulate: str, threads: int = 1) -> dict[str, str]:
    """The environment of every rank: ``threads`` TF threads each (intra-op; one inter-op),
    quiet TF, the emulation spec."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
        TF_NUM_INTRAOP_THREADS=str(threads),
        TF_NUM_INTEROP_THREADS="1",
        OMP_NUM_THREADS=str(threads),
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONUNBUFFERED="1",
        DLION_EMULATE=emulate,
    )
    return env


def launch(
    args: argparse.Namespace,
    mode: str,
    key: str,
    tp: topo.Topology,
    *,
    seed: int,
    policies: str,
    budget: float,
) -> dict[str, Any]:
    """Run every policy of one seed of scenario ``key`` in ``mode``; rank 0's raw results."""
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    worker = str(HERE / "microcloud_worker.py")
    timeout = args.timeout or 180 + len(policies.split(",")) * (2 * budget + 60)
    with tempfile.TemporaryDirectory(prefix="microcloud-") as tmp:
        result = str(Path(tmp) / "result.json")
        py = [
            sys.executable,
            worker,
            *worker_args(
                args, mode, tp, seed=seed, policies=policies, budget=budget, result=result
            ),
        ]
        if mode == "microcloud":
            env = rank_env(tp.emulate_realnet())
            env["MPIEXEC"] = mpiexec
            cmd = [str(TOOL), "run", "--", *py]
            _tool_up(tp, env)
        else:
            env = rank_env(tp.emulate_inprocess())
            cmd = [mpiexec, "-n", str(tp.size), *py]
        print(
            f"[microcloud] {mode}/{key} seed {seed}: {policies} ({budget:g} s each): "
            f"{shlex.join(cmd[:4])} ...",
            flush=True,
        )
        try:
            proc = subprocess.run(cmd, env=env, cwd=ROOT, timeout=timeout, text=True)
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"[microcloud] {mode}/{key} seed {seed} did not finish within {timeout:.0f} s"
            ) from None
        finally:
            if mode == "microcloud":
                subprocess.run([str(TOOL), "down"], env=env, check=False)
        if proc.returncode != 0 or not Path(result).exists():
            raise SystemExit(
                f"[microcloud] {mode}/{key} seed {seed} failed (exit {proc.returncode})"
            )
        return json.loads(Path(result).read_text())


def reference_threads() -> int:
    """TF intra-op threads of the no-communication reference: the machine's cores."""
    return os.cpu_count() or 1


def reference_command(
    args: argparse.Namespace, ranks: int, *, seed: int, budget: float, result: str
) -> tuple[list[str], dict[str, str]]:
    """Command and environment of the no-communication reference for a scenario of ``ranks``
    ranks: policy ``reference`` on one process (``mpiexec -n 1``) with the machine's cores, no
    emulation (no links, no compute speeds), per-step batch = the scenario's global batch
    (``--batch`` x ranks), the same data, budget and evaluation schedule."""
    threads = reference_threads()
    wa = worker_args(
        args,
        "reference",
        topo.parse("A:1"),
        seed=seed,
        policies="reference",
        budget=budget,
        result=result,
    )
    wa = [a for a in wa if not a.startswith("--batch=")]
    wa += [f"--batch={args.batch * ranks}", f"--threads={threads}"]
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    cmd = [mpiexec, "-n", "1", sys.executable, str(HERE / "microcloud_worker.py"), *wa]
    env = rank_env("", threads=threads)
    for k in ("DLION_SITE", "MPIEXEC"):
        env.pop(k, None)
    return cmd, env


def launch_reference(
    args: argparse.Namespace, ranks: int, *, seed: int, budget: float
) -> dict[str, Any]:
    """Run the no-communication reference (see :func:`reference_command`) on this host, outside
    the real-network testbed's namespaces in either mode; its raw results."""
    timeout = args.timeout or 180 + 2 * budget + 60
    with tempfile.TemporaryDirectory(prefix="microcloud-ref-") as tmp:
        result = str(Path(tmp) / "result.json")
        cmd, env = reference_command(args, ranks, seed=seed, budget=budget, result=result)
        print(
            f"[microcloud] reference seed {seed} (1 process, {reference_threads()} threads, "
            f"batch {args.batch * ranks}, {budget:g} s): {shlex.join(cmd[:4])} ...",
            flush=True,
        )
        try:
            proc = subprocess.run(cmd, env=env, cwd=ROOT, timeout=timeout, text=True)
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"[microcloud] reference seed {seed} did not finish within {timeout:.0f} s"
            ) from None
        if proc.returncode != 0 or not Path(result).exists():
            raise SystemExit(f"[microcloud] reference seed {seed} failed (exit {proc.returncode})")
        return json.loads(Path(result).read_text())


def _tool_up(tp: topo.Topology, env: dict[str, str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit("mode microcloud needs root (network namespaces, tc): run as root")
    if not os.access(TOOL, os.X_OK):
        raise SystemExit(f"mode microcloud: {TOOL} not found or not executable (set MICROCLOUD)")
    subprocess.run([str(TOOL), "down"], env=env, check=False, capture_output=True)
    subprocess.run([str(TOOL), "up", *tp.microcloud_up()], env=env, check=True)


def under_mpiexec() -> bool:
    """Whether this process is an MPI rank (started by mpiexec)."""
    return any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))


def run_here(args: argparse.Namespace) -> None:
    """Under mpiexec: run one in-process (mode, scenario), seed 0, in this process, and print
    rank 0's summary (dlion starts once per process, so one cell and one seed)."""
    import microcloud_report as report
    import microcloud_worker
    from mpi4py import MPI

    cells = list(args.plan)
    if len(cells) != 1 or cells[0][0] != "inprocess" or args.seeds != 1:
        raise SystemExit(
            "under mpiexec the benchmark runs one in-process scenario with one seed; pass "
            f"--scenarios with one of {list(SCENARIOS)}, or run it without mpiexec"
        )
    if args.reference:
        raise SystemExit(
            "the no-communication reference is a launch of its own (one process): run the "
            "benchmark without mpiexec for --reference"
        )
    mode, key = cells[0]
    if SCENARIOS[key].leaves:
        raise SystemExit(f"scenario {key} restarts its jobs: run the benchmark without mpiexec")
    comm = MPI.COMM_WORLD
    tp = SCENARIOS[key].topology(comm.size, args.slow_step)
    os.environ["DLION_EMULATE"] = tp.emulate_inprocess()
    result = str(Path(tempfile.gettempdir()) / f"microcloud-{os.getpid()}-{comm.rank}.json")
    result = comm.bcast(result, root=0)
    microcloud_worker.main(
        worker_args(
            args,
            mode,
            tp,
            seed=0,
            policies=args.plan[cells[0]],
            budget=args.budgets[cells[0]],
            result=result,
        )
    )
    if comm.rank == 0:
        raw = json.loads(Path(result).read_text())
        os.unlink(result)
        for name, run in raw["policies"].items():
            s = report.summarize_run(run, args.target_list)
            print(
                f"[microcloud] {key} {name}: time to {s['time_to']}, accuracy at budget "
                f"{s['accuracy_at_budget']:.4f}, {s['steps_per_s']:.2f} steps/s",
                flush=True,
            )
