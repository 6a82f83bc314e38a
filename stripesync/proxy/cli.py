"""`stripesync proxy`: the PostgreSQL wire-protocol proxy in front of the database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from stripesync.db.url import check_database_url
from stripesync.obs.logs import FORMATS, LEVELS, setup_logging
from stripesync.proxy.server import DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT, ProxyServer
from stripesync.proxy.upstream import UpstreamError
from stripesync.proxy.workers import (
    ProxyWorkers,
    WorkerError,
    WorkerSettings,
    forward_proxy_writes,
    worker_count,
)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (the default host)."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port in {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port in {value!r}")
    return host or DEFAULT_LISTEN_HOST, port


def parse_workers(value: str) -> int:
    """A positive number of proxy processes (``--workers``)."""
    try:
        return worker_count(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_worker(value: str) -> tuple[int, int]:
    index, _, count = value.partition("/")
    return int(index), int(count)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--proxy-listen",
        type=parse_listen,
        default=(DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT),
        metavar="HOST:PORT",
        help=f"where clients connect (default {DEFAULT_LISTEN_HOST}:{DEFAULT_LISTEN_PORT};"
        " port 0 picks a free one)",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="the upstream PostgreSQL (env DATABASE_URL): its address and sslmode; each "
        "client logs in with its own credentials",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("STRIPE_API_KEY"),
        help="Stripe key (env STRIPE_API_KEY): with it, writes to synced tables go to Stripe "
        "first; without it they are refused",
    )
    p.add_argument(
        "--api-base",
        default=os.environ.get("STRIPE_API_BASE"),
        help="Stripe API address (env STRIPE_API_BASE)",
    )
    p.add_argument("--max-rps", type=float, default=None, help="requests per second to Stripe")
    p.add_argument("--schema", default="stripe", help="schema of the synced tables")
    p.add_argument("--tls-cert", default=None, help="certificate (PEM) offered to clients")
    p.add_argument("--tls-key", default=None, help="its private key (PEM)")
    p.add_argument(
        "--workers",
        type=parse_workers,
        default=1,
        help="proxy processes sharing the port, one core each at most (default 1)",
    )
    p.add_argument("--log-format", choices=FORMATS, default="text")
    p.add_argument("--log-level", choices=LEVELS, default="warning")
    # set by ProxyWorkers for the processes it starts
    p.add_argument("--worker", type=_parse_worker, default=None, help=argparse.SUPPRESS)
    p.add_argument("--peer-dir", default=None, help=argparse.SUPPRESS)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "proxy",
        help="serve the PostgreSQL wire-protocol proxy",
        description="A PostgreSQL proxy in front of --database-url: clients connect to it "
        "as to PostgreSQL; everything that is not a write to a synced table passes through "
        "unchanged.",
    )
    add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.database_url:
        print("stripesync proxy: --database-url (or DATABASE_URL) is required", file=sys.stderr)
        return 2
    try:
        check_database_url(args.database_url)
    except ValueError as exc:
        print(f"stripesync proxy: {exc}", file=sys.stderr)
        return 2
    if (args.tls_cert is None) != (args.tls_key is None):
        print("stripesync proxy: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    setup_logging(args.log_format, args.log_level)
    host, port = args.proxy_listen
    worker, workers = args.worker or (0, args.workers)
    peer_dir = Path(args.peer_dir) if args.peer_dir else None
    own_peer_dir = workers > 1 and peer_dir is None
    if own_peer_dir:
        peer_dir = Path(tempfile.mkdtemp(prefix="stripesync-proxy-"))
    try:
        try:
            proxy = ProxyServer(
                args.database_url,
                listen_host=host,
                listen_port=port,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                worker=worker,
                workers=workers,
                peer_dir=peer_dir,
            )
        except UpstreamError as exc:
            print(f"stripesync proxy: {exc}", file=sys.stderr)
            return 2
        except (OSError, ssl.SSLError) as exc:
            print(f"stripesync proxy: cannot load the TLS certificate: {exc}", file=sys.stderr)
            return 1
        try:
            asyncio.run(_serve(proxy, args))
        except OSError as exc:
            print(f"stripesync proxy: {exc.strerror or exc}", file=sys.stderr)
            return 1
        except WorkerError as exc:
            print(f"stripesync proxy: {exc}", file=sys.stderr)
            return 1
        return 0
    finally:
        if own_peer_dir and peer_dir is not None:
            shutil.rmtree(peer_dir, ignore_errors=True)


def _rate_share(args: argparse.Namespace, workers: int) -> float | None:
    """Each process's share of the Stripe rate limit (all of it for one process)."""
    if args.worker is not None or workers == 1:
        return args.max_rps  # a started worker is given its share already
    from stripesync.stripe_api.client import default_max_rps

    return (args.max_rps or default_max_rps(args.api_key or "")) / workers


class _ParentWatch(asyncio.Protocol):
    """A started worker ends when its parent closes its stdin (or dies)."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


async def _serve(proxy: ProxyServer, args: argparse.Namespace | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if args is not None and args.worker is not None:
            watch, _ = await loop.connect_read_pipe(lambda: _ParentWatch(stop), sys.stdin)
            stack.callback(watch.close)
            if proxy.peer_dir is not None:  # the first process counts this one's writes
                stack.callback(forward_proxy_writes(proxy.peer_dir))
        if args is not None and args.api_key:
            # writes to synced tables: Stripe first, then the store on a pooled connection
            from psycopg_pool import AsyncConnectionPool

            from stripesync.proxy.writes import StripeWriteHandler
            from stripesync.stripe_api.client import StripeApi

            api = await stack.enter_async_context(
                StripeApi(
                    args.api_key,
                    api_base=args.api_base,
                    max_rps=_rate_share(args, proxy.workers),
                )
            )
            pool: AsyncConnectionPool = AsyncConnectionPool(  # type: ignore[type-arg]
                args.database_url, min_size=1, max_size=8, open=False,
                kwargs={"autocommit": True},
            )
            await pool.open()
            stack.push_async_callback(pool.close)
            proxy.write_handler = StripeWriteHandler(api, pool, schema=args.schema)
        elif args is not None:
            from stripesync.proxy.writes import StripeWriteHandler

            # without a key, writes to synced tables are refused, never passed through
            proxy.write_handler = StripeWriteHandler(
                None,
                None,
                schema=args.schema,
                refuse="writes to synced tables need a Stripe key (--api-key or "
                "STRIPE_API_KEY): they go to Stripe first",
            )
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        if args is not None and args.worker is None and proxy.workers > 1:
            assert proxy.peer_dir is not None
            workers = ProxyWorkers(
                proxy.workers,
                listen_host=proxy.host,
                listen_port=proxy.port,
                peer_dir=proxy.peer_dir,
                settings=WorkerSettings(
                    database_url=args.database_url,
                    schema=args.schema,
                    api_key=args.api_key,
                    api_base=args.api_base,
                    max_rps=_rate_share(args, proxy.workers),
                    tls_cert=args.tls_cert,
                    tls_key=args.tls_key,
                    log_format=args.log_format,
                    log_level=args.log_level,
                ),
            )
            await workers.start()
            stack.push_async_callback(workers.stop)
        host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
        print(f"proxy listening on {host}:{proxy.port}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy command alone (``python -m stripesync.proxy.cli``)."""
    parser = argparse.ArgumentParser(prog="stripesync proxy")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
