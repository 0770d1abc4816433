"""Timeline on one process: file naming, Chrome-trace structure, spans, bounded memory."""

import json

import pytest

from dlion import timeline


def test_rank_paths():
    assert str(timeline.rank_path("out/trace.json", 3)) == "out/trace.rank3.json"
    assert str(timeline.rank_path("trace", 0)) == "trace.rank0.json"


def test_spans_and_file_structure(tmp_path, monkeypatch):
    t = timeline.Timeline(tmp_path / "t.json", rank=2, size=4)
    monkeypatch.setattr(timeline, "_active", t)
    started = t.step_begin()
    with timeline.span("exchange", "exchange", op="g[0]", bytes=64):
        pass
    t.step_end(started)
    t.step_begin()  # a compute span since the last step ended
    assert timeline.stop() == tmp_path / "t.rank2.json"
    assert timeline.active() is None
    doc = json.loads((tmp_path / "t.rank2.json").read_text())
    spans = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert [e["name"] for e in spans] == ["exchange", "step", "compute"]
    assert spans[0]["args"] == {"op": "g[0]", "bytes": 64}
    assert all(e["pid"] == 2 and e["dur"] >= 0 and e["ts"] >= 0 for e in spans)
    assert spans[1]["ts"] <= spans[0]["ts"] and spans[2]["ts"] >= spans[1]["ts"]


def test_span_is_a_no_op_without_a_timeline(monkeypatch):
    monkeypatch.setattr(timeline, "_active", None)
    with timeline.span("x", "y"):
        pass
    assert timeline.stop() is None


def test_events_beyond_the_cap_are_counted_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(timeline, "MAX_EVENTS", 3)
    t = timeline.Timeline(tmp_path / "t.json", rank=0, size=1)
    for i in range(5):
        t.add("e", "c", i, i + 1)
    assert len(t.events) == 3 and t.dropped == 2
    doc = json.loads(t.write().read_text())
    assert doc["otherData"]["dropped_events"] == 2


def test_start_needs_a_path():
    with pytest.raises(ValueError, match="file path"):
        timeline.start("", 0, 1)
