"""The benchmark's seed statistics against plain Python: medians, ranges, not-reached runs."""

import math
import statistics
import sys

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
