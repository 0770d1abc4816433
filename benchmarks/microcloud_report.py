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
import sys
from pathlib import Path
from typing import Any

# The statistics and the bandwidth table live in microcloud_stats.py and microcloud_tables.py;
# the benchmark and its tests use their names through this module too (__all__).
from microcloud_stats import (
    LEADS,
    MODE_NAMES,
    NONE,
    POLICY_NAMES,
    REFERENCE,
    VERSUS,
    aggregate,
    multiple,
    seconds_text,
    speedup,
    spread,
    summarize_run,
    time_to_target,
)
from microcloud_tables import bandwidth, fidelity, winner

__all__ = [
    "DOCS_PAGE",
    "LEADS",
    "MODE_NAMES",
    "NONE",
    "POLICY_NAMES",
    "REFERENCE",
    "VERSUS",
    "aggregate",
    "bandwidth",
    "fidelity",
    "main",
    "markdown",
    "merge",
    "multiple",
    "parts",
    "plot",
    "ratios",
    "replace_block",
    "speedup",
    "spread",
    "summarize_run",
    "table",
    "time_to_target",
    "update_docs",
    "update_readme",
    "versus_reference",
    "winner",
    "write",
]

#: The page whose bandwidth table ``update_docs`` rewrites (relative to the project root).
DOCS_PAGE = "docs/choosing-a-policy.md"


def _cell_time(sp: dict[str, Any], budget: float) -> str:
    if sp["n"] == 0:
        return "-"
    med = "not reached" if sp["median"] is None else f"{sp['median']:.1f}"
    if sp["n"] == 1:
        return med
    return f"{med} [{seconds_text(sp['min'], budget)}, {seconds_text(sp['max'], budget)}]"


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


def plot(results: dict[str, Any], folder: Path, prefix: str = "") -> list[str]:
    """One PNG per cell (test accuracy vs training time, every seed), ``{prefix}{mode}-
    {scenario}.png``; [] without matplotlib."""
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
        path = folder / f"{prefix}{cid.replace('/', '-')}.png"
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


def plot_prefix(stem: str) -> str:
    """What the plots of ``stem`` are named with: nothing for the default and README's
    (``headline``), else ``{stem}-``."""
    return "" if stem in ("microcloud", "headline") else f"{stem}-"


def write(results: dict[str, Any], folder: Path, stem: str = "microcloud") -> dict[str, str]:
    """Write ``{stem}.json``, ``{stem}.md`` and the plots into ``folder``; returns the paths.
    The plots of a stem other than the default and ``headline`` (README's) are named after it,
    ``{stem}-{mode}-{scenario}.png``, so a later run does not overwrite README's."""
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / f"{stem}.json"
    js.write_text(json.dumps(results, indent=1))
    md = folder / f"{stem}.md"
    md.write_text(f"# Micro-cloud benchmark\n\n{markdown(results)}")
    paths = {"json": str(js), "markdown": str(md)}
    for i, p in enumerate(plot(results, folder, plot_prefix(stem))):
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
