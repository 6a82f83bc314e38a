"""The `stripesync` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stripesync import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stripesync",
        description="A live, queryable copy of a Stripe account in PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"stripesync {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0
