"""python -m dlion.run: run a training under mpiexec and restart it when hosts come and go.

    python -m dlion.run --hosts hosts.txt --max-restarts 3 -- \\
        python examples/train.py --checkpoint-dir ckpt --checkpoint-every 50 --resume
    python -m dlion.run --discover "./list-hosts.sh" --discover-every 10 --min-np 2 -- ...

The host list (a file, or what a discovery command prints) has lines ``host:slots:site``;
every rank gets its host line's site (``DLION_SITE``). When the job fails (a lost or killed
rank) or the host list changes, the job is stopped and started again on the hosts there are
then; the command resumes from its last checkpoint by itself (``--resume`` of
examples/train.py). See docs/elastic.md.

Exit status: 0 when the job finished; the job's last exit status when the restarts ran out;
2 for bad options or a host list that cannot be read at the start; 75 when it gave up waiting
for hosts (fewer than --min-np slots for --wait seconds); 128 + N when stopped by signal N
(SIGINT, SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from .hosts import DiscoveryCommand, DiscoveryError, Host, HostsFile, HostSource
from .job import default_mpiexec, mpiexec_command
from .supervisor import Options, Supervisor


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dlion.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--hosts", metavar="FILE", help="host list file (host:slots:site lines)")
    where.add_argument("--discover", metavar="CMD", help="shell command that prints the host list")
    p.add_argument(
        "--discover-every",
        type=float,
        default=5.0,
        metavar="S",
        help="read the host list again every S seconds while the job runs (default 5)",
    )
    p.add_argument(
        "--discover-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="the discovery command must finish within S seconds (default 10)",
    )
    p.add_argument(
        "--max-restarts", type=int, default=3, metavar="N", help="restarts at most (default 3)"
    )
    p.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        metavar="S",
        help="wait S seconds before the first restart, doubling each time (default 1)",
    )
    p.add_argument(
        "--backoff-max", type=float, default=30.0, metavar="S", help="longest wait (default 30)"
    )
    p.add_argument(
        "--min-np",
        type=int,
        default=1,
        metavar="N",
        help="start only with at least N slots; wait for them up to --wait seconds (default 1)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=300.0,
        metavar="S",
        help="give up after S seconds with fewer than --min-np slots (default 300)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="S",
        help="after SIGTERM, the job has S seconds before SIGKILL (default 10)",
    )
    p.add_argument(
        "--mpiexec",
        default=None,
        metavar="PATH",
        help="the MPI launcher (default: the mpiexec next to this Python)",
    )
    p.add_argument(
        "--mpiexec-args",
        default="",
        metavar="ARGS",
        help='more mpiexec options, one string, e.g. "-launcher ssh -iface eth0"',
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command of every rank")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse the options and supervise the command; the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("give the command of every rank after --")
    mpiexec = args.mpiexec or default_mpiexec()
    if not (os.path.isfile(mpiexec) and os.access(mpiexec, os.X_OK)):
        parser.error(f"mpiexec {mpiexec!r} is not an executable file (--mpiexec PATH)")
    source: HostSource
    try:
        if args.hosts is not None:
            source = HostsFile(args.hosts)
        else:
            source = DiscoveryCommand(args.discover, args.discover_timeout)
        options = Options(
            command=tuple(command),
            mpiexec=mpiexec,
            max_restarts=args.max_restarts,
            backoff_s=args.backoff,
            backoff_max_s=args.backoff_max,
            min_np=args.min_np,
            wait_s=args.wait,
            discover_every_s=args.discover_every,
            grace_s=args.grace,
            mpiexec_args=tuple(shlex.split(args.mpiexec_args)),
        )
        mpiexec_command(mpiexec, [Host("localhost", 1, "-")], options.command)  # fits mpiexec?
        source.hosts()  # a host list that cannot be read at the start is an error at once
    except (ValueError, DiscoveryError) as e:  # HostsError is a ValueError
        parser.error(str(e))
    return Supervisor(source, options).run()


if __name__ == "__main__":
    sys.exit(main())
