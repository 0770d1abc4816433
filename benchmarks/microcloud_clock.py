"""The training clock of a run that restarts (the micro-cloud benchmark's dynamic scenarios).

Pure: no dlion, no MPI. Rank 0 of every attempt (one ``mpiexec`` job started by ``python -m
dlion.run``) appends events to a journal, one JSON object per line, each with its ``attempt``
(0, 1, ...) and ``wall`` (``time.time()``: one machine, so every process reads the same clock):

``{"ev": "eval", "wall": start, "end": end, "step": s, "accuracy": a}``
    an evaluation of the test accuracy (its duration is not training time);
``{"ev": "train", "wall": w, "step": s, "ranks": n, "sites": [...], "resumed_from": s0,
"saved_by": m}``
    training (re)starts: after the start-up, the checkpoint restore, the first evaluation and
    the warm-up step; ``resumed_from`` is the step of the checkpoint loaded (None: none);
``{"ev": "progress", "wall": w, "step": s}``
    every few steps; ``{"ev": "save", "wall": start, "end": end, "step": s}`` a checkpoint;
``{"ev": "end", "wall": w, "step": s}``
    the run reached its budget.

The clock (:func:`clock`) is the wall time since the *first* attempt's ``train`` event minus
the time spent evaluating: the same clock as a run without restarts (whose start-up and warm-up
are not timed either), except that everything after the first start counts, the steps redone
after a restart, the stop, the supervisor's backoff, the new job's start-up (Python,
TensorFlow, ``dlion.init``), the checkpoint restore and the warm-up step: the honest cost of
the event. :func:`timeline` turns a journal and the host-list changes the benchmark made into
the run's curve, restarts and recoveries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Event = dict[str, Any]


def read(path: str | Path) -> list[Event]:
    """The journal's events in order; a last line still being written is left out."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the tail of a line being appended
    return out


def append(path: str | Path, event: Event) -> None:
    """Append one event (one line, flushed)."""
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")
        f.flush()


def attempts(journal: list[Event]) -> int:
    """The number of attempts that have written to the journal."""
    return 1 + max((int(e["attempt"]) for e in journal), default=-1)


def start_wall(journal: list[Event]) -> float | None:
    """The wall time of the first ``train`` event (the clock's zero), None before it."""
    return next((float(e["wall"]) for e in journal if e["ev"] == "train"), None)


def excluded(journal: list[Event], wall: float) -> float:
    """Seconds of evaluation after the clock's zero and before ``wall``."""
    zero = start_wall(journal)
    if zero is None:
        return 0.0
    spans = sorted(
        (max(float(e["wall"]), zero), min(float(e["end"]), wall))
        for e in journal
        if e["ev"] == "eval"
    )
    total, upto = 0.0, zero
    for lo, hi in spans:  # overlaps counted once
        lo = max(lo, upto)
        if hi > lo:
            total, upto = total + hi - lo, hi
    return total


def clock(journal: list[Event], wall: float) -> float:
    """Training seconds at ``wall``: since the first ``train`` event, evaluation excluded
    (0 before it)."""
    zero = start_wall(journal)
    if zero is None or wall <= zero:
        return 0.0
    return wall - zero - excluded(journal, wall)


def _by_attempt(journal: list[Event]) -> list[list[Event]]:
    out: list[list[Event]] = [[] for _ in range(attempts(journal))]
    for e in journal:
        out[int(e["attempt"])].append(e)
    return out


def _train_event(events: list[Event]) -> Event | None:
    return next((e for e in events if e["ev"] == "train"), None)


def _last_step(events: list[Event]) -> int:
    return max((int(e["step"]) for e in events if e["ev"] != "save"), default=0)


def timeline(journal: list[Event], changes: list[Event] | None = None) -> dict[str, Any]:
    """The run a journal describes. ``changes``: the host-list edits of the benchmark, each
    ``{"wall": w, "what": "B leaves", "hosts": "..."}``, in order.

    Returns ``curve`` (``t`` on :func:`clock`, ``step``, ``accuracy``, ``attempt``; without
    the evaluations whose training a restart undid: those after the checkpoint the next attempt
    resumed from, listed under ``lost``), ``steps`` and ``train_s`` at the end, ``restarts``,
    ``recoveries`` (per restart: its cause, the clock at the event, ``recovery_s`` from the event
    to training again on the clock, the same in wall seconds, the steps it stopped at and
    resumed from and the layout after it), ``save_s`` (time spent checkpointing) and
    ``attempts`` (their layouts)."""
    changes = list(changes or [])
    parts = _by_attempt(journal)
    trains = [_train_event(p) for p in parts]
    curve, lost, recoveries, layouts = [], [], [], []
    for k, events in enumerate(parts):
        nxt = trains[k + 1] if k + 1 < len(trains) else None
        keep_upto = None if nxt is None else nxt.get("resumed_from")
        for e in events:
            if e["ev"] != "eval":
                continue
            point = {
                "t": clock(journal, float(e["wall"])),
                "step": int(e["step"]),
                "accuracy": float(e["accuracy"]),
                "attempt": k,
            }
            undone = nxt is not None and int(e["step"]) > int(keep_upto or 0)
            (lost if undone else curve).append(point)
        tr = trains[k]
        if tr is not None:
            layouts.append({"attempt": k, "ranks": tr.get("ranks"), "sites": tr.get("sites")})
        if k == 0 or tr is None:
            continue
        prev = parts[k - 1]
        prev_train = trains[k - 1]
        after = float(prev_train["wall"]) if prev_train is not None else float("-inf")
        cause = [c for c in changes if after < float(c["wall"]) <= float(tr["wall"])]
        if cause:
            what, event_wall = str(cause[-1]["what"]), float(cause[-1]["wall"])
        else:  # not the benchmark's doing: a failure, at the last sign of life
            what = "failure"
            event_wall = max((float(e.get("end", e["wall"])) for e in prev), default=after)
        recoveries.append(
            {
                "cause": what,
                "at_s": clock(journal, event_wall),
                "recovery_s": clock(journal, float(tr["wall"])) - clock(journal, event_wall),
                "recovery_wall_s": float(tr["wall"]) - event_wall,
                "stopped_at_step": _last_step(prev),
                "resumed_from": tr.get("resumed_from"),
                "ranks": tr.get("ranks"),
                "sites": tr.get("sites"),
            }
        )
    curve.sort(key=lambda p: (p["t"], p["step"]))
    ends = [e for e in journal if e["ev"] == "end"]
    last_wall = max((float(e.get("end", e["wall"])) for e in journal), default=0.0)
    return {
        "curve": curve,
        "lost": lost,
        "steps": int(ends[-1]["step"]) if ends else _last_step(journal),
        "train_s": clock(journal, float(ends[-1]["wall"]) if ends else last_wall),
        "finished": bool(ends),
        "restarts": max(0, len(parts) - 1),
        "recoveries": recoveries,
        "save_s": sum(float(e["end"]) - float(e["wall"]) for e in journal if e["ev"] == "save"),
        "attempts": layouts,
    }


def accuracy_at_step(curve: list[dict[str, Any]], step: float) -> float | None:
    """The accuracy of ``curve`` at ``step``, linear between the evaluations around it (the
    last one's beyond it, the first one's before it); None for an empty curve."""
    points = sorted((float(p["step"]), float(p["accuracy"])) for p in curve)
    if not points:
        return None
    exact = [a for s, a in points if s == step]
    if exact:
        return exact[0]
    if step <= points[0][0]:
        return points[0][1]
    for (s0, a0), (s1, a1) in zip(points, points[1:]):
        if s0 <= step <= s1:
            return a0 if s1 == s0 else a0 + (a1 - a0) * (step - s0) / (s1 - s0)
    return points[-1][1]
