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
    from stripesync import settings

    for sub in subparsers.choices.values():
        if "_settings" in sub._defaults:  # a command configured through settings
            settings.add_config_option(sub)
            settings.add(sub, "log_format", "log_level")
    return parser


def _commands() -> list[Callable[[argparse._SubParsersAction], None]]:  # type: ignore[type-arg]
    """Each layer that has a command adds its own sub-parser; `set_defaults(run=...)`
    names the function that runs it (it returns the exit code)."""
    from stripesync import app, doctor
    from stripesync.emulator import cli as emulator_cli
    from stripesync.proxy import cli as proxy_cli

    return [
        app.register,
        app.register_demo,
        app.register_db,
        doctor.register,
        emulator_cli.register,
        proxy_cli.register,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    from stripesync import settings
    from stripesync.obs.logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if hasattr(args, "_settings"):
        try:
            args.resolved_settings = settings.resolve(args)
        except settings.ConfigError as e:
            print(f"stripesync: {e}", file=sys.stderr)
            return 2
        setup_logging(args.log_format, args.log_level)
    return int(args.run(args))
