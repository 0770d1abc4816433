"""The report of the dynamic scenarios (wan-leave): each policy with the event against itself
without it, same seed, same command.

Per policy and seed: time to each target on the training clock (recoveries counted), the
accuracy at the end of each run, the accuracy of both at equal steps (the smaller of their
final step counts: the run that ended there gives its final accuracy, the other is interpolated
linearly between its evaluations around it), the restarts, and each recovery (host-list edit to
training again, evaluation excluded) by cause. :func:`compare` gives the figures (kept in the
JSON), :func:`lines` the markdown.
"""

from __future__ import annotations

from typing import Any

import microcloud_clock as jclock
import microcloud_report as report

#: The suffix of a policy's run without the event in a dynamic cell's runs.
NO_EVENT = " (no event)"


def pairs(runs: dict[str, dict[Any, dict[str, Any]]]) -> list[str]:
    """The policies of a dynamic cell that have a run without the event too."""
    return [n for n in runs if not n.endswith(NO_EVENT) and n + NO_EVENT in runs]


def seed_figures(dyn: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """One seed's comparison of the run with the event (``dyn``) and without (``plain``), both
    as ``microcloud_report.summarize_run`` gives them."""
    at = min(dyn["steps"], plain["steps"])
    with_event = jclock.accuracy_at_step(dyn["curve"], at)
    without = jclock.accuracy_at_step(plain["curve"], at)
    el = dyn.get("elastic") or {}
    recs = el.get("recoveries", [])
    return {
        "equal_steps": at,
        "accuracy_at_equal_steps": with_event,
        "accuracy_at_equal_steps_no_event": without,
        "points_at_equal_steps": (
            None if with_event is None or without is None else 100 * (with_event - without) + 0.0
        ),
        "accuracy_at_end": dyn["accuracy_at_budget"],
        "accuracy_at_end_no_event": plain["accuracy_at_budget"],
        "steps": dyn["steps"],
        "steps_no_event": plain["steps"],
        "restarts": el.get("restarts"),
        "recoveries": [
            {k: r.get(k) for k in ("cause", "at_s", "recovery_s", "recovery_wall_s")}
            | {"lost_steps": _lost(r)}
            for r in recs
        ],
        "save_s": el.get("save_s"),
    }


def _lost(r: dict[str, Any]) -> int | None:
    if r.get("resumed_from") is None:
        return r.get("stopped_at_step")
    return int(r["stopped_at_step"]) - int(r["resumed_from"])


def compare(runs: dict[str, dict[Any, dict[str, Any]]], targets: list[float]) -> dict[str, Any]:
    """Per policy: per seed :func:`seed_figures`, and the spread over seeds of each figure."""
    keys = [f"{t:.2f}" for t in targets]
    out: dict[str, Any] = {}
    for name in pairs(runs):
        seeds = sorted(set(runs[name]) & set(runs[name + NO_EVENT]), key=int)
        per = {s: seed_figures(runs[name][s], runs[name + NO_EVENT][s]) for s in seeds}
        causes = sorted({r["cause"] for f in per.values() for r in f["recoveries"]})
        out[name] = {
            "seeds": per,
            "time_to": {
                k: report.spread([runs[name][s]["time_to"][k] for s in seeds]) for k in keys
            },
            "time_to_no_event": {
                k: report.spread([runs[name + NO_EVENT][s]["time_to"][k] for s in seeds])
                for k in keys
            },
            "recovery_s": {
                c: report.spread(
                    [
                        r["recovery_s"]
                        for f in per.values()
                        for r in f["recoveries"]
                        if r["cause"] == c
                    ]
                )
                for c in causes
            },
            **{
                k: report.spread([per[s][k] for s in seeds])
                for k in (
                    "restarts",
                    "points_at_equal_steps",
                    "accuracy_at_equal_steps",
                    "accuracy_at_equal_steps_no_event",
                    "accuracy_at_end",
                    "accuracy_at_end_no_event",
                    "equal_steps",
                )
            },
        }
    return out


def _n(sp: dict[str, Any], fmt: str) -> str:
    return report._cell_num(sp, fmt)


def lines(results: dict[str, Any]) -> list[str]:
    """Markdown: one table per dynamic cell (none for the others)."""
    keys = [f"{t:.2f}" for t in results["targets"]]
    out: list[str] = []
    for cell in results["cells"].values():
        ev, cmp_ = cell.get("events"), cell.get("elastic")
        if not ev or not cmp_:
            continue
        budget = cell["budget_s"]
        rejoin = f", rejoins at {ev['rejoin_at_s']:g} s" if ev.get("rejoin_at_s") else ""
        out += [
            f"**{cell['scenario']}, with and without the event** ({len(cell['seeds'])} seeds): "
            f"site {ev['leaves']} leaves at {ev['leave_at_s']:g} s{rejoin} of training, "
            f"checkpoint every {ev['checkpoint_every']} steps, `{ev['supervisor']}`; times on "
            "the training clock (from the first start, evaluation excluded, recoveries "
            "counted); without the event: "
            f"{ev['without_event']}, same seeds, same command. Median [min, max].",
            "",
            "| policy | "
            + " | ".join(f"time to {float(k):.0%} (s): with / without" for k in keys)
            + " | restarts | recovery (s) | accuracy at end: with / without | "
            "accuracy at equal steps: with / without (points) | equal steps |",
            "|---|" + "---|" * (len(keys) + 5),
        ]
        for name, f in cmp_.items():
            times = " | ".join(
                f"{report._cell_time(f['time_to'][k], budget)} / "
                f"{report._cell_time(f['time_to_no_event'][k], budget)}"
                for k in keys
            )
            recs = "; ".join(f"{c}: {_n(sp, '.1f')}" for c, sp in f["recovery_s"].items()) or "-"
            out.append(
                f"| {report.POLICY_NAMES.get(name, name)} | {times} | {_n(f['restarts'], '.0f')} | "
                f"{recs} | {_n(f['accuracy_at_end'], '.3f')} / "
                f"{_n(f['accuracy_at_end_no_event'], '.3f')} | "
                f"{_n(f['accuracy_at_equal_steps'], '.3f')} / "
                f"{_n(f['accuracy_at_equal_steps_no_event'], '.3f')} "
                f"({_n(f['points_at_equal_steps'], '+.1f')}) | {_n(f['equal_steps'], '.0f')} |"
            )
        out.append("")
    return out
