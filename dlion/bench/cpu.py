"""CPU time of this process's threads, by thread name (Linux ``/proc``), to show how much the
engines' progress threads (``dlion-engine``, ``dlion-peers``) take from the training."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_cpu_seconds() -> dict[str, float]:
    """User + system CPU seconds of every thread of this process, summed by thread name;
    empty where ``/proc`` is not available."""
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        # fields[11], fields[12]: utime, stime (fields 14, 15 of proc(5), counted after comm)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return out


def split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per group between two readings: the two engines and everything else."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    engine = delta.pop("dlion-engine", 0.0)
    peers = delta.pop("dlion-peers", 0.0)
    return {"dlion-engine": engine, "dlion-peers": peers, "training": sum(delta.values())}
