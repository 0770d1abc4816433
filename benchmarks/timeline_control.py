"""Control rounds per training step, read from dlion timelines (one file per rank).

A collective policy (``dlion.Allreduce``) runs one small control round per step ("join" spans:
dlion.join's state, which also carries the non-finite vote). At a layout's later steps that
round is started with the gradient buffers instead of before them, so a step pays its wide-area
round trip once, overlapped. This prints, per rank, the control rounds per step, the control
time spent before the step's first gradient buffer started, and how many rounds overlapped the
gradients. On the real-network testbed (root)::

    T=../shared/tools/microcloud
    $T up --sites A:2,B:2 --link A-B:20mbit:40ms
    DLION_TIMELINE=/tmp/tl/trace.json MPIEXEC=$PWD/.venv/bin/mpiexec $T run -- \\
        $PWD/.venv/bin/python examples/train.py --exchange allreduce --max-steps 60 --threads 1
    $T down
    python benchmarks/timeline_control.py /tmp/tl/trace.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def rank_files(path: Path) -> list[Path]:
    """``trace.json`` -> the ``trace.rankN.json`` files next to it, in rank order."""
    found = sorted(path.parent.glob(f"{path.stem}.rank*{path.suffix}"))
    return sorted(found, key=lambda p: int(p.stem.rsplit("rank", 1)[1]))


def spans(path: Path) -> list[dict[str, Any]]:
    """The complete ("X") events of one rank's trace."""
    data = json.loads(path.read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X"]


def per_step(events: list[dict[str, Any]], skip: int) -> dict[str, float]:
    """Medians over the steps after the first ``skip`` ones (a layout's first step keeps the
    separate round)."""
    steps = [e for e in events if e["name"] == "step"][skip:]
    rounds, before, overlapped, ms = [], [], 0, []
    for s in steps:
        a, b = s["ts"], s["ts"] + s["dur"]
        inside = [e for e in events if e["ts"] >= a and e["ts"] + e["dur"] <= b + 1]
        joins = [e for e in inside if e["name"] == "join"]
        grads = [e for e in inside if e["name"] == "exchange"]
        rounds.append(len(joins))
        ms.append(s["dur"] / 1e3)
        if not grads:
            continue
        first = min(e["ts"] for e in grads)
        last = max(e["ts"] + e["dur"] for e in grads)
        before.append(sum(max(0.0, min(e["ts"] + e["dur"], first) - e["ts"]) for e in joins) / 1e3)
        overlapped += sum(1 for e in joins if e["ts"] < last and e["ts"] + e["dur"] > first)
    if not steps:
        raise SystemExit("no step spans after the skipped ones: train longer or skip fewer")
    return {
        "steps": len(steps),
        "rounds_per_step": statistics.mean(rounds),
        "control_ms_before_grads": statistics.median(before) if before else float("nan"),
        "rounds_overlapping_grads": overlapped,
        "rounds": sum(rounds),
        "step_ms": statistics.median(ms),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("trace", type=Path, help="the DLION_TIMELINE path given to the run")
    p.add_argument("--skip", type=int, default=5, help="first steps left out (default 5)")
    args = p.parse_args(argv)
    files = rank_files(args.trace)
    if not files:
        raise SystemExit(f"no {args.trace.stem}.rankN{args.trace.suffix} next to {args.trace}")
    for f in files:
        r = per_step(spans(f), args.skip)
        print(
            f"{f.name}: {r['steps']} steps, {r['rounds_per_step']:.2f} control rounds per step, "
            f"{r['control_ms_before_grads']:.2f} ms of control before the first gradient buffer "
            f"(median), {r['rounds_overlapping_grads']}/{r['rounds']} rounds overlapping the "
            f"gradients, step {r['step_ms']:.0f} ms (median)"
        )


if __name__ == "__main__":
    main()
