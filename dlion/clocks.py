"""Compute clocks: what :class:`dlion.DynamicBatcher` measures a rank's speed with.

* ``"wall"``: wall time (``time.perf_counter``). It sees everything that slows a rank down: a
  slower CPU, a CPU quota (a cgroup's ``cpu.max``: throttled time is not CPU time, so only wall
  time sees it), co-tenants. Right wherever a rank has its cores to itself or runs under a quota.
* ``"cpu"``: this process's CPU time less what dlion's engine threads used meanwhile (each read
  from the kernel's per-thread clock, nanosecond resolution). For ranks oversubscribing one
  machine's cores, where wall time mostly measures the OS scheduler's choices.
* ``"auto"`` (the default of ``DynamicBatcher``): ``"wall"`` when this process runs under a CPU
  quota or the ranks on this host fit its cores, ``"cpu"`` only when they oversubscribe them.

Every clock reading of a block is clamped at zero: a block never measures negative.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

Clock = Literal["wall", "cpu", "auto"]
CLOCKS: tuple[str, ...] = ("wall", "cpu", "auto")


def _ancestors(levels: int = 4) -> list[int]:
    """The parent, grandparent, ... process ids (Linux /proc)."""
    out, pid = [], os.getpid()
    for _ in range(levels):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
        out.append(pid)
    return out


def _cgroup_roots() -> list[Path]:
    """Where the cgroup file systems can be read: ``/sys/fs/cgroup``, or, where this process
    runs in a mount namespace without them (``ip netns exec`` remounts ``/sys``, as under the
    micro-cloud testbed), the same folder seen through an ancestor's root."""
    roots = [Path("/sys/fs/cgroup")]
    roots += [Path(f"/proc/{pid}/root/sys/fs/cgroup") for pid in _ancestors()]
    return roots


def _cgroup_paths() -> list[Path]:
    """This process's cgroup folders, innermost first (v2 unified and v1 ``cpu`` hierarchies)."""
    out: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for root in _cgroup_roots():
        try:
            if not root.is_dir() or not any(root.iterdir()):
                continue
        except OSError:
            continue
        for line in lines:
            _, controllers, rel = line.split(":", 2)
            if controllers == "":  # cgroup v2 (unified; under unified/ on hybrid systems)
                base = root / "unified" if (root / "unified").is_dir() else root
            elif "cpu" in controllers.split(","):
                base = next(
                    (root / p for p in ("cpu,cpuacct", "cpu") if (root / p).is_dir()),
                    root / "cpu",
                )
            else:
                continue
            path = base / rel.lstrip("/")
            while True:
                out.append(path)
                if path == base or path.parent == path:
                    break
                path = path.parent
        return out  # the first root that shows the cgroup file systems
    return out


def cpu_quota() -> float | None:
    """The CPU quota this process runs under, in cores (``0.3``: 30% of one core), the
    tightest of its cgroup and the cgroups above it; ``None`` when there is none (Linux
    cgroups v1 and v2; ``None`` elsewhere)."""
    best: float | None = None
    for folder in _cgroup_paths():
        quota: float | None = None
        try:
            text = (folder / "cpu.max").read_text().split()  # v2: "max 100000" or "30000 100000"
            if len(text) == 2 and text[0] != "max":
                quota = float(text[0]) / float(text[1])
        except (OSError, ValueError, ZeroDivisionError):
            try:  # v1
                q = int((folder / "cpu.cfs_quota_us").read_text())
                period = int((folder / "cpu.cfs_period_us").read_text())
                if q > 0 and period > 0:
                    quota = q / period
            except (OSError, ValueError):
                pass
        if quota is not None and quota > 0 and (best is None or quota < best):
            best = quota
    return best


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve(clock: str, ranks_on_host: int) -> Literal["wall", "cpu"]:
    """The concrete clock ``clock`` means here: ``"auto"`` becomes ``"cpu"`` only when
    ``ranks_on_host`` ranks oversubscribe the usable cores and no CPU quota applies."""
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r}: use one of {CLOCKS}")
    if clock != "auto":
        return "cpu" if clock == "cpu" else "wall"
    if cpu_quota() is not None:
        return "wall"
    return "cpu" if ranks_on_host > usable_cores() else "wall"


def engine_cpu() -> float:
    """CPU seconds used so far by dlion's engine threads (0 before ``dlion.init``)."""
    from . import runtime

    return runtime._engine_thread_cpu()


def compute_cpu() -> float:
    """This process's CPU time less what dlion's engine threads used: the training's share
    (TF's own threads included), unaffected by the exchange running meanwhile."""
    return time.process_time() - engine_cpu()


CLOCK_FUNCTIONS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "cpu": compute_cpu,
}
