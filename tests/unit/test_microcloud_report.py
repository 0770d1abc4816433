"""The benchmark's seed statistics against plain Python: medians, ranges, not-reached runs."""

import math
import os
import statistics
import sys

import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(ROOT / "benchmarks"))
import microcloud_report as report  # noqa: E402

times = st.lists(st.one_of(st.none(), st.floats(0.0, 1e3)), min_size=1, max_size=7)


@given(times)
def test_spread_orders_not_reached_after_every_time(values):
    sp = report.spread(values)
    reached = [v for v in values if v is not None]
    # the reference: "not reached" is infinitely late
    ref = statistics.median([math.inf if v is None else v for v in values])
    assert sp["median"] == (None if math.isinf(ref) else ref)
    assert sp["n"] == len(values) and sp["reached"] == len(reached)
    assert sp["min"] == (min(reached) if reached else None)
    assert sp["max"] == (max(values) if len(reached) == len(values) else None)


def cell(times_s):
    return {"time_to": {"0.85": report.spread(times_s)}}


def test_speedup_is_a_ratio_of_medians_or_a_budget_bound():
    assert report.speedup(cell([10, 20, 30]), cell([40, 60, 90]), "0.85", 100) == "3.00x"
    assert report.speedup(cell([10, 20, 30]), cell([None, None, 90]), "0.85", 100) == ">5.0x"
    assert report.speedup(cell([None, None, 30]), cell([10, 20, 30]), "0.85", 100) == "-"


def results_of(cell_id, commit):
    return {
        "commit": commit,
        "dirty": False,
        "command": f"python benchmarks/microcloud.py --stem {commit}",
        "seconds_total": 60.0,
        "machine": "2 cores",
        "targets": [0.85],
        "eval_every_s": 2.0,
        "test_samples": 2000,
        "cells": {cell_id: {"mode": cell_id.split("/")[0]}},
    }


def test_merged_results_keep_every_cell_and_where_each_came_from():
    merged = report.merge(
        [results_of("microcloud/wan", "a" * 40), results_of("inprocess/wan", "b" * 40)]
    )
    assert list(merged["cells"]) == ["microcloud/wan", "inprocess/wan"]
    assert [(p["commit"], p["cells"]) for p in merged["parts"]] == [
        ("a" * 40, ["microcloud/wan"]),
        ("b" * 40, ["inprocess/wan"]),
    ]
    other = results_of("inprocess/lan", "c" * 40)
    other["targets"] = [0.8]
    with pytest.raises(SystemExit, match="different targets"):
        report.merge([merged, other])


# -- the no-communication reference and the bandwidth table ----------------------------------


def agg(t80, t85, acc):
    """A cell's statistics for one policy, one seed: times to 80% / 85% (None: not reached)."""
    return {
        "time_to": {"0.80": report.spread([t80]), "0.85": report.spread([t85])},
        "accuracy_at_budget": report.spread([acc]),
    }


def bw_cell(mbit, policies):
    return {
        "mode": "inprocess",
        "scenario": f"wan-hetero@{mbit:g}mbit",
        "base_scenario": "wan-hetero",
        "wan_mbit": mbit,
        "topology": f"A:2,B:2 A-B:{mbit:g}mbit:40ms compute=1,1,0.5,0.5",
        "seeds": [0],
        "budget_s": 100.0,
        "policies": policies,
    }


def bw_results():
    ref = agg(10.0, 20.0, 0.90)
    cells = {  # not in rate order: the table sorts its rows
        20: {
            "allreduce": agg(60, None, 0.82),
            "dlion": agg(20, 40, 0.87),
            "outer": agg(25, 45, 0.86),
        },
        1: {
            "allreduce": agg(None, None, 0.5),
            "dlion": agg(70, None, 0.83),
            "outer": agg(30, 50, 0.86),
        },
        100: {
            "allreduce": agg(10, None, 0.84),
            "dlion": agg(15, None, 0.84),
            "outer": agg(30, None, 0.83),
        },
        5: {
            "allreduce": agg(None, None, 0.6),
            "dlion": agg(None, None, 0.79),
            "outer": agg(None, None, 0.78),
        },
    }
    return {
        **results_of("inprocess/lan", "d" * 40),
        "targets": [0.80, 0.85],
        "cells": {
            f"inprocess/wan-hetero@{m}mbit": bw_cell(m, {**p, "reference": ref})
            for m, p in cells.items()
        },
    }


def test_bandwidth_table_has_one_row_per_rate_and_its_winner():
    lines = report.bandwidth(bw_results())
    head = next(line for line in lines if line.startswith("| WAN Mbit/s"))
    assert head.split(" | ")[1:4] == [
        "Allreduce (dlion, site-aware)",
        "DLion",
        "OuterSync (local steps, outer sync)",
    ]
    assert "no-communication reference (1 process)" in head and head.endswith("| winner |")
    rows = [line for line in lines if line[:3] in ("| 1", "| 5", "| 2") or line.startswith("| 100")]
    assert [r.split(" | ")[0] for r in rows] == ["| 1", "| 5", "| 20", "| 100"]
    win = {r.split(" | ")[0][2:]: r.split(" | ")[-1] for r in rows}
    # the first to the highest target any reached wins, the reference never does; its time
    # is also given as a multiple of the reference's
    assert win["1"] == "OuterSync (local steps, outer sync): first to 85%, 2.50x reference |"
    assert win["20"] == "DLion: first to 85%, 2.00x reference |"
    assert win["100"] == "Allreduce (dlion, site-aware): first to 80%, 1.00x reference |"
    assert win["5"] == "DLion: best accuracy at budget |"  # nobody reached a target
    assert "`A:2,B:2 A-B:R:40ms compute=1,1,0.5,0.5`, R = the row's rate" in lines[0]
    # each entry: median time to 80% / 85% (s), then the accuracy at the budget
    assert "| 70.0 / >100 · 0.830 |" in rows[0]
    assert report.winner({"reference": agg(1, 1, 1.0)}, ["0.80", "0.85"]) is None


def test_time_to_target_as_a_multiple_of_the_reference():
    ref = agg(10.0, 20.0, 0.9)
    assert report.multiple(agg(25, 50, 0.8), ref, "0.85", 100) == "2.50x"
    assert report.multiple(agg(25, None, 0.8), ref, "0.85", 100) == ">5.0x"
    assert report.multiple(agg(25, 50, 0.8), agg(10, None, 0.9), "0.85", 100) == "-"
    rows = report.versus_reference(bw_results())
    assert "| in-process emulation | wan-hetero@1mbit | DLion | 7.00x | >5.0x |" in rows
    assert not [r for r in rows if "| no-communication reference" in r]  # not against itself
    assert report.versus_reference({"targets": [0.85], "cells": {}}) == []


def test_docs_bandwidth_block_is_replaced_and_the_rest_kept(tmp_path):
    page = tmp_path / "choosing.md"
    page.write_text(f"intro\n{report.BW_BEGIN}\nold figures\n{report.BW_END}\nguidance\n")
    report.update_docs(page, bw_results())
    text = page.read_text()
    assert text.startswith(f"intro\n{report.BW_BEGIN}\nProduced by") and "old figures" not in text
    assert text.endswith(f"{report.BW_END}\nguidance\n") and "| WAN Mbit/s |" in text
    assert "multiple of the no-communication reference" in text
    with pytest.raises(SystemExit, match="--bandwidths"):
        report.update_docs(page, results_of("inprocess/wan", "e" * 40))
    # the page of the repository has the block to regenerate
    real = (ROOT / report.DOCS_PAGE).read_text()
    assert real.count(report.BW_BEGIN) == 1 and real.count(report.BW_END) == 1


# -- the plan: bandwidth scenarios, the reference's launch, the outer policy's flags ----------


def plan_of(*argv):
    import microcloud

    return microcloud.parse_args(list(argv))


def test_bandwidths_rerun_each_scenario_with_every_wan_link_at_each_rate():
    import microcloud_launch as launcher

    args = plan_of("--scenarios=wan-hetero,3site", "--bandwidths=1,5,20,100", "--policies=dlion")
    assert list(args.plan) == [
        ("inprocess", f"{s}@{b}mbit") for s in ("wan-hetero", "3site") for b in (1, 5, 20, 100)
    ]
    for (_mode, key), budget in args.budgets.items():
        assert budget == 180.0
        rate = key.split("@")[1]
        tp = launcher.SCENARIOS[key].topology(4, 150)
        base = launcher.SCENARIOS[key.split("@")[0]].topology(4, 150)
        # every WAN link at the rate, latencies and compute speeds unchanged, in both modes
        assert tp.links == [(a, b, rate, delay) for a, b, _, delay in base.links]
        assert tp.compute == base.compute == [1, 1, 0.5, 0.5]
        emulate = tp.emulate_inprocess().split()
        assert [i for i in emulate if ":" in i and "-" in i] == [
            f"{a}-{b}:{rate}:{d}" for a, b, _, d in base.links
        ]
        up = tp.microcloud_up()
        assert [up[i + 1] for i, v in enumerate(up) if v == "--link"] == [
            f"{a}-{b}:{rate}:{d}" for a, b, _, d in base.links
        ]
    with pytest.raises(SystemExit):
        plan_of("--scenarios=lan", "--bandwidths=5")  # no WAN link to vary
    with pytest.raises(SystemExit):
        plan_of("--scenarios=wan", "--bandwidths=5,0")


def test_the_reference_is_one_process_with_every_core_and_the_global_batch():
    import microcloud_launch as launcher

    args = plan_of("--scenarios=wan-hetero", "--policies=dlion,reference", "--batch=32")
    assert args.reference and args.policies == "dlion"
    assert args.plan == {("inprocess", "wan-hetero"): "dlion"}
    cmd, env = launcher.reference_command(args, 4, seed=2, budget=30.0, result="r.json")
    assert cmd[1:3] == ["-n", "1"] and cmd[3:5] == [
        sys.executable,
        str(launcher.HERE / "microcloud_worker.py"),
    ]
    assert "--policies=reference" in cmd and "--seed=2" in cmd and "--budget=30.0" in cmd
    assert [a for a in cmd if a.startswith("--batch=")] == ["--batch=128"]  # 32 x 4 ranks
    assert f"--threads={os.cpu_count()}" in cmd and not [a for a in cmd if a.startswith("--sites")]
    assert env["DLION_EMULATE"] == "" and env["TF_NUM_INTRAOP_THREADS"] == str(os.cpu_count())
    assert not plan_of("--scenarios=wan").reference
    headline = plan_of("--headline")
    assert headline.reference and all("outer" in p.split(",") for p in headline.plan.values())
    assert not plan_of("--headline", "--no-reference").reference


def test_outer_policy_flags_reach_the_worker():
    import microcloud_launch as launcher
    import microcloud_worker as worker

    args = plan_of("--scenarios=wan", "--policies=outer", "--outer-every=50", "--outer-bits=4")
    tp = launcher.SCENARIOS["wan"].topology(4, 150)
    wa = launcher.worker_args(args, "inprocess", tp, seed=0, policies="outer", budget=5, result="r")
    parsed = worker.parse_args(wa)
    assert (parsed.outer_every, parsed.outer_lr, parsed.outer_momentum) == (50, 0.7, 0.9)
    assert (parsed.outer_fragments, parsed.outer_overlap, parsed.outer_bits) == (1, 0, 4)
    assert "outer" in worker.BATCHED and "outer" not in worker.TRANSFERRING

    class NoOuter:  # a dlion without the class: the worker names what is missing
        __file__ = "dlion/__init__.py"

    with pytest.raises(SystemExit, match="dlion.OuterSync"):
        worker.check_policy("outer", NoOuter)


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("matplotlib") is None, reason="matplotlib missing"
)
@pytest.mark.parametrize(("stem", "name"), [("headline", ""), ("q12", "q12-")])
def test_plots_of_another_stem_do_not_overwrite_the_headline_plots(tmp_path, stem, name):
    curve = [{"t": 0.0, "step": 0, "accuracy": 0.1}, {"t": 5.0, "step": 50, "accuracy": 0.8}]
    one = {"mode": "inprocess", "title": "wan", "runs": {"dlion": {"0": {"curve": curve}}}}
    paths = report.plot({"targets": [0.8], "cells": {"inprocess/wan": one}}, tmp_path, name)
    assert paths == [str(tmp_path / f"{name}inprocess-wan.png")]
    assert report.plot_prefix(stem) == name  # what write() names that stem's plots with
