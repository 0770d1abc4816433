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

        Returns its exit status (that of a job which ended by itself meanwhile, too).
        """
        rc = self.poll()
        if rc is None:
            self._signal(signal.SIGTERM)
            rc = self.wait(grace_s)
        if rc is None:
            for pid in [*_descendants(self.pid), self.pid]:  # hydra's proxies run the ranks,
                _kill(pid, signal.SIGKILL)  # each in a session of its own: name every one
            rc = self.wait(10.0)
        if rc is None:  # pragma: no cover - a process that outlives SIGKILL (kernel trouble)
            raise RuntimeError(f"mpiexec (pid {self.pid}) did not end after SIGKILL")
        return rc

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


def _descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (children first), from /proc; empty where there is none."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # it ended meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after it
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo += children.get(child, [])
    return found
