"""One MPI job of ``python -m dlion.run``: the ``mpiexec`` command line, start, wait and stop.

The command is MPICH hydra's MPMD form, one section per host line, so that every rank gets the
site of its host line in ``DLION_SITE`` (the ``site`` option of :class:`dlion.Config`)::

    mpiexec -hosts node1:2,node2:2 -n 2 -env DLION_SITE A python train.py ... \\
                                   : -n 2 -env DLION_SITE B python train.py ...

Hydra fills the hosts in order, slot by slot, and numbers the ranks section by section, so the
ranks of section i run on host i. ``mpiexec`` runs in a session (process group) of its own:
:meth:`Job.stop` sends it SIGTERM, which hydra forwards to every rank, and after a grace period
SIGKILLs it and every process under it on this machine (hydra's proxies and the ranks, each in a
session of its own); on other hosts, hydra's proxies end with their ssh connection.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config import env_var
from .hosts import Host

__all__ = ["Job", "default_mpiexec", "mpiexec_command"]


def default_mpiexec() -> str:
    """The ``mpiexec`` next to this Python (the ``mpich`` wheel's hydra in a virtualenv)."""
    return str(Path(sys.executable).parent / "mpiexec")


def mpiexec_command(
    mpiexec: str,
    hosts: Sequence[Host],
    command: Sequence[str],
    mpiexec_args: Sequence[str] = (),
) -> list[str]:
    """The ``mpiexec`` command line running ``command`` on every slot of ``hosts``.

    ``ValueError`` when there are no hosts, no command, or the command has an argument ``:``
    (hydra would read it as the start of another section).
    """
    if not hosts:
        raise ValueError("no hosts to run on")
    if not command:
        raise ValueError("no command to run (give it after --)")
    if ":" in command:
        raise ValueError(
            f"the command has an argument ':' (argument {list(command).index(':') + 1}), which "
            "mpiexec reads as the start of another program; quote it differently"
        )
    site_var = env_var("site")
    cmd = [mpiexec, *mpiexec_args, "-hosts", ",".join(f"{h.name}:{h.slots}" for h in hosts)]
    for i, h in enumerate(hosts):
        cmd += [":"] if i else []
        cmd += ["-n", str(h.slots), "-env", site_var, h.site, *command]
    return cmd


class Job:
    """A running ``mpiexec`` (in its own process group); every wait has a timeout."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.started = time.monotonic()
        self._proc = subprocess.Popen(
            self.argv,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self._proc.pid

    def poll(self) -> int | None:
        """The exit status (``-N``: killed by signal N) once the job ended, else None."""
        return self._proc.poll()

    def seconds(self) -> float:
        """How long the job has run."""
        return time.monotonic() - self.started

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for the job to end; its exit status, or None."""
        try:
            return self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float) -> int:
        """End the job: SIGTERM to ``mpiexec`` (hydra forwards it to every rank), then SIGKILL
        to ``mpiexec`` and every process under it on this machine after ``grace_s`` seconds.

        Returns its exit status (that of a job which ended by itself meanwhile, too). When every
        rank has ended already (only hydra's teardown is left), it first waits up to
        ``min(grace_s, 2)`` seconds for ``mpiexec`` to end by itself, so that a job that has
        just succeeded keeps its exit status 0 (a SIGTERM during hydra's teardown ends it with
        255).
        """
        rc = self.poll()
        if rc is None and self.ranks_ended():
            rc = self.wait(min(grace_s, 2.0))
        if rc is None:
            self._signal(signal.SIGTERM)
            rc = self.wait(grace_s)
        if rc is None:
            for pid in [*_descendants(_processes(), self.pid), self.pid]:  # each rank and proxy
                _kill(pid, signal.SIGKILL)  # runs in a session of its own: name every one
            rc = self.wait(10.0)
        if rc is None:  # pragma: no cover - a process that outlives SIGKILL (kernel trouble)
            raise RuntimeError(f"mpiexec (pid {self.pid}) did not end after SIGKILL")
        return rc

    def ranks_ended(self) -> bool:
        """Whether every rank has ended: ``mpiexec``'s children on this machine are all hydra
        proxies and none of them has a live child. False when unknown (a rank on another host:
        ``mpiexec`` then has an ssh child; or no /proc)."""
        table = _processes()
        proxies = [p for p, (ppid, _, _) in table.items() if ppid == self.pid]
        if not proxies or any(table[p][2] != _PROXY for p in proxies):
            return False
        return not any(ppid in proxies and state != "Z" for ppid, state, _ in table.values())

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


_PROXY = "hydra_pmi_proxy"  # its name in /proc/PID/stat (at most 15 characters)


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, name) of every process, from /proc; empty where there is none."""
    table: dict[int, tuple[int, str, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # it ended meanwhile
        # pid (name) state ppid ...: the name may hold spaces and parentheses
        name = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
        state, ppid = stat[stat.rindex(b")") + 2 :].split()[:2]
        table[int(entry)] = (int(ppid), state.decode(), name)
    return table


def _descendants(table: dict[int, tuple[int, str, str]], pid: int) -> list[int]:
    """The processes under ``pid`` in ``table`` (children first)."""
    children: dict[int, list[int]] = {}
    for child, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo += children.get(child, [])
    return found
