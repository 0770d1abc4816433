"""Micro-cloud benchmark: DLion and its outer synchronization against Allreduce, Horovod, Gaia
and Ako on the same micro-cloud, beside a no-communication reference.

    python benchmarks/microcloud.py --headline            # README "Results": real network and
                                                          # in-process, 2 topologies, 3 seeds,
                                                          # with the reference
    python benchmarks/microcloud.py --quick               # one seed, in-process, ~10 min
    python benchmarks/microcloud.py --scenarios wan --policies dlion,allreduce --budget 30
    python benchmarks/microcloud.py --scenarios wan-hetero --bandwidths 1,5,20,100 \\
        --policies allreduce,gaia,dlion,outer --seeds 3 --reference --stem bandwidth --docs
    python benchmarks/microcloud.py --modes microcloud --seeds 3 --topology \\
        "A:2,B:1,C:1 A-B:20mbit:40ms A-C:10mbit:60ms B-C:10mbit:60ms compute=1,1,0.5,1"
    mpiexec -n 4 python benchmarks/microcloud.py --scenarios wan-hetero   # under mpiexec

Trains the CNN of examples/train.py on Fashion-MNIST with each policy in turn, on 4 ranks
(``--np``); every policy of one seed starts from the same weights and data split, and the order
of the policies is rotated from one seed to the next. Scenarios:

  lan          one site, no link caps
  wan          2 sites (ranks A,A,B,B) joined by a 20 Mbit/s, 40 ms (one-way) WAN
  wan-hetero   the same, compute speeds 1,1,0.5,0.5
  wan-dynamic  the same, and rank 2 becomes 3x slower at step --slow-step (dynamism)
  3site        sites A:2,B:1,C:1; A-B 20 Mbit/s 40 ms, A-C and B-C 10 Mbit/s 60 ms;
               compute 1,1,0.5,0.5 (4 ranks)
  wan-leave    wan-hetero where site B leaves at --leave-at s of training and rejoins at
               --rejoin-at s (dynamic membership; in-process mode only, see below)

``wan-leave`` runs each policy under ``python -m dlion.run --hosts FILE`` (docs/elastic.md):
the benchmark edits the host list (atomically) when the training clock reaches --leave-at and
--rejoin-at, the supervisor restarts the job on the sites listed, the worker checkpoints every
--checkpoint-every steps and resumes with ``dlion.checkpoint.load(..., elastic="average")``,
keeping the global batch (--batch x --np) at any size. Its clock: wall time from the first
attempt's start of training, evaluation excluded, so everything an event costs counts (the
steps redone since the checkpoint, the stop, the restart, TF's start-up, the restore). The same
policies without the event (wan-hetero, same seed) run in the same command, as runs named
"POLICY (no event)"; the report adds the restarts, each recovery (host-list edit to training
again) and the accuracy of both at equal steps. The real-network mode refuses it (the testbed is
set up once per MPI job and cannot follow a supervisor's restarts), and so does a run under
mpiexec or with --bandwidths.

Modes (``--modes``): ``inprocess`` emulates the links inside dlion (``DLION_EMULATE``: one
shared pacing clock per ordered site pair); ``microcloud`` runs the job under
../shared/tools/microcloud (relative to the project root, or $MICROCLOUD; root): network
namespaces per site, shaped links, CPU quotas (``cpu=``). Compute speeds are emulated in-process
in both modes. The ``horovod`` policy (a flat mpi4py allreduce) is not paced in-process, so it
only runs on the real network.

Policies: ``allreduce`` (``dlion.Allreduce``, the site-aware hierarchical dense average),
``horovod`` (one flat dense MPI allreduce per step, no control rounds), ``gaia``
(``dlion.GaiaExchange``), ``ako`` (``dlion.AkoExchange``), ``dlion`` (``PerLinkExchange`` +
``DynamicBatcher`` + ``KnowledgeTransfer``), ``outer`` (``dlion.OuterSync``: local steps, dense
inside a site, every ``--outer-every`` steps the sites exchange their 4-bit quantized parameter
deltas and apply an outer Nesterov step; with ``DynamicBatcher``, no knowledge transfer;
``outer-kt`` adds it) and DLion's ablations ``dlion-ranks`` (rank to rank instead of
site-aware), ``dlion-nobatch``, ``dlion-nokt``, ``dlion-overlap`` (staleness 1).

``--reference`` (default with ``--headline``) adds the no-communication reference row, measured
in the same command: one process on the host (outside the testbed's namespaces, no emulation)
with TF intra-op threads = the machine's cores, the same model, data, budget and evaluation
schedule, the scenario's global batch (``--batch`` x ranks) per step, the plain Keras optimizer.
It runs once per (global batch, budget, seed) and every cell with those shows it; the report
gives each policy's time to target as a multiple of it.

``--bandwidths 1,5,20,100`` reruns each chosen scenario with every WAN link's rate replaced by
each value in Mbit/s (latencies unchanged), as scenarios ``{name}@{rate}mbit``; the report adds
the table "WAN Mbit/s x policy" with the winner per rate, and ``--docs`` rewrites its block in
docs/choosing-a-policy.md.

Per run it records the test-accuracy curve over *training* wall time (evaluation excluded), and
per (mode, scenario, policy) the median and range over seeds of the time and steps to each
``--targets`` accuracy, the accuracy at the budget, steps/s, MB per WAN link (and per step).
It writes ``{stem}.json`` (with the commit and the full command), ``{stem}.md`` and one PNG per
(mode, scenario) into ``--out``; every finished seed is also kept in ``--out``/runs/ so that
``--resume`` continues an interrupted command (runs made at another commit are named so).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import microcloud_dynamic as dynamic  # noqa: E402
import microcloud_elastic_report as elastic_report  # noqa: E402
import microcloud_launch as launcher  # noqa: E402
import microcloud_report as report  # noqa: E402
import microcloud_runs as runs_  # noqa: E402
from microcloud_launch import SCENARIOS, Scenario  # noqa: E402

POLICIES = ("allreduce", "gaia", "ako", "dlion", "outer")
#: Selectable with --policies besides POLICIES: a Horovod-equivalent flat allreduce, DLion's
#: ablations (rank to rank instead of site-aware, no dynamic batching, no knowledge transfer,
#: the wide-area phase overlapped with the next step) and the outer synchronization with
#: knowledge transfer.
EXTRA_POLICIES = (
    "horovod",
    "dlion-ranks",
    "dlion-nobatch",
    "dlion-nokt",
    "dlion-overlap",
    "outer-kt",
)
#: The no-communication reference (--reference; also accepted in --policies).
REFERENCE = "reference"
MODES = ("inprocess", "microcloud")
# --quick: two scenarios, short budgets (s), one seed.
QUICK = {"lan": 12.0, "wan-hetero": 70.0}
FULL = {"lan": 60.0, "wan": 180.0, "wan-hetero": 180.0, "wan-dynamic": 180.0, "3site": 180.0}
#: --headline: what README "Results" shows. Per (mode, scenario) the policies run; budgets below.
HEADLINE = {
    ("microcloud", "wan-hetero"): (
        "dlion,outer,dlion-ranks,dlion-nobatch,dlion-nokt,dlion-overlap,gaia,ako,allreduce,horovod"
    ),
    ("microcloud", "3site"): "dlion,outer,gaia,allreduce,horovod",
    ("inprocess", "wan-hetero"): "dlion,outer,dlion-ranks,gaia,allreduce",
    ("inprocess", "3site"): "dlion,outer,allreduce",
}
HEADLINE_BUDGET = 75.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--headline", action="store_true", help="README Results (see HEADLINE)")
    p.add_argument("--quick", action="store_true", help=f"scenarios and budgets {QUICK}")
    p.add_argument("--scenarios", default=None, help=f"comma-separated of {list(SCENARIOS)}")
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated policies")
    p.add_argument(
        "--modes",
        default=None,
        help=f"comma-separated of {MODES} (default: inprocess; both with --headline)",
    )
    p.add_argument("--microcloud", action="store_true", help="same as --modes microcloud")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (policy order rotates)")
    p.add_argument("--budget", type=float, default=None, help="training seconds per run")
    p.add_argument("--targets", default="0.80,0.85", help="target test accuracies")
    p.add_argument("--np", type=int, default=4, help="ranks (even for two sites)")
    p.add_argument("--topology", default=None, help="a topology of your own: scenario 'custom'")
    p.add_argument("--eval-every", type=float, default=2.0, help="training seconds")
    p.add_argument("--test-samples", type=int, default=2000, help="test subset evaluated")
    p.add_argument("--slow-step", type=int, default=150, help="wan-dynamic: step of slowdown")
    p.add_argument("--max-steps", type=int, default=0, help="also stop a run after N steps")
    p.add_argument("--leave-at", type=float, default=20.0, help="wan-leave: a site leaves (s)")
    p.add_argument("--rejoin-at", type=float, default=40.0, help="wan-leave: it rejoins (0: no)")
    p.add_argument("--checkpoint-every", type=int, default=25, help="wan-leave: steps")
    p.add_argument(
        "--stop-at",
        type=float,
        default=0.0,
        help="also stop a run at its first evaluation with this test accuracy (0: off), so "
        "that a slow baseline can get a long --budget; its 'accuracy at budget' is then the "
        "accuracy when it stopped",
    )
    p.add_argument("--gaia-threshold", type=float, default=0.01)
    p.add_argument("--gaia-bits", type=int, choices=(8, 32), default=8, help="Gaia's values")
    p.add_argument("--ako-partitions", type=int, default=4)
    p.add_argument("--staleness", type=int, default=0, help="for every peer policy")
    p.add_argument(
        "--dlion-budget",
        type=float,
        default=0.0,
        help="DLion policies: the per-link time budget T in seconds (0: the default, "
        "--dlion-budget-fraction times the measured compute time of a step)",
    )
    p.add_argument(
        "--dlion-budget-fraction",
        type=float,
        default=0.0,
        help="DLion policies: T as a fraction of the measured compute time (0: the library's "
        "default)",
    )
    p.add_argument("--batch", type=int, default=64, help="per-rank batch (global: x ranks)")
    p.add_argument("--outer-every", type=int, default=25, help="outer: inner steps per sync")
    p.add_argument("--outer-lr", type=float, default=0.7, help="outer: outer learning rate")
    p.add_argument("--outer-momentum", type=float, default=0.9, help="outer: Nesterov momentum")
    p.add_argument("--outer-fragments", type=int, default=1, help="outer: streamed fragments")
    p.add_argument("--outer-overlap", type=int, default=0, help="outer: steps a sync overlaps")
    p.add_argument("--outer-bits", type=int, default=4, help="outer: qsgd bits of the deltas")
    p.add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the no-communication reference row (1 process, all cores; default: --headline)",
    )
    p.add_argument(
        "--bandwidths",
        default=None,
        help="Mbit/s, comma-separated: rerun each scenario with every WAN link at each rate",
    )
    p.add_argument("--timeout", type=float, default=0, help="seconds per launch (0: auto)")
    p.add_argument("--out", default=str(HERE / "results"), help="results folder")
    p.add_argument("--stem", default="microcloud", help="file names in --out")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse finished seeds in --out/runs (the report names their commit if another)",
    )
    p.add_argument("--readme", action="store_true", help="also rewrite README's Results block")
    p.add_argument(
        "--docs",
        action="store_true",
        help="also rewrite docs/choosing-a-policy.md's bandwidth table (needs --bandwidths)",
    )
    p.add_argument("--data", default=None, help="Fashion-MNIST IDX folder")
    args = p.parse_args(argv)
    try:
        args.target_list = [float(t) for t in args.targets.split(",")]
    except ValueError:
        p.error(f"--targets {args.targets!r}: want comma-separated accuracies, e.g. 0.80,0.85")
    if not args.target_list or not all(0 < t <= 1 for t in args.target_list):
        p.error(f"--targets {args.targets!r}: each must be in (0, 1]")
    if args.seeds < 1:
        p.error(f"--seeds {args.seeds}: at least 1")
    if args.budget is not None and args.budget <= 0:
        p.error(f"--budget {args.budget}: must be > 0")
    if args.eval_every <= 0:
        p.error(f"--eval-every {args.eval_every}: must be > 0")
    if args.batch < 1:
        p.error(f"--batch {args.batch}: at least 1")
    bandwidths: list[float] = []
    if args.bandwidths:
        try:
            bandwidths = [float(b) for b in args.bandwidths.split(",")]
        except ValueError:
            p.error(f"--bandwidths {args.bandwidths!r}: want comma-separated Mbit/s, e.g. 1,5,20")
        if not all(b > 0 for b in bandwidths) or len(set(bandwidths)) != len(bandwidths):
            p.error(f"--bandwidths {args.bandwidths!r}: distinct rates > 0 (Mbit/s)")
    if args.docs and not bandwidths:
        p.error("--docs writes the bandwidth table: pass --bandwidths")
    args.bandwidth_list = bandwidths
    names = args.policies.split(",")
    if REFERENCE in names:  # --policies ...,reference is --reference
        args.policies = ",".join(n for n in names if n != REFERENCE)
        args.reference = True
        if not args.policies:
            p.error("--policies: name at least one policy besides the reference")
    if args.reference is None:
        args.reference = args.headline
    if args.modes:
        modes = args.modes.split(",")
    else:
        modes = ["microcloud"] if args.microcloud else list(MODES if args.headline else MODES[:1])
    if [m for m in modes if m not in MODES]:
        p.error(f"--modes {args.modes!r}: use a comma-separated subset of {MODES}")
    if args.topology:
        try:
            custom = launcher.topo.parse(args.topology)
        except ValueError as e:
            p.error(str(e))
        SCENARIOS["custom"] = Scenario(f"custom: {custom.describe()}", custom.describe())
        args.np = custom.size
        args.scenarios = args.scenarios or "custom"
    if args.headline:
        args.seeds = max(args.seeds, 3)
        plan = {k: v for k, v in HEADLINE.items() if k[0] in modes}
        budgets = {k: args.budget or HEADLINE_BUDGET for k in plan}
    else:
        table = QUICK if args.quick else FULL
        names = args.scenarios.split(",") if args.scenarios else list(table)
        bad = [s for s in names if s not in SCENARIOS]
        if bad:
            p.error(f"unknown scenario(s) {bad}: use {list(SCENARIOS)}")
        plan = {(m, s): args.policies for m in modes for s in names}
        budgets = {k: args.budget or table.get(k[1], FULL.get(k[1], 180.0)) for k in plan}
    if bandwidths:  # every cell once per WAN rate instead
        varied: dict[tuple[str, str], tuple[str, str]] = {}
        for mode, scen in plan:
            for b in bandwidths:
                varied[(mode, launcher.with_bandwidth(scen, b))] = (mode, scen)
        plan = {k: plan[v] for k, v in varied.items()}
        budgets = {k: budgets[v] for k, v in varied.items()}
    for (mode, scen), pols in plan.items():
        if SCENARIOS[scen].leaves and (mode != "inprocess" or bandwidths):
            p.error(f"scenario {scen}: in-process mode only, without --bandwidths (see --help)")
        names = pols.split(",")
        if not names or [x for x in names if x not in POLICIES + EXTRA_POLICIES]:
            p.error(
                f"--policies {pols!r}: use a comma-separated subset of {POLICIES + EXTRA_POLICIES}"
            )
        try:
            SCENARIOS[scen].topology(args.np, args.slow_step)
        except ValueError as e:
            p.error(f"scenario {scen} on --np {args.np}: {e}")
    args.plan, args.budgets = plan, budgets
    return args


def run_cell(args: argparse.Namespace, mode: str, scen: str, commit: str) -> dict[str, Any]:
    """Every seed of one (mode, scenario): its raw runs and their statistics."""
    budget, policies = args.budgets[(mode, scen)], args.plan[(mode, scen)]
    tp = SCENARIOS[scen].topology(args.np, args.slow_step)
    runs: dict[str, dict[int, dict[str, Any]]] = {p: {} for p in policies.split(",")}
    start = dynamic.launch_seed if SCENARIOS[scen].leaves else launcher.launch
    orders, raw, others = {}, {}, set()
    saved = Path(args.out) / "runs"
    for i in range(args.seeds):
        order = runs_.rotated(policies, i)
        path = saved / f"{args.stem}-{mode}-{scen}-s{i}.json"
        raw = runs_.load_saved(path, commit, order) if args.resume else None
        if raw is None:
            raw = start(args, mode, scen, tp, seed=i, policies=order, budget=budget)
            raw.update(commit=commit, order=order)
            saved.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(raw))
        orders[i] = order
        if raw.get("commit") != commit:
            others.add(str(raw.get("commit")))
        for name, run in raw["policies"].items():
            runs.setdefault(name, {})[i] = report.summarize_run(run, args.target_list)
        if args.reference:
            ref = reference_run(args, tp.size, seed=i, budget=budget, commit=commit)
            if ref.get("commit") != commit:
                others.add(str(ref.get("commit")))
            run = ref["policies"][REFERENCE]
            runs.setdefault(REFERENCE, {})[i] = report.summarize_run(run, args.target_list)
    sc = SCENARIOS[scen]
    return {
        "mode": mode,
        "scenario": scen,
        "title": sc.title,
        "base_scenario": sc.base or scen,
        "wan_mbit": sc.wan_mbit,
        "reference": (
            {
                "processes": 1,
                "threads": launcher.reference_threads(),
                "global_batch": args.batch * tp.size,
                "where": "this host, outside any namespace, no emulation",
            }
            if args.reference
            else None
        ),
        "topology": tp.describe(),
        "events": dynamic.describe_events(args, scen),
        "budget_s": budget,
        "seeds": list(range(args.seeds)),
        "order": orders,
        "commits": sorted(others),  # commits of reused runs other than this command's
        "emulate": raw["emulate"],
        "sites": raw["sites"],
        "data": raw["data"],
        "runs": runs,
        "policies": {n: report.aggregate(r, args.target_list) for n, r in runs.items()},
        "elastic": elastic_report.compare(runs, args.target_list) if sc.leaves else None,
    }


def reference_run(
    args: argparse.Namespace, ranks: int, *, seed: int, budget: float, commit: str
) -> dict[str, Any]:
    """The no-communication reference of one seed for a scenario of ``ranks`` ranks: run once
    per (global batch, budget, seed) in this command (and kept in --out/runs for --resume);
    every cell with the same global batch and budget shows the same run."""
    key = (args.batch * ranks, budget, seed)
    cache = args.__dict__.setdefault("reference_runs", {})
    if key in cache:
        return cache[key]
    saved = Path(args.out) / "runs"
    path = saved / f"{args.stem}-{REFERENCE}-b{key[0]}-{budget:g}s-s{seed}.json"
    raw = runs_.load_saved(path, commit, REFERENCE) if args.resume else None
    if raw is None:
        raw = launcher.launch_reference(args, ranks, seed=seed, budget=budget)
        raw.update(commit=commit, order=REFERENCE)
        saved.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(raw))
    cache[key] = raw
    return raw


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    if launcher.under_mpiexec():
        return launcher.run_here(args)
    commit, dirty = runs_.git_state()
    results: dict[str, Any] = {
        "command": "python benchmarks/microcloud.py " + shlex.join(sys.argv[1:]),
        "commit": commit,
        "dirty": dirty,
        "machine": f"{os.cpu_count()} cores",
        "targets": args.target_list,
        "eval_every_s": args.eval_every,
        "test_samples": args.test_samples,
        "seeds": args.seeds,
        "bandwidths_mbit": args.bandwidth_list,
        "cells": {},
    }
    for mode, scen in args.plan:
        results["cells"][f"{mode}/{scen}"] = run_cell(args, mode, scen, commit)
        results["seconds_total"] = time.perf_counter() - started
        paths = report.write(results, Path(args.out), args.stem)  # after every cell
    print(report.table(results))
    if args.readme:
        images = [os.path.relpath(p, ROOT) for k, p in paths.items() if k.startswith("plot")]
        report.update_readme(ROOT / "README.md", results, images)
        print("[microcloud] rewrote README.md's Results block", flush=True)
    if args.docs:
        report.update_docs(ROOT / report.DOCS_PAGE, results)
        print(f"[microcloud] rewrote {report.DOCS_PAGE}'s bandwidth table", flush=True)
    print("[microcloud] wrote " + ", ".join(paths.values()), flush=True)


if __name__ == "__main__":
    main()
