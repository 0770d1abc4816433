"""``python -m dlion.run``: a supervisor over the MPI launcher for elastic runs.

It starts ``mpiexec`` on a host list with sites (:mod:`dlion.run.hosts`), watches the job and
the host list, and restarts the job from its last checkpoint when a rank is lost or the hosts
change (:mod:`dlion.run.supervisor`; the ``mpiexec`` side is :mod:`dlion.run.job`). See
docs/elastic.md.
"""

from __future__ import annotations

from .hosts import DiscoveryCommand, DiscoveryError, Host, HostsError, HostsFile, parse_hosts
from .supervisor import EXIT_GAVE_UP, Options, Supervisor

__all__ = [
    "EXIT_GAVE_UP",
    "DiscoveryCommand",
    "DiscoveryError",
    "Host",
    "HostsError",
    "HostsFile",
    "Options",
    "Supervisor",
    "parse_hosts",
]
