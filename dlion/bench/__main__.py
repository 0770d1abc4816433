"""python -m dlion.bench {compress,exchange,sites,train} [--json] ... (mpiexec for most)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlion.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from . import compress, exchange, sites, train

    compress.add_arguments(sub.add_parser("compress", help=compress.__doc__.splitlines()[0]))
    exchange.add_arguments(sub.add_parser("exchange", help=exchange.__doc__.splitlines()[0]))
    sites.add_arguments(sub.add_parser("sites", help=sites.__doc__.splitlines()[0]))
    train.add_arguments(sub.add_parser("train", help=train.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    commands = {
        "compress": compress.run,
        "exchange": exchange.run,
        "sites": sites.run,
        "train": train.run,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
