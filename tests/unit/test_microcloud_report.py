"""The benchmark's seed statistics against plain Python: medians, ranges, not-reached runs."""

import math
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
