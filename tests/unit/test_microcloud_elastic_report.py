"""benchmarks/microcloud_elastic_report.py and the dynamic scenario's options: each policy with
the event against itself without it, at equal steps; the modes that cannot run it refuse."""

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import microcloud_elastic_report as er  # noqa: E402


def run(steps, curve, times, elastic=None):
    return {
        "steps": steps,
        "curve": [{"step": s, "accuracy": a, "t": 0.0} for s, a in curve],
        "accuracy_at_budget": curve[-1][1],
        "time_to": {"0.80": times},
        "elastic": elastic,
    }


def test_equal_steps_takes_the_shorter_run_and_interpolates_the_other():
    rec = {"cause": "B leaves", "at_s": 20.0, "recovery_s": 25.0, "recovery_wall_s": 27.0}
    dyn = run(
        100,
        [(0, 0.1), (100, 0.80)],
        60.0,
        {"restarts": 1, "recoveries": [rec | {"stopped_at_step": 40, "resumed_from": 30}]},
    )
    plain = run(150, [(0, 0.1), (50, 0.60), (150, 0.90)], 40.0)
    f = er.seed_figures(dyn, plain)
    assert f["equal_steps"] == 100 and f["accuracy_at_equal_steps"] == 0.80
    assert f["accuracy_at_equal_steps_no_event"] == pytest.approx(0.75)  # halfway 0.60..0.90
    assert f["points_at_equal_steps"] == pytest.approx(5.0)
    assert f["recoveries"][0]["lost_steps"] == 10 and f["restarts"] == 1
    runs = {"dlion": {0: dyn}, "dlion (no event)": {0: plain}, "gaia": {0: plain}}
    cmp_ = er.compare(runs, [0.80])
    assert list(cmp_) == ["dlion"]  # gaia has no run without the event
    assert cmp_["dlion"]["recovery_s"]["B leaves"]["median"] == 25.0
    assert cmp_["dlion"]["time_to"]["0.80"]["median"] == 60.0
    assert cmp_["dlion"]["time_to_no_event"]["0.80"]["median"] == 40.0
    results = {
        "targets": [0.80],
        "cells": {
            "inprocess/wan-leave": {
                "scenario": "wan-leave",
                "seeds": [0],
                "budget_s": 75.0,
                "events": {
                    "leaves": "B",
                    "leave_at_s": 20.0,
                    "rejoin_at_s": 40.0,
                    "checkpoint_every": 25,
                    "without_event": "wan-hetero",
                    "supervisor": "python -m dlion.run",
                },
                "elastic": cmp_,
            }
        },
    }
    text = "\n".join(er.lines(results))
    assert "site B leaves at 20 s, rejoins at 40 s" in text
    assert (
        "| DLion | 60.0 / 40.0 | 1 | B leaves: 25.0 | 0.800 / 0.900 | 0.800 / 0.750 (+5.0)" in text
    )


def test_the_dynamic_scenario_runs_in_process_only():
    import microcloud

    args = microcloud.parse_args(["--scenarios=wan-leave", "--policies=dlion,outer"])
    assert args.plan == {("inprocess", "wan-leave"): "dlion,outer"}
    assert (args.leave_at, args.rejoin_at, args.checkpoint_every) == (20.0, 40.0, 25)
    for bad in (["--modes=microcloud"], ["--bandwidths=5,20"]):
        with pytest.raises(SystemExit):
            microcloud.parse_args(["--scenarios=wan-leave", *bad])
