"""Timeline: a Chrome-trace (``chrome://tracing``, Perfetto) of what each rank spent time on.

``DLION_TIMELINE=trace.json`` (or ``dlion.init(timeline="trace.json")``) starts it at
``dlion.init()``; ``dlion.start_timeline(path)`` / ``dlion.stop_timeline()`` bracket any part of
a run. Every rank writes its own file, ``trace.json`` -> ``trace.rank0.json``,
``trace.rank1.json``, ... (load several into Perfetto to see them side by side; ``pid`` is the
rank). Spans are measured in Python around what the optimizer does:

  compute    from the end of one ``apply_gradients`` to the start of the next (forward and
             backward, data loading, anything the loop does in between)
  pack       copying the gradients into the fused buffers
  exchange   one fused buffer, from ``start`` until its handle's ``wait`` returned
             (args: op name, bytes, policy; for a peer exchange also ``links``: per peer the
             bytes its link carried since the step's exchanges started, its last k and its
             measured bandwidth). The engines' own work (compressing per link, sending,
             receiving, decoding) runs on their threads inside this span.
  wait       the part of that spent in ``wait``
  join       one control round of ``dlion.join`` (args: active ranks)
  apply      applying the combined gradients
  step       one whole ``apply_gradients`` call (pack, exchange, apply nest inside it)

Events are kept in memory (at most ``MAX_EVENTS``; later ones are counted, not kept) and written
when the timeline stops: at ``stop_timeline()``, ``dlion.shutdown()`` or exit.

This module imports nothing else of dlion: the runtime passes the rank and the number of ranks
to :func:`start`, and stops the running timeline at ``dlion.shutdown()``, so none outlives a run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MAX_EVENTS = 1_000_000


class Timeline:
    """Collects complete ("X") events of one rank and writes them as Chrome-trace JSON."""

    def __init__(self, path: str | os.PathLike[str], rank: int, size: int) -> None:
        self.path = rank_path(path, rank) if size > 1 else Path(path)
        self.rank = rank
        self.events: list[dict[str, Any]] = []
        self.dropped = 0
        self.origin_ns = time.perf_counter_ns()
        self._lock = threading.Lock()
        self._tids: dict[int, int] = {}
        self.last_apply_end_us: float | None = None

    def now_us(self) -> float:
        """Microseconds since the timeline started."""
        return (time.perf_counter_ns() - self.origin_ns) / 1000.0

    def add(self, name: str, cat: str, start_us: float, end_us: float, **args: Any) -> None:
        """Record one span; ``args`` appear in the trace viewer's details pane."""
        tid = self._tids.setdefault(threading.get_ident(), len(self._tids))
        event = {
            "name": name,
            "cat": cat,
            "ph": "X",
            "ts": round(start_us, 3),
            "dur": round(max(0.0, end_us - start_us), 3),
            "pid": self.rank,
            "tid": tid,
            "args": args,
        }
        with self._lock:
            if len(self.events) < MAX_EVENTS:
                self.events.append(event)
            else:
                self.dropped += 1

    def step_begin(self) -> float:
        """An optimizer step starts: record "compute" since the previous step ended."""
        now = self.now_us()
        if self.last_apply_end_us is not None:
            self.add("compute", "compute", self.last_apply_end_us, now)
        return now

    def step_end(self, started_us: float, **args: Any) -> None:
        """An optimizer step ends: record it as "step" (exchange and apply nest inside)."""
        self.last_apply_end_us = self.now_us()
        self.add("step", "step", started_us, self.last_apply_end_us, **args)

    def write(self) -> Path:
        """Write the trace (atomically) and return its path."""
        r = self.rank
        meta = [
            {"name": "process_name", "ph": "M", "pid": r, "args": {"name": f"rank {r}"}},
            {"name": "process_sort_index", "ph": "M", "pid": r, "args": {"sort_index": r}},
        ]
        with self._lock:
            doc = {
                "traceEvents": meta + self.events,
                "displayTimeUnit": "ms",
                "otherData": {"rank": self.rank, "dropped_events": self.dropped},
            }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.path)
        return self.path


def rank_path(path: str | os.PathLike[str], rank: int) -> Path:
    """``trace.json`` -> ``trace.rank3.json`` (a name without suffix gets ``.rank3.json``)."""
    p = Path(path)
    suffix = p.suffix or ".json"
    return p.with_name(f"{p.stem if p.suffix else p.name}.rank{rank}{suffix}")


_active: Timeline | None = None


def active() -> Timeline | None:
    """The running timeline, or None (the cheap check every hook makes first)."""
    return _active


def start(path: str | os.PathLike[str], rank: int, size: int) -> Path:
    """Start recording as rank ``rank`` of ``size`` (a running timeline is written and replaced
    first); returns the file this rank will write. ``dlion.start_timeline(path)`` calls it with
    the runtime's rank and size."""
    global _active
    if not str(path):
        raise ValueError("start_timeline needs a file path, e.g. 'trace.json'")
    stop()
    _active = Timeline(path, rank, size)
    return _active.path


def stop() -> Path | None:
    """Stop recording and write this rank's file; returns its path (None if none was running)."""
    global _active
    timeline, _active = _active, None
    return timeline.write() if timeline is not None else None


@contextmanager
def span(name: str, cat: str, **args: Any) -> Iterator[None]:
    """Record the enclosed block as one event when a timeline runs; otherwise nearly free."""
    timeline = _active
    if timeline is None:
        yield
        return
    start_us = timeline.now_us()
    try:
        yield
    finally:
        timeline.add(name, cat, start_us, timeline.now_us(), **args)
