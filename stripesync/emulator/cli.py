"""`stripesync emulator`: serve the Stripe emulator."""

from __future__ import annotations

import argparse
import sys

from stripesync.emulator.controls import Config


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "emulator",
        help="serve the built-in Stripe emulator",
        description="A stateful Stripe API stand-in the official SDKs can use unchanged. "
        "Controls: /_emulator/ (config, faults, clock, load, generate, reset).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=12111, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    p.add_argument("--latency-jitter-ms", type=float, default=0.0, help="± random jitter")
    p.add_argument(
        "--rate-limit", type=float, default=0.0, help="requests/s per key (429 above); 0 = off"
    )
    p.add_argument("--api-version", default=None, help="the account's default API version")
    p.add_argument("--seed", type=int, default=None, help="seed for ids and generated data")
    p.add_argument(
        "--seed-customers",
        type=int,
        default=0,
        metavar="N",
        help="fill the account with N customers and linked objects at start",
    )
    p.add_argument(
        "--no-webhooks",
        action="store_true",
        help="do not deliver events to webhook endpoints (POST /_emulator/config "
        '{"webhooks": true} turns delivery back on)',
    )
    p.add_argument("--log-level", default="warning")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from stripesync.emulator.engine import Emulator
    from stripesync.emulator.server import serve_forever

    config = Config(
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        rate_limit=args.rate_limit,
        default_api_version=args.api_version,
        webhooks=not args.no_webhooks,
    )
    em = Emulator(config, seed=args.seed)
    if args.seed_customers:
        from stripesync.emulator.generator import generate

        generate(em, customers=args.seed_customers, seed=args.seed or 0)

    def ready(url: str) -> None:
        print(f"listening on {url}", flush=True)

    try:
        serve_forever(em, args.host, args.port, ready=ready, log_level=args.log_level)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"stripesync emulator: {exc}", file=sys.stderr)
        return 1
    return 0
