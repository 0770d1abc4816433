"""Host lists with sites for ``python -m dlion.run``: parsing, formatting and discovery.

A host list is text, one host a line::

    # host:slots:site
    node1:4:edge-a
    node2:2:edge-b

``slots`` is how many ranks the host runs (an int > 0), ``site`` the micro-cloud its ranks
belong to (``DLION_SITE``). Blank lines and everything after ``#`` are ignored. A host may appear
on several lines with different sites (one machine emulating several sites), never twice with
the same site: give it one line with the sum of the slots.

The list comes from a file (:class:`HostsFile`, re-read each time) or from a discovery command
(:class:`DiscoveryCommand`, run through the shell with a timeout) that prints such lines, the
role of ``horovodrun --host-discovery-script``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "DiscoveryCommand",
    "DiscoveryError",
    "Host",
    "HostSource",
    "HostsError",
    "HostsFile",
    "describe",
    "format_hosts",
    "parse_hosts",
    "same_hosts",
    "total_slots",
]

# Host names and IPv4 addresses (no IPv6 literals: ':' separates the fields); sites are names.
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})\Z")
_SITE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


class HostsError(ValueError):
    """A host list could not be parsed; the message names the source and the line."""


class DiscoveryError(RuntimeError):
    """The discovery command failed, timed out or printed a bad host list."""


@dataclass(frozen=True)
class Host:
    """One line of a host list: ``slots`` ranks on ``name``, all of site ``site``."""

    name: str
    slots: int
    site: str

    def line(self) -> str:
        """This host as a line of a host list (``name:slots:site``)."""
        return f"{self.name}:{self.slots}:{self.site}"


class HostSource(Protocol):
    """Where the hosts come from: ``hosts()`` reads them now; ``what`` names the source."""

    what: str

    def hosts(self) -> tuple[Host, ...]:
        """The hosts there are now (raises ``HostsError`` or ``DiscoveryError``)."""
        ...


def parse_hosts(text: str, source: str = "host list") -> tuple[Host, ...]:
    """The hosts of ``text``, in order; ``HostsError`` naming ``source`` and the line number of
    the first bad line (a missing field, slots <= 0, a bad name, a host repeated on one site)."""
    hosts: list[Host] = []
    seen: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        host = _parse_line(line, f"{source} line {number}")
        first = seen.setdefault((host.name, host.site), number)
        if first != number:
            raise HostsError(
                f"{source} line {number}: host {host.name!r} of site {host.site!r} is already on "
                f"line {first}; give it one line with the sum of the slots"
            )
        hosts.append(host)
    return tuple(hosts)


def _parse_line(line: str, where: str) -> Host:
    fields = line.split(":")
    if len(fields) != 3:
        raise HostsError(f"{where}: {line!r:.80} is not 'host:slots:site' ({len(fields)} fields)")
    name, slots_text, site = (f.strip() for f in fields)
    if not _HOST.match(name):
        raise HostsError(
            f"{where}: bad host name {name!r:.80} (letters, digits, '.', '-', '_'; "
            "no IPv6 literals)"
        )
    try:
        slots = int(slots_text)
    except ValueError:
        raise HostsError(f"{where}: slots must be an int > 0, got {slots_text!r:.40}") from None
    if slots <= 0:
        raise HostsError(f"{where}: slots must be an int > 0, got {slots}")
    if not _SITE.match(site):
        raise HostsError(f"{where}: bad site {site!r:.80} (1 to 64 letters, digits, '.', '-', '_')")
    return Host(name, slots, site)


def format_hosts(hosts: Iterable[Host]) -> str:
    """``hosts`` as the text of a host list (parsed back by :func:`parse_hosts`)."""
    return "".join(h.line() + "\n" for h in hosts)


def describe(hosts: Sequence[Host]) -> str:
    """``hosts`` on one log line: ``node1:4:A,node2:2:B`` (``(none)`` when empty)."""
    return ",".join(h.line() for h in hosts) or "(none)"


def total_slots(hosts: Iterable[Host]) -> int:
    """The number of ranks ``hosts`` run."""
    return sum(h.slots for h in hosts)


def same_hosts(a: Iterable[Host], b: Iterable[Host]) -> bool:
    """Whether two host lists offer the same hosts, slots and sites (in any order)."""
    return sorted(map(Host.line, a)) == sorted(map(Host.line, b))


class HostsFile:
    """A host list file, read afresh on every call (edit it to add or remove hosts)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.what = f"hosts file {self.path}"

    def hosts(self) -> tuple[Host, ...]:
        """The hosts the file lists now."""
        try:
            text = self.path.read_text()
        except OSError as e:
            raise HostsError(f"{self.what}: cannot read it ({e.strerror or e})") from None
        return parse_hosts(text, str(self.path))


class DiscoveryCommand:
    """A command (run by the shell) that prints a host list; it must end within ``timeout_s``
    with exit status 0."""

    def __init__(self, command: str, timeout_s: float = 10.0) -> None:
        if not command.strip():
            raise DiscoveryError("the discovery command is empty")
        if not timeout_s > 0:
            raise DiscoveryError(f"the discovery timeout must be > 0 s, got {timeout_s}")
        self.command = command
        self.timeout_s = timeout_s
        self.what = f"discovery command {command!r:.120}"

    def hosts(self) -> tuple[Host, ...]:
        """Run the command once and parse what it printed."""
        try:
            proc = subprocess.Popen(
                self.command,
                shell=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,  # its own process group: a timeout ends all of it
            )
        except OSError as e:
            raise DiscoveryError(f"{self.what} could not be started: {e}") from None
        try:
            out, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise DiscoveryError(
                f"{self.what} did not finish within {self.timeout_s:g} s (--discover-timeout)"
            ) from None
        if proc.returncode != 0:
            tail = err.strip().splitlines()[-3:]
            said = f": {' / '.join(tail)[:300]}" if tail else " (no output on stderr)"
            raise DiscoveryError(f"{self.what} failed with exit status {proc.returncode}{said}")
        try:
            return parse_hosts(out, f"output of {self.what}")
        except HostsError as e:
            raise DiscoveryError(str(e)) from None


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc``'s process group (the shell and what it started) and reap the shell."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignored
        pass
