"""The supervision loop of ``python -m dlion.run``: start, watch, stop and restart the job.

1. Read the hosts (the file or the discovery command). Below ``min_np`` slots, read them again
   every ``discover_every_s`` until there are enough, or give up after ``wait_s``.
2. Start ``mpiexec`` on them (:mod:`dlion.run.job`) and watch it: every ``poll_s`` whether it
   ended, every ``discover_every_s`` whether the hosts changed (a failed discovery is logged and
   the job goes on; a change that leaves fewer than ``min_np`` slots is logged and the job goes
   on until it fails by itself).
3. The job ended with 0: done, exit 0 (also when the hosts changed at the very end: a job whose
   ranks have all ended is left to end by itself, see :meth:`Job.stop`). It ended
   otherwise (a lost rank: the other ranks raise ``RankLostError`` and exit non-zero; a killed
   rank ends hydra's job), or the hosts changed (stop: SIGTERM to its process group, SIGKILL
   after ``grace_s``): restart from step 1, after a backoff (``backoff_s``, doubling per
   restart, at most ``backoff_max_s``), at most ``max_restarts`` times; then give up with the
   job's last exit status. The training command resumes from its last checkpoint by itself
   (``--resume``; ``dlion.checkpoint.load(..., elastic="average")`` at another size).
4. SIGINT or SIGTERM to the supervisor stops the job the same way and exits 128 + the signal.

Every event is one line on stderr starting with ``dlion.run:``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType

from .hosts import DiscoveryError, Host, HostsError, HostSource, describe, same_hosts, total_slots
from .job import Job, mpiexec_command

__all__ = ["EXIT_GAVE_UP", "Options", "Supervisor"]

#: Exit status when the supervisor gave up before the job could run (no hosts, too few slots).
EXIT_GAVE_UP = 75  # EX_TEMPFAIL (sysexits.h): too few hosts now, try again later


@dataclass(frozen=True)
class Options:
    """Settings of :class:`Supervisor` (``python -m dlion.run --help`` explains each)."""

    command: tuple[str, ...]
    mpiexec: str
    max_restarts: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    min_np: int = 1
    wait_s: float = 300.0
    discover_every_s: float = 5.0
    grace_s: float = 10.0
    poll_s: float = 0.2
    mpiexec_args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.min_np < 1:
            raise ValueError(f"min_np must be >= 1, got {self.min_np}")
        for name in ("backoff_s", "backoff_max_s", "wait_s", "grace_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        for name in ("discover_every_s", "poll_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


class _GaveUp(Exception):
    """The supervisor cannot go on (the message says why)."""


class Supervisor:
    """Runs ``options.command`` under ``mpiexec`` on the hosts of ``source`` until it succeeds,
    restarting it as the module docstring says. :meth:`run` returns the exit status."""

    def __init__(
        self, source: HostSource, options: Options, log: Callable[[str], None] | None = None
    ) -> None:
        self.source = source
        self.options = options
        self._log = log or _stderr
        self._signal: int | None = None  # set by a stop request (a plain attribute: a signal
        # handler must not take a lock that the interrupted main thread may hold)
        self._last_error = ""

    def log(self, message: str) -> None:
        """One event line."""
        self._log(f"dlion.run: {message}")

    def request_stop(self, signum: int) -> None:
        """Stop the job and end :meth:`run` (what SIGINT/SIGTERM do); safe from a handler."""
        self._signal = signum

    def run(self) -> int:
        """Supervise until the job succeeds, restarts run out, or a stop; the exit status."""
        previous = _install_handlers(self.request_stop)
        try:
            return self._loop()
        finally:
            _restore_handlers(previous)

    def _loop(self) -> int:
        opts, restarts = self.options, 0
        while True:
            try:
                hosts = self._wait_for_hosts()
            except _GaveUp as e:
                self.log(f"gave up because {e}")
                return EXIT_GAVE_UP
            if hosts is None:
                return self._stopped()
            rc, changed = self._run_once(hosts)
            if rc == 0:
                self.log("the job finished (rc=0)")
                return 0
            if self._signal is not None:
                return self._stopped()
            if restarts >= opts.max_restarts:
                why = "the hosts changed" if changed else f"the job failed (rc={rc})"
                self.log(
                    f"gave up because {why} and all {opts.max_restarts} restarts "
                    f"(--max-restarts) are used; exit status {_exit_status(rc)}"
                )
                return _exit_status(rc)
            restarts += 1
            delay = min(opts.backoff_s * 2 ** (restarts - 1), opts.backoff_max_s)
            self.log(
                f"restarting in {delay:g} s (attempt {restarts} of {opts.max_restarts}) from the "
                "last checkpoint, on the hosts present then"
            )
            if self._sleep(delay):
                return self._stopped()

    def _run_once(self, hosts: tuple[Host, ...]) -> tuple[int, bool]:
        """Run one job on ``hosts``; (its exit status, whether the hosts changed)."""
        opts = self.options
        argv = mpiexec_command(opts.mpiexec, hosts, opts.command, opts.mpiexec_args)
        sites = ",".join(h.site for h in hosts for _ in range(h.slots))
        job = Job(argv, opts.env)
        self.log(
            f"started {total_slots(hosts)} ranks on {describe(hosts)} (sites {sites}; "
            f"mpiexec pid {job.pid})"
        )
        next_look, seen = time.monotonic() + opts.discover_every_s, hosts
        while True:
            rc = job.wait(opts.poll_s)
            if rc is not None:
                job.stop(opts.grace_s)  # anything left behind in its process group
                self.log(f"the job ended rc={_rc_text(rc)} after {job.seconds():.1f} s")
                return rc, False
            if self._signal is not None:
                name = signal.Signals(self._signal or signal.SIGTERM).name
                self.log(f"{name} received: stopping the job (grace {opts.grace_s:g} s)")
                rc = job.stop(opts.grace_s)
                self.log(f"the job ended rc={_rc_text(rc)} after {job.seconds():.1f} s")
                return rc, False
            if time.monotonic() < next_look:
                continue
            now = self._look()
            next_look = time.monotonic() + opts.discover_every_s
            if now is None or same_hosts(now, seen):
                continue
            before, seen = seen, now
            change = f"discovery changed from {describe(before)} to {describe(now)}"
            if same_hosts(now, hosts):
                self.log(f"{change}: the job's own hosts again; it goes on")
                continue
            if total_slots(now) < opts.min_np:
                self.log(
                    f"{change}: {total_slots(now)} slots, below --min-np {opts.min_np}; "
                    "the job goes on"
                )
                continue
            if job.poll() is not None:
                continue  # it ended meanwhile: handled above, with its own exit status
            self.log(f"{change}: stopping the job (grace {opts.grace_s:g} s)")
            rc = job.stop(opts.grace_s)
            self.log(f"the job ended rc={_rc_text(rc)} after {job.seconds():.1f} s")
            return rc, True

    def _look(self) -> tuple[Host, ...] | None:
        """The hosts now, or None (logged once per distinct error) if they cannot be read."""
        try:
            hosts = self.source.hosts()
        except (HostsError, DiscoveryError) as e:
            if str(e) != self._last_error:
                self.log(f"cannot read the hosts: {e}")
            self._last_error = str(e)
            return None
        if self._last_error:
            self.log(f"the hosts can be read again ({self.source.what})")
        self._last_error = ""
        return hosts

    def _wait_for_hosts(self) -> tuple[Host, ...] | None:
        """Hosts with at least ``min_np`` slots; None on a stop; ``_GaveUp`` after ``wait_s``."""
        opts = self.options
        deadline = time.monotonic() + opts.wait_s
        told = False
        while True:
            hosts = self._look()
            slots = 0 if hosts is None else total_slots(hosts)
            if hosts is not None and slots >= opts.min_np:
                return hosts
            left = deadline - time.monotonic()
            if left <= 0:
                have = "no readable host list" if hosts is None else f"{slots} slots"
                raise _GaveUp(
                    f"{self.source.what} gave {have} for {opts.wait_s:g} s (--wait), fewer than "
                    f"--min-np {opts.min_np}"
                )
            if not told and hosts is not None:
                self.log(
                    f"{slots} slots ({describe(hosts)}), below --min-np {opts.min_np}: waiting "
                    f"up to {left:.0f} s for more"
                )
                told = True
            if self._sleep(min(opts.discover_every_s, left)):
                return None

    def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when a stop is requested."""
        deadline = time.monotonic() + seconds
        while self._signal is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.05))
        return True

    def _stopped(self) -> int:
        signum = self._signal or signal.SIGTERM
        self.log(f"stopped by {signal.Signals(signum).name}")
        return 128 + signum


def _exit_status(rc: int) -> int:
    """A job's status as this process's exit status (killed by signal N: 128 + N)."""
    return 128 - rc if rc < 0 else rc


def _rc_text(rc: int) -> str:
    """An exit status for the log: ``1``, or ``-9 (SIGKILL)`` for a job ended by a signal."""
    if rc >= 0:
        return str(rc)
    try:
        return f"{rc} ({signal.Signals(-rc).name})"
    except ValueError:
        return str(rc)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


_Handler = Callable[[int, FrameType | None], object] | int | None


def _install_handlers(stop: Callable[[int], None]) -> dict[int, _Handler]:
    """SIGINT and SIGTERM call ``stop`` (only in the main thread, where Python allows it)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, _Handler] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda signum, _frame: stop(signum))
    return previous


def _restore_handlers(previous: Mapping[int, _Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
