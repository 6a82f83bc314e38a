"""`stripesync emulator`: serve the Stripe emulator."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("emulator", help="serve the built-in Stripe emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=12111)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("stripesync emulator: not built yet")
