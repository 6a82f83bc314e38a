"""The `stripesync` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from stripesync import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stripesync",
        description="A live, queryable copy of a Stripe account in PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"stripesync {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _commands():
        register(subparsers)
    return parser


def _commands() -> list[Callable[[argparse._SubParsersAction], None]]:  # type: ignore[type-arg]
    """Each layer that has a command adds its own sub-parser; `set_defaults(run=...)`
    names the function that runs it (it returns the exit code)."""
    from stripesync import app
    from stripesync.emulator import cli as emulator_cli
    from stripesync.proxy import cli as proxy_cli

    return [app.register, app.register_demo, emulator_cli.register, proxy_cli.register]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.run(args))
