"""Results of the micro-cloud benchmark: per-run summaries, seed statistics, tables, plots.

One *run* is one policy trained once (one seed) on one scenario in one mode; a *cell* is every
seed of one (mode, scenario, policy). A cell reports the median and the range (min-max) over its
seeds; a time to target that was not reached within the budget counts as longer than any that
was (so the median of 3 seeds is "not reached" when 2 of the 3 did not reach it).

    python benchmarks/microcloud_report.py benchmarks/results/microcloud.json   # table again
    python benchmarks/microcloud_report.py --out benchmarks/results --readme README.md \
        benchmarks/results/realnet.json benchmarks/results/inprocess.json        # merged
    python benchmarks/microcloud_report.py --docs docs/choosing-a-policy.md \
        benchmarks/results/bandwidth.json                                        # --bandwidths

Besides the per-cell tables: the speedups of DLion and of the outer synchronization against the
baselines, each policy's time to target as a multiple of the no-communication reference's (when
the run had ``--reference``), the bandwidth table (cells of ``--bandwidths``: WAN Mbit/s x
policy, the winner per rate) and the emulation fidelity table.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
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
#: The page whose bandwidth table ``update_docs`` rewrites (relative to the project root).
DOCS_PAGE = "docs/choosing-a-policy.md"


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
    mine, theirs = cell["time_to"][key]["median"], base["time_to"][key]["median"]
    if mine is None or mine <= 0:
        return "-"
    if theirs is None:
        return f">{budget / mine:.1f}x"
    return f"{theirs / mine:.2f}x"


NONE = {"median": None, "min": None, "max": None, "reached": 0, "n": 0}  # results before a field


def _s(v: float | None, budget: float) -> str:
    return f">{budget:g}" if v is None else f"{v:.1f}"


def _cell_time(sp: dict[str, Any], budget: float) -> str:
    if sp["n"] == 0:
        return "-"
    med = "not reached" if sp["median"] is None else f"{sp['median']:.1f}"
    if sp["n"] == 1:
        return med
    return f"{med} [{_s(sp['min'], budget)}, {_s(sp['max'], budget)}]"


def _cell_num(sp: dict[str, Any], fmt: str) -> str:
    """median [min, max]; "-" for a value never measured (None: a target not reached)."""
    if sp["n"] == 0 or sp["median"] is None:
        return "-"

    def f(v: float | None) -> str:
        return "-" if v is None else format(v, fmt)

    if sp["n"] == 1:
        return f(sp["median"])
    return f"{f(sp['median'])} [{f(sp['min'])}, {f(sp['max'])}]"


def table(results: dict[str, Any]) -> str:
    """Markdown: one table per (mode, scenario), then DLion's ratios and the fidelity table."""
    keys = [f"{t:.2f}" for t in results["targets"]]
    head = " | ".join(f"time to {float(k):.0%} (s)" for k in keys)
    lines: list[str] = []
    for cell in results["cells"].values():
        budget = cell["budget_s"]
        lines += [
            f"**{MODE_NAMES.get(cell['mode'], cell['mode'])}, {cell['scenario']}**: "
            f"`{cell['topology']}`, {len(cell['seeds'])} seeds, budget {budget:g} s"
            + (
                f", runs made at commit {', '.join(c[:12] for c in cell['commits'])}"
                if cell.get("commits")
                else ""
            ),
            "",
            f"| policy | {head} | steps to {float(keys[-1]):.0%} | accuracy at budget | "
            "steps/s | MB per WAN link | KB per WAN link per step |",
            "|---|" + "---|" * (len(keys) + 5),
        ]
        for name, agg in cell["policies"].items():
            times = " | ".join(_cell_time(agg["time_to"][k], budget) for k in keys)
            lines.append(
                f"| {POLICY_NAMES.get(name, name)} | {times} | "
                f"{_cell_num(agg['steps_to'][keys[-1]], '.0f')} | "
                f"{_cell_num(agg['accuracy_at_budget'], '.3f')} | "
                f"{_cell_num(agg['steps_per_s'], '.2f')} | "
                f"{_cell_num(agg['mb_per_wan_link'], '.1f')} | "
                f"{_cell_num(agg.get('kb_per_wan_link_step', NONE), '.1f')} |"
            )
        lines.append("")
    import microcloud_elastic_report as elastic  # the dynamic scenarios' table (it imports us)

    lines += ratios(results) + versus_reference(results) + bandwidth(results) + fidelity(results)
    lines += elastic.lines(results)
    return "\n".join(lines).rstrip() + "\n"


def ratios(results: dict[str, Any]) -> list[str]:
    """The speedup of DLion and of the outer synchronization to each target against each
    baseline present, per cell (ratio of medians)."""
    keys = [f"{t:.2f}" for t in results["targets"]]
    rows = []
    for cell in results["cells"].values():
        pols = cell["policies"]
        for lead, versus in LEADS.items():
            if lead not in pols:
                continue
            for base in versus:
                if base in pols:
                    sp = [speedup(pols[lead], pols[base], k, cell["budget_s"]) for k in keys]
                    rows.append(
                        f"| {MODE_NAMES.get(cell['mode'], cell['mode'])} | {cell['scenario']} | "
                        f"{POLICY_NAMES.get(lead, lead)} | {POLICY_NAMES.get(base, base)} | "
                        + " | ".join(sp)
                        + " |"
                    )
    if not rows:
        return []
    head = " | ".join(f"to {float(k):.0%}" for k in keys)
    return [
        "Reaches the target this many times sooner than the baseline (ratio of medians; `>` "
        "when the baseline's median run did not reach it, bounded by the budget):",
        "",
        f"| mode | scenario | policy | against | {head} |",
        "|---|---|---|---|" + "---|" * len(keys),
        *rows,
        "",
    ]


def multiple(cell: dict[str, Any], ref: dict[str, Any], key: str, budget: float) -> str:
    """``cell``'s median time to target ``key`` as a multiple of the reference's: ``>`` (a
    bound from the budget) when ``cell``'s median run did not reach it, "-" when the
    reference's did not."""
    mine, theirs = cell["time_to"][key]["median"], ref["time_to"][key]["median"]
    if theirs is None or theirs <= 0:
        return "-"
    if mine is None:
        return f">{budget / theirs:.1f}x"
    return f"{mine / theirs:.2f}x"


def versus_reference(results: dict[str, Any]) -> list[str]:
    """Each policy's time to each target as a multiple of the no-communication reference's, in
    the cells that have one (1.00x: as soon as one process with every core and no network)."""
    keys = [f"{t:.2f}" for t in results["targets"]]
    rows = []
    for cell in results["cells"].values():
        pols = cell["policies"]
        if REFERENCE not in pols:
            continue
        ref = pols[REFERENCE]
        for name, agg in pols.items():
            if name == REFERENCE:
                continue
            ms = [multiple(agg, ref, k, cell["budget_s"]) for k in keys]
            rows.append(
                f"| {MODE_NAMES.get(cell['mode'], cell['mode'])} | {cell['scenario']} | "
                f"{POLICY_NAMES.get(name, name)} | " + " | ".join(ms) + " |"
            )
    if not rows:
        return []
    head = " | ".join(f"to {float(k):.0%}" for k in keys)
    return [
        "Time to target as a multiple of the no-communication reference's (ratio of medians; "
        "the reference is one process with every core of the machine, the same model, data and "
        "global batch, no exchange; `>` when the policy's median run did not reach it):",
        "",
        f"| mode | scenario | policy | {head} |",
        "|---|---|---|" + "---|" * len(keys),
        *rows,
        "",
    ]


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
    times = " / ".join(_s(agg["time_to"][k]["median"], budget) for k in keys)
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


def plot(results: dict[str, Any], folder: Path) -> list[str]:
    """One PNG per cell (test accuracy vs training time, every seed); [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[microcloud] matplotlib is not installed: no plots (pip install '.[bench]')")
        return []
    paths = []
    for cid, cell in results["cells"].items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for i, (name, per_seed) in enumerate(cell["runs"].items()):
            for j, seed in enumerate(sorted(per_seed, key=int)):
                curve = per_seed[seed]["curve"]
                ax.plot(
                    [p["t"] for p in curve],
                    [p["accuracy"] for p in curve],
                    color=f"C{i}",
                    lw=1.0,
                    alpha=0.8,
                    label=POLICY_NAMES.get(name, name) if j == 0 else None,
                )
        for t in results["targets"]:
            ax.axhline(t, color="gray", ls="--", lw=0.6)
        ax.set_xlabel("training wall time (s, evaluation excluded)")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0.4, 1.0)
        ax.set_title(f"{MODE_NAMES.get(cell['mode'], cell['mode'])}: {cell['title']}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
        path = folder / f"{cid.replace('/', '-')}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def parts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Where the cells of ``results`` come from: one entry per command that produced some."""
    if "parts" in results:
        return list(results["parts"])
    keys = ("commit", "dirty", "command", "seconds_total", "machine")
    return [{**{k: results.get(k) for k in keys}, "cells": list(results["cells"])}]


def merge(many: list[dict[str, Any]]) -> dict[str, Any]:
    """One report of the cells of several results (same targets and evaluation settings)."""
    first = many[0]
    for other in many[1:]:
        for key in ("targets", "eval_every_s", "test_samples"):
            if other[key] != first[key]:
                raise SystemExit(
                    f"cannot merge results with different {key}: {first[key]} and {other[key]}"
                )
    cells: dict[str, Any] = {}
    for r in many:
        cells.update(r["cells"])
    return {
        "targets": first["targets"],
        "eval_every_s": first["eval_every_s"],
        "test_samples": first["test_samples"],
        "parts": [p for r in many for p in parts(r)],
        "cells": cells,
    }


def _sources(results: dict[str, Any]) -> list[str]:
    """ "Produced by" and one line per command that produced some of the cells."""
    lines = ["Produced by", ""]
    for part in parts(results):
        dirty = " (with uncommitted changes)" if part.get("dirty") else ""
        lines.append(
            f"- {', '.join(part['cells'])}: commit `{str(part['commit'])[:12]}`{dirty}, "
            f"`{part['command']}` ({(part.get('seconds_total') or 0) / 60:.0f} min on "
            f"{part['machine']})"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The whole report: where it comes from, then the tables."""
    return (
        "\n".join(_sources(results)) + "\n\n"
        f"Evaluation every {results['eval_every_s']:g} s of training on "
        f"{results['test_samples']} test samples; policy order rotated between seeds; cells: "
        "median [min, max] over seeds.\n\n" + table(results)
    )


def write(results: dict[str, Any], folder: Path, stem: str = "microcloud") -> dict[str, str]:
    """Write ``{stem}.json``, ``{stem}.md`` and the plots into ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / f"{stem}.json"
    js.write_text(json.dumps(results, indent=1))
    md = folder / f"{stem}.md"
    md.write_text(f"# Micro-cloud benchmark\n\n{markdown(results)}")
    paths = {"json": str(js), "markdown": str(md)}
    for i, p in enumerate(plot(results, folder)):
        paths[f"plot{i}"] = p
    return paths


BEGIN, END = "<!-- microcloud-results:begin -->", "<!-- microcloud-results:end -->"
BW_BEGIN, BW_END = "<!-- bandwidth-table:begin -->", "<!-- bandwidth-table:end -->"


def replace_block(path: Path, begin: str, end: str, body: str) -> None:
    """Replace the text between the markers ``begin`` and ``end`` of ``path`` with ``body``."""
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: no {begin} ... {end} markers to replace")
    head, rest = text.split(begin, 1)
    path.write_text(f"{head}{begin}\n{body}{end}{rest.split(end, 1)[1]}")


def update_readme(readme: Path, results: dict[str, Any], images: list[str]) -> None:
    """Replace the text between the README's result markers with this report."""
    pics = "".join(f"![{Path(p).stem}]({p})\n" for p in images)
    replace_block(readme, BEGIN, END, f"{markdown(results)}\n{pics}")


def update_docs(page: Path, results: dict[str, Any]) -> None:
    """Replace the bandwidth table block of ``page`` (docs/choosing-a-policy.md) with the
    bandwidth tables of ``results`` and where they come from."""
    tables = bandwidth(results)
    if not tables:
        raise SystemExit(
            "no bandwidth cells in these results: run benchmarks/microcloud.py with --bandwidths"
        )
    body = "\n".join(_sources(results)) + "\n\n" + "\n".join(tables)
    body += "\n" + "\n".join(versus_reference(_only_bandwidth(results)))
    replace_block(page, BW_BEGIN, BW_END, body.rstrip() + "\n")


def _only_bandwidth(results: dict[str, Any]) -> dict[str, Any]:
    cells = {k: c for k, c in results["cells"].items() if c.get("wan_mbit") is not None}
    return {**results, "cells": cells}


def main(argv: list[str] | None = None) -> None:
    """Print (and with --readme write) the report of one or more results files."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="+", help="microcloud JSON files (their cells are merged)")
    p.add_argument("--out", default=None, help="write the merged JSON, markdown and plots here")
    p.add_argument("--stem", default="microcloud")
    p.add_argument("--readme", default=None, help="rewrite this README's Results block")
    p.add_argument("--docs", default=None, help=f"rewrite this page's bandwidth table: {DOCS_PAGE}")
    args = p.parse_args(argv)
    results = merge([json.loads(Path(f).read_text()) for f in args.results])
    images: list[str] = []
    if args.out:
        paths = write(results, Path(args.out), args.stem)
        images = [v for k, v in paths.items() if k.startswith("plot")]
    if args.readme:
        readme = Path(args.readme)
        update_readme(
            readme,
            results,
            [str(Path(i).resolve().relative_to(readme.resolve().parent)) for i in images],
        )
    if args.docs:
        update_docs(Path(args.docs), results)
    print(markdown(results))


if __name__ == "__main__":
    main(sys.argv[1:])
