"""Statistics of the micro-cloud benchmark: one run's figures, a cell's median and range over
its seeds, speedups and multiples of the reference (used by microcloud_report.py)."""

from __future__ import annotations

import math
from typing import Any

POLICY_NAMES = {
    "allreduce": "Allreduce (dlion, site-aware)",
    "horovod": "Horovod-like flat allreduce",
    "gaia": "Gaia",
    "ako": "Ako",
    "dlion": "DLion",
    "dlion-ranks": "DLion, rank to rank",
    "dlion-nobatch": "DLion, no dynamic batching",
    "dlion-nokt": "DLion, no knowledge transfer",
    "dlion-overlap": "DLion, overlapped WAN (staleness 1)",
    "outer": "OuterSync (local steps, outer sync)",
    "outer-kt": "OuterSync, with knowledge transfer",
    "reference": "no-communication reference (1 process)",
}
#: The no-communication reference's policy name (benchmarks/microcloud.py --reference).
REFERENCE = "reference"
MODE_NAMES = {"microcloud": "real network", "inprocess": "in-process emulation"}
#: Baselines the headline ratios compare DLion with.
VERSUS = ("allreduce", "horovod", "gaia", "ako", "dlion-ranks")
#: The policies whose speedups the report gives, and against what.
LEADS = {"dlion": VERSUS, "outer": ("allreduce", "horovod", "gaia", "ako", "dlion")}


def time_to_target(curve: list[dict[str, float]], target: float) -> tuple[float, int] | None:
    """(training seconds, step) of the first evaluation at or above ``target``; None: never."""
    for point in curve:
        if point["accuracy"] >= target:
            return float(point["t"]), int(point["step"])
    return None


def summarize_run(run: dict[str, Any], targets: list[float]) -> dict[str, Any]:
    """One run's figures: time and steps to each target, accuracy at budget, rates, bytes."""
    reached = {f"{t:.2f}": time_to_target(run["curve"], t) for t in targets}
    return {
        "time_to": {k: (v[0] if v else None) for k, v in reached.items()},
        "steps_to": {k: (v[1] if v else None) for k, v in reached.items()},
        "accuracy_at_budget": run["final_accuracy"],
        "best_accuracy": max(p["accuracy"] for p in run["curve"]),
        "steps_per_s": run["steps_per_s"],
        "steps": run["steps"],
        "train_s": run["train_s"],
        "mb_per_link": run["mb_per_link"],
        "mb_per_wan_link": run["mb_per_wan_link"],
        "kb_per_wan_link_step": (
            None
            if run["mb_per_wan_link"] is None or not run["steps"]
            else 1e3 * run["mb_per_wan_link"] / run["steps"]
        ),
        "mb_per_site_link": run["mb_per_site_link"],
        "describe": run["describe"],
        "batch_split": run["batch_split"],
        "transfers": run["transfers"],
        "curve": run["curve"],
        "elastic": run.get("elastic"),  # dynamic scenarios: restarts and recoveries
    }


def spread(values: list[float | None]) -> dict[str, Any]:
    """Median, min and max of ``values`` (None = not reached: larger than any number)."""
    if not values:
        return {"median": None, "min": None, "max": None, "reached": 0, "n": 0}
    keyed = sorted(values, key=lambda v: math.inf if v is None else v)
    n, mid = len(keyed), len(keyed) // 2
    if n % 2:
        median = keyed[mid]
    else:
        lo, hi = keyed[mid - 1], keyed[mid]
        median = None if lo is None or hi is None else (lo + hi) / 2
    return {
        "median": median,
        "min": keyed[0],
        "max": keyed[-1],
        "reached": sum(v is not None for v in values),
        "n": n,
    }


def aggregate(runs: dict[int, dict[str, Any]], targets: list[float]) -> dict[str, Any]:
    """A cell's statistics over its seeds (``runs``: seed -> summarize_run output)."""
    seeds = sorted(runs)

    def field(name: str) -> list[Any]:
        return [runs[s][name] for s in seeds]

    def num(name: str) -> dict[str, Any]:
        return spread([v for v in field(name) if v is not None])

    keys = [f"{t:.2f}" for t in targets]
    return {
        "seeds": seeds,
        "time_to": {k: spread([runs[s]["time_to"][k] for s in seeds]) for k in keys},
        "steps_to": {k: spread([runs[s]["steps_to"][k] for s in seeds]) for k in keys},
        "accuracy_at_budget": num("accuracy_at_budget"),
        "steps_per_s": num("steps_per_s"),
        "mb_per_wan_link": num("mb_per_wan_link"),
        "kb_per_wan_link_step": num("kb_per_wan_link_step"),
        "mb_per_link": num("mb_per_link"),
        "describe": runs[seeds[0]]["describe"],
    }


def speedup(cell: dict[str, Any], base: dict[str, Any], key: str, budget: float) -> str:
    """How many times sooner ``cell`` reached target ``key`` than ``base`` (medians)."""
    return _ratio(base, cell, key, budget)


def _ratio(top: dict[str, Any], bottom: dict[str, Any], key: str, budget: float) -> str:
    """``top``'s median time to target ``key`` over ``bottom``'s: ``>`` (a bound from the
    budget) when ``top``'s median run did not reach it, "-" when ``bottom``'s did not."""
    over, under = top["time_to"][key]["median"], bottom["time_to"][key]["median"]
    if under is None or under <= 0:
        return "-"
    if over is None:
        return f">{budget / under:.1f}x"
    return f"{over / under:.2f}x"


NONE = {"median": None, "min": None, "max": None, "reached": 0, "n": 0}  # results before a field


def seconds_text(v: float | None, budget: float) -> str:
    """Seconds with one decimal; ``>budget`` for a target not reached (None)."""
    return f">{budget:g}" if v is None else f"{v:.1f}"


def multiple(cell: dict[str, Any], ref: dict[str, Any], key: str, budget: float) -> str:
    """``cell``'s median time to target ``key`` as a multiple of the reference's: ``>`` (a
    bound from the budget) when ``cell``'s median run did not reach it, "-" when the
    reference's did not."""
    return _ratio(cell, ref, key, budget)
