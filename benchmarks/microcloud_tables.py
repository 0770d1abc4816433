"""The bandwidth table (WAN rate x policy, the winner per rate) and the emulation fidelity table
of the micro-cloud benchmark (used by microcloud_report.py)."""

from __future__ import annotations

import re
from typing import Any

from microcloud_stats import MODE_NAMES, POLICY_NAMES, REFERENCE, multiple, seconds_text


def winner(pols: dict[str, Any], keys: list[str]) -> tuple[str, str | None] | None:
    """The policy (never the reference) that reached the highest target any reached first
    (smallest median time); when none reached any, the best median accuracy at the budget.
    (name, that target's key or None for the accuracy) or None without policies."""
    names = [n for n in pols if n != REFERENCE]
    for key in sorted(keys, key=float, reverse=True):
        timed = [(pols[n]["time_to"][key]["median"], n) for n in names]
        timed = [(t, n) for t, n in timed if t is not None]
        if timed:
            return min(timed, key=lambda tn: tn[0])[1], key
    accs = [(pols[n]["accuracy_at_budget"]["median"], n) for n in names]
    accs = [(a, n) for a, n in accs if a is not None]
    if not accs:
        return None
    return max(accs, key=lambda an: an[0])[1], None


def bandwidth(results: dict[str, Any]) -> list[str]:
    """The bandwidth tables (cells of ``--bandwidths``): per (mode, scenario), one row per WAN
    rate, one column per policy with its median time to each target and median accuracy at the
    budget, and the winner of the row."""
    keys = [f"{t:.2f}" for t in results["targets"]]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for cell in results["cells"].values():
        if cell.get("wan_mbit") is not None:
            key = (cell["mode"], cell.get("base_scenario") or cell["scenario"])
            groups.setdefault(key, []).append(cell)
    out: list[str] = []
    for (mode, scen), cells in groups.items():
        cells.sort(key=lambda c: c["wan_mbit"])
        names: list[str] = []
        for c in cells:
            names += [n for n in c["policies"] if n not in names and n != REFERENCE]
        with_ref = any(REFERENCE in c["policies"] for c in cells)
        cols = names + ([REFERENCE] if with_ref else [])
        targets = " / ".join(f"{float(k):.0%}" for k in keys)
        spec = re.sub(r":[0-9.]+[kmg]?bit:", ":R:", cells[0]["topology"])
        seeds = len(cells[0]["seeds"])
        out += [
            f"**{MODE_NAMES.get(mode, mode)}, {scen}, by WAN rate**: `{spec}`, R = the row's "
            f"rate on every WAN link (latencies unchanged); {seeds} seed{'s' * (seeds != 1)}, "
            f"budget {cells[0]['budget_s']:g} s. Each entry: median time to {targets} (s) · "
            "median accuracy at the budget.",
            "",
            "| WAN Mbit/s | " + " | ".join(POLICY_NAMES.get(n, n) for n in cols) + " | winner |",
            "|---|" + "---|" * (len(cols) + 1),
        ]
        for c in cells:
            pols, budget = c["policies"], c["budget_s"]
            entries = [_bw_entry(pols.get(n), keys, budget) for n in cols]
            won = winner(pols, keys)
            best = "-"
            if won is not None and won[1] is None:
                best = f"{POLICY_NAMES.get(won[0], won[0])}: best accuracy at budget"
            elif won is not None and won[1] is not None:
                best = f"{POLICY_NAMES.get(won[0], won[0])}: first to {float(won[1]):.0%}"
                if REFERENCE in pols:
                    best += f", {multiple(pols[won[0]], pols[REFERENCE], won[1], budget)} reference"
            out.append(f"| {c['wan_mbit']:g} | " + " | ".join(entries) + f" | {best} |")
        out.append("")
    return out


def _bw_entry(agg: dict[str, Any] | None, keys: list[str], budget: float) -> str:
    if agg is None:
        return "-"
    times = " / ".join(seconds_text(agg["time_to"][k]["median"], budget) for k in keys)
    acc = agg["accuracy_at_budget"]["median"]
    return f"{times} · {'-' if acc is None else format(acc, '.3f')}"


def fidelity(results: dict[str, Any]) -> list[str]:
    """Steps/s in-process against the real network, per scenario and policy run in both."""
    by_scenario: dict[str, dict[str, dict[str, Any]]] = {}
    for cell in results["cells"].values():
        by_scenario.setdefault(cell["scenario"], {})[cell["mode"]] = cell
    rows = []
    for scenario, modes in by_scenario.items():
        if set(modes) < {"inprocess", "microcloud"}:
            continue
        emu, real = modes["inprocess"]["policies"], modes["microcloud"]["policies"]
        for name in real:
            if name not in emu:
                continue
            a, b = emu[name]["steps_per_s"]["median"], real[name]["steps_per_s"]["median"]
            if a and b:
                rows.append(
                    f"| {scenario} | {POLICY_NAMES.get(name, name)} | {a:.2f} | {b:.2f} | "
                    f"{a / b:.2f} |"
                )
    if not rows:
        return []
    return [
        "Emulation fidelity (median steps/s; goal: in-process within 25% of the real network):",
        "",
        "| scenario | policy | in-process | real network | ratio |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
