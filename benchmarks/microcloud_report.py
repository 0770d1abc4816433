"""Results of the micro-cloud benchmark: summary numbers, markdown table, JSON, plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

POLICY_NAMES = {
    "allreduce": "Allreduce",
    "gaia": "Gaia",
    "ako": "Ako",
    "dlion": "DLion",
    "horovod": "Horovod-like (flat allreduce)",
    "dlion-ranks": "DLion, rank to rank",
    "dlion-nobatch": "DLion, no dynamic batching",
    "dlion-nokt": "DLion, no knowledge transfer",
    "dlion-overlap": "DLion, overlapped WAN",
}


def time_to_target(curve: list[dict[str, float]], target: float) -> float | None:
    """Training seconds of the first evaluation at or above ``target`` (None: never)."""
    for point in curve:
        if point["accuracy"] >= target:
            return float(point["t"])
    return None


def summarize(raw: dict[str, Any], target: float, budget: float) -> dict[str, Any]:
    """Per policy: time to target, accuracy at budget, speedup vs Allreduce, MB per link."""
    out: dict[str, Any] = {}
    for name, run in raw["policies"].items():
        out[name] = {
            "time_to_target_s": time_to_target(run["curve"], target),
            "accuracy_at_budget": run["final_accuracy"],
            "steps_per_s": run["steps_per_s"],
            "mb_per_link": run["mb_per_link"],
            "mb_per_wan_link": run["mb_per_wan_link"],
            "mb_per_site_link": run["mb_per_site_link"],
            "steps": run["steps"],
            "train_s": run["train_s"],
            "describe": run["describe"],
            "batch_split": run["batch_split"],
            "transfers": run["transfers"],
            "charged_collective_s": run["charged_collective_s"],
            "curve": run["curve"],
        }
    base = out.get("allreduce", {}).get("time_to_target_s")
    for s in out.values():
        t = s["time_to_target_s"]
        s["speedup_vs_allreduce"] = base / t if base is not None and t is not None else None
        # When Allreduce never reached the target, the budget bounds its time from below.
        s["speedup_vs_allreduce_at_least"] = (
            budget / t if base is None and t is not None and "allreduce" in out else None
        )
    return out


def _fmt_s(t: float | None) -> str:
    return "not reached" if t is None else f"{t:.1f}"


def _fmt_speedup(s: dict[str, Any]) -> str:
    if s["speedup_vs_allreduce"] is not None:
        return f"{s['speedup_vs_allreduce']:.2f}x"
    if s["speedup_vs_allreduce_at_least"] is not None:
        return f">{s['speedup_vs_allreduce_at_least']:.2f}x"
    return "-"


def _fmt_mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def table(results: dict[str, Any]) -> str:
    """The markdown table: rows scenario x policy."""
    target = results["target_accuracy"]
    lines = [
        f"| scenario | policy | time to {target:.0%} (s) | accuracy at budget | speedup vs "
        "Allreduce | MB per link | MB per WAN link | steps/s | steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, sc in results["scenarios"].items():
        for name, s in sc["policies"].items():
            lines.append(
                f"| {key} | {POLICY_NAMES.get(name, name)} | {_fmt_s(s['time_to_target_s'])} | "
                f"{s['accuracy_at_budget']:.4f} | {_fmt_speedup(s)} | {_fmt_mb(s['mb_per_link'])} "
                f"| {_fmt_mb(s['mb_per_wan_link'])} | {s['steps_per_s']:.2f} | {s['steps']} |"
            )
    budgets = ", ".join(f"{k}: {sc['budget_s']:g} s" for k, sc in results["scenarios"].items())
    lines += [
        "",
        f"Budgets (training seconds, evaluation excluded): {budgets}. Target {target:.0%} test "
        f"accuracy on {results['test_samples']} test samples, evaluated about "
        f"{results['evals_per_run']} times per run. MB per link: mean megabytes of gradient "
        "messages sent per directed link over the run (- : not measured, e.g. the collective "
        "Allreduce under --microcloud).",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], folder: Path) -> list[str]:
    """One PNG per scenario (test accuracy vs training wall time); [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[microcloud] matplotlib is not installed: no plots (pip install '.[bench]')")
        return []
    paths = []
    for key, sc in results["scenarios"].items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for name, s in sc["policies"].items():
            ts = [p["t"] for p in s["curve"]]
            accs = [p["accuracy"] for p in s["curve"]]
            ax.plot(ts, accs, marker=".", label=POLICY_NAMES.get(name, name))
        ax.axhline(results["target_accuracy"], color="gray", ls="--", lw=0.8, label="target")
        ax.set_xlabel("training wall time (s, evaluation excluded)")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0.0, 1.0)
        ax.set_title(sc["title"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        path = folder / f"{key}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def write(results: dict[str, Any], folder: Path) -> dict[str, str]:
    """Write results.json, results.md and the plots into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "microcloud.json"
    js.write_text(json.dumps(results, indent=1))
    md = folder / "microcloud.md"
    head = f"# Micro-cloud benchmark ({results['mode']})\n\n`{results['command']}`\n\n"
    md.write_text(head + table(results))
    paths = {"json": str(js), "markdown": str(md)}
    for i, p in enumerate(plot(results, folder)):
        paths[f"plot{i}"] = p
    return paths
