"""The commands that tie the layers together: backfill, status (and later run, demo)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from rich.console import Console
from rich.table import Table

from stripesync import settings
from stripesync.catalog import UnknownCollectionError, build_catalog
from stripesync.db.embedded import (
    SUPERUSER,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    default_data_dir,
)
from stripesync.db.url import check_database_url
from stripesync.schema.columns import quote
from stripesync.schema.migrate import migrate
from stripesync.stripe_api.client import StripeApi, StripeApiError, redact
from stripesync.sync.backfill import Backfill, BackfillResult

log = logging.getLogger("stripesync")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SKIPPED = 3  # finished, but some collections were skipped


class UserError(Exception):
    """A problem the user can fix, met while running: printed as one line, exit code 1."""


class UsageError(UserError):
    """The command line, the settings or a URL is wrong, found before anything was
    contacted: printed as one line, exit code 2."""


# ---- options shared by the commands -------------------------------------------------------


def add_database_options(p: argparse.ArgumentParser) -> None:
    settings.add(p, "database_url", "schema", "data_dir")


def add_stripe_options(p: argparse.ArgumentParser) -> None:
    settings.add(p, "api_key", "api_base", "collections", "max_rps")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("backfill", help="copy every collection into PostgreSQL")
    add_stripe_options(p)
    add_database_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_backfill)

    p = subparsers.add_parser(
        "run", help="backfill, then follow Stripe's events until stopped (with HTTP endpoints)"
    )
    add_stripe_options(p)
    add_database_options(p)
    add_run_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_run)

    p = subparsers.add_parser("status", help="per-collection state of the sync")
    add_database_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_status)

    p = subparsers.add_parser(
        "roles",
        help="print (or apply) the SQL that lets an application role read the synced tables "
        "and change them only through the proxy",
    )
    add_database_options(p)
    p.add_argument("--app-role", required=True, help="the applications' role (must exist)")
    p.add_argument(
        "--owner-role",
        default=None,
        help="the role stripesync and the proxy's store connect as (default: the database "
        "URL's user)",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="the role only reads: no INSERT, UPDATE or DELETE grants, so the proxy refuses "
        "its writes as PostgreSQL would",
    )
    p.add_argument("--apply", action="store_true", help="run the statements on the database")
    p.set_defaults(run=cmd_roles)

    p = subparsers.add_parser("config", help="configuration: show the effective settings")
    p.add_argument("action", choices=["show"], help="show: every setting, secrets masked")
    settings.add(p, *settings.SETTINGS)
    p.set_defaults(run=cmd_config)


def add_run_options(p: argparse.ArgumentParser) -> None:
    settings.add(
        p,
        "poll_interval",
        "http_listen",
        "http_token",
        "proxy_listen",
        "proxy_workers",
        "tls_cert",
        "tls_key",
        "webhook_secret",
        "register_webhook",
        "relist_interval",
        "lag_budget",
    )


def collections_option(value: str | list[str] | None) -> list[str] | None:
    """The collections a command was given (settings has already checked the names)."""
    if not value:
        return None
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
    try:
        build_catalog().select(names)
    except UnknownCollectionError as e:
        raise UsageError(str(e)) from None
    return names


# ---- database -------------------------------------------------------------------------


@dataclass
class Database:
    url: str
    embedded: EmbeddedPostgres | None = None
    # this process started the embedded server: it stops it when the command ends
    started: bool = False
    # say at the end whether the embedded server was stopped or left running
    report: bool = True


# The embedded servers this process opened; `run_command` closes them when the command
# ends, however it ends (done, an error, Ctrl-C, SIGTERM).
_OPENED: list[Database] = []


def open_database(
    url: str | None,
    *,
    data_dir: str | None = None,
    announce: bool = True,
    report: bool | None = None,
) -> Database:
    """The given database, or the embedded one in `data_dir` (started, or found running).

    A server this call starts is stopped when the command ends; one it found running is
    left running. `announce`: print its psql URL now; `report` (default: `announce`): say
    at the end which of the two happened.
    """
    if url:
        try:
            check_database_url(url)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return Database(url)
    pg = EmbeddedPostgres(data_dir or default_data_dir(), port=0)
    db = Database("", pg, report=announce if report is None else report)
    _OPENED.append(db)  # first: a server that starts but then fails a check is stopped too
    try:
        pg.start()
    except EmbeddedPostgresError as e:
        raise UserError(f"embedded PostgreSQL: {e}") from None
    finally:
        db.started = pg.started
    db.url = pg.tcp_url if pg.port else pg.url
    if announce:
        print(f"embedded PostgreSQL: psql '{pg.socket_url}'", file=sys.stderr)
    return db


def close_databases() -> bool:
    """Stop the embedded servers this process started, leave the others running, and say
    which happened. False when a server could not be stopped."""
    ok = True
    while _OPENED:
        db = _OPENED.pop()
        pg = db.embedded
        if pg is None:
            continue
        if not db.started:
            if db.report and db.url:
                print_line(
                    "embedded PostgreSQL left running (it was running before; "
                    "`stripesync db stop` stops it)"
                )
            continue
        try:
            pg.stop()
        except EmbeddedPostgresError as e:
            print_line(f"stripesync: embedded PostgreSQL: {redact(str(e))}")
            ok = False
            continue
        if db.report:
            print_line("embedded PostgreSQL stopped")
    return ok


@asynccontextmanager
async def connect_pool(url: str, *, max_size: int = 10) -> AsyncIterator[AsyncConnectionPool]:  # type: ignore[type-arg]
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=10)
        await conn.close()
    except psycopg.Error as e:
        raise UserError(f"cannot connect to the database: {_db_reason(e)}") from None
    pool: AsyncConnectionPool = AsyncConnectionPool(  # type: ignore[type-arg]
        url, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


def _db_reason(e: psycopg.Error) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = "; ".join(lines) if lines else type(e).__name__
    return redact(_strip_password(text))


def _strip_password(text: str) -> str:
    import re

    return re.sub(r"(postgres(?:ql)?://[^:/@]+:)[^@]+@", r"\1***@", text)


# ---- backfill -------------------------------------------------------------------------


def cmd_backfill(args: argparse.Namespace) -> int:
    return run_command(_backfill(args))


@asynccontextmanager
async def stripe_and_database(
    args: argparse.Namespace, db: Database
) -> AsyncIterator[tuple[AsyncConnectionPool, StripeApi]]:  # type: ignore[type-arg]
    """The database pool and the Stripe client of a command, the key checked."""
    async with (
        connect_pool(db.url, max_size=20) as pool,
        StripeApi(args.api_key, api_base=args.api_base, max_rps=args.max_rps) as api,
    ):
        await check_key(api)
        yield pool, api


def require_key(args: argparse.Namespace) -> None:
    if not args.api_key:
        raise UsageError("no Stripe API key: pass --api-key or set STRIPE_API_KEY")


async def _backfill(args: argparse.Namespace) -> int:
    require_key(args)
    names = collections_option(args.collections)
    db = open_database(args.database_url, data_dir=args.data_dir)
    async with stripe_and_database(args, db) as (pool, api):
        async with pool.connection() as conn:
            selected = build_catalog().select(names)
            await migrate(conn, args.schema, selected if names else None)
        result = await run_backfill(api, pool, args.schema, names, progress=not args.no_progress)
        print_result(result)
        if result.copy_existed:
            await catch_up(api, pool, args.schema, names)
    return EXIT_SKIPPED if result.skipped else EXIT_OK


async def catch_up(
    api: StripeApi,
    pool: AsyncConnectionPool,  # type: ignore[type-arg]
    schema: str,
    names: list[str] | None,
) -> int:
    """A backfill of a copy started earlier brings it up to date: the events since its
    cursor are applied, as `run` would apply them, and the command says so. A cursor
    older than Stripe keeps events cannot catch up: `run` reads everything again."""
    from stripesync.catalog import Catalog
    from stripesync.sync.live import MAX_EVENTS_PER_POLL, CursorExpired, LiveSync

    # as in `run`: the live sync keeps every event it applies, so its table is there
    wanted = [*names, "event"] if names and "event" not in names else names
    selected = build_catalog().select(wanted)
    async with pool.connection() as conn:
        await migrate(conn, schema, selected if wanted else None)
    live = LiveSync(api, pool, schema=schema, catalog=Catalog(selected))
    _, since = await live.cursor()
    applied = 0
    try:
        while True:
            polled = await live.poll_once()
            applied += polled.events
            if polled.events < MAX_EVENTS_PER_POLL:
                break
    except CursorExpired as e:
        raise UserError(
            f"the copy cannot be brought up to date from Stripe's events ({e}): "
            "`stripesync run` reads every collection again and removes what Stripe no "
            "longer has"
        ) from None
    when = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if since else "?"
    Console(stderr=True).print(
        f"the copy was already backfilled: applied {applied} events since {when}; "
        "it is current now, and `stripesync run` keeps it current",
        markup=False,
        soft_wrap=True,
    )
    return applied


async def check_key(api: StripeApi) -> None:
    """Fail fast, in one line, on a bad key or an unreachable API."""
    retries, api.max_retries = api.max_retries, 2  # a dead address is not worth a minute
    try:
        await api.get("/v1/balance")
    except StripeApiError as e:
        if e.authentication:
            raise UserError(f"Stripe refused the API key: {e.message}") from None
        if e.status == 0:
            raise UserError(f"cannot reach the Stripe API at {api.api_base}: {e.message}") from None
        # a restricted key may lack the balance permission: that is fine here
    finally:
        api.max_retries = retries


async def run_backfill(
    api: StripeApi,
    pool: AsyncConnectionPool,  # type: ignore[type-arg]
    schema: str,
    names: list[str] | None,
    *,
    progress: bool,
) -> BackfillResult:
    console = Console(stderr=True)
    if progress and console.is_terminal:
        from stripesync.progress import BackfillProgress

        with BackfillProgress(console) as bar:
            bf = Backfill(api, pool, schema=schema, collections=names, on_progress=bar.update)
            return await bf.run()
    bf = Backfill(api, pool, schema=schema, collections=names)
    return await bf.run()


def print_result(result: BackfillResult) -> None:
    console = Console(stderr=True)
    copied = len(result.done) - len(result.already)
    before = f" ({len(result.already)} were complete before)" if result.already else ""
    console.print(
        f"backfilled {result.objects} objects from {copied} collections "
        f"in {result.seconds:.1f} s{before}"
    )
    for name, reason in sorted(result.skipped.items()):
        console.print(f"  skipped {name}: {reason}", markup=False, soft_wrap=True)


# ---- run ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    return run_command(_run(args))


async def _run(args: argparse.Namespace) -> int:
    import signal

    from stripesync.http.server import parse_listen
    from stripesync.runner import RunConfig, Runner, register_webhook

    require_key(args)
    names = collections_option(args.collections)
    host: str | None = None
    port = 0
    if args.http_listen != "off":
        try:
            host, port = parse_listen(args.http_listen)
        except ValueError as e:
            raise UsageError(f"--http-listen: {e}") from None
    proxy_host: str | None = None
    proxy_port = 0
    if args.proxy_listen != "off":
        proxy_host, proxy_port = parse_listen(args.proxy_listen)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    db = open_database(args.database_url, data_dir=args.data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGTERM arrives as SIGINT (run_command): the batch in hand commits, then we stop
    loop.add_signal_handler(signal.SIGINT, stop.set)
    console = Console(stderr=True)
    async with stripe_and_database(args, db) as (pool, api):
        if args.register_webhook:
            async with pool.connection() as conn:
                await migrate(conn, args.schema, [])
            await register_webhook(api, pool, args.schema, args.register_webhook)
        config = RunConfig(
            schema=args.schema,
            collections=names,
            poll_interval=args.poll_interval,
            lag_budget=args.lag_budget,
            relist_interval=args.relist_interval,
            proxy_host=proxy_host,
            proxy_port=proxy_port,
            proxy_workers=args.proxy_workers,
            api_key=args.api_key,
            log_format=args.log_format,
            log_level=args.log_level,
            database_url=db.url,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            http_host=host,
            http_port=port,
            http_token=args.http_token,
            webhook_secrets=args.webhook_secret,
            on_backfill=print_result,
        )
        bar = progress_bars(console, config, not args.no_progress)
        runner = Runner(api, pool, config)
        try:
            started = asyncio.ensure_future(runner.run(stop))
            announced = False
            while not started.done():
                await asyncio.wait({started}, timeout=0.1)
                if not announced and runner.state.phase == "live":
                    announced = True
                    if bar is not None:
                        bar.__exit__(None, None, None)
                        bar = None
                    lines = ["live sync: following Stripe's events; Ctrl-C stops"]
                    if runner.http is not None:
                        lines.append(f"status and metrics: {runner.http.url}")
                    if runner.proxy is not None:
                        where = proxy_url(db.url, config.proxy_host, runner.proxy.port)
                        lines.append(f"proxy: {where}")
                    await show_banner(lines, pool, args.schema, loop)
            state = started.result()
        except OSError as e:
            raise UserError(f"cannot listen on {args.http_listen}: {e.strerror or e}") from None
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
            loop.remove_signal_handler(signal.SIGINT)
            stop_banner(loop)
    console.print(f"stopped: {runner.live.events_applied} events applied")
    skipped = any(r.skipped for r in state.backfills)
    return EXIT_SKIPPED if skipped else EXIT_OK


def progress_bars(console: Console, config: Any, wanted: bool) -> Any:
    """The backfill's progress bars, started and fed by `config.on_progress`, when
    wanted and stderr is a terminal; the caller stops them (`__exit__`)."""
    if not wanted or not console.is_terminal:
        return None
    from stripesync.progress import BackfillProgress

    bar = BackfillProgress(console)
    config.on_progress = bar.update
    bar.__enter__()
    return bar


def print_line(text: str) -> None:
    """One line on stderr, never wrapped (addresses must stay copyable)."""
    print(text, file=sys.stderr, flush=True)


def proxy_url(database_url: str, host: str | None, port: int) -> str:
    """The database URL pointed at the proxy, password masked (psql will ask)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(database_url)
    user = parts.username or ""
    netloc = f"{user}@" if user else ""
    netloc += f"{host}:{port}"
    return urlunsplit((parts.scheme or "postgresql", netloc, parts.path, parts.query, ""))


# ---- roles ----------------------------------------------------------------------------


def cmd_roles(args: argparse.Namespace) -> int:
    return run_command(_roles(args))


async def _roles(args: argparse.Namespace) -> int:
    from stripesync.proxy.roles import role_setup_sql

    db = open_database(args.database_url, data_dir=args.data_dir, announce=False)
    owner = args.owner_role or psycopg.conninfo.conninfo_to_dict(db.url).get("user")
    if not owner:
        raise UsageError("--owner-role is needed: the database URL names no user")
    try:
        statements = role_setup_sql(
            args.schema, str(owner), args.app_role, writes=not args.read_only
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not args.apply:
        print("\n".join(f"{st};" for st in statements))
        return EXIT_OK
    async with connect_pool(db.url, max_size=1) as pool, pool.connection() as conn:
        try:
            async with conn.transaction():
                for st in statements:
                    await conn.execute(st)  # type: ignore[arg-type]
        except psycopg.Error as e:
            raise UserError(f"role setup: {_db_reason(e)}") from None
    if args.read_only:
        print_line(f"role setup applied: {args.app_role} reads schema {args.schema}")
    else:
        print_line(f"role setup applied: {args.app_role} reads schema {args.schema}; its "
                   "writes go through the proxy (straight to PostgreSQL they are refused)")
    return EXIT_OK


# ---- config ---------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    print(settings.show(args.resolved_settings))
    return EXIT_OK


# ---- status ---------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    return run_command(_status(args))


async def _status(args: argparse.Namespace) -> int:
    from stripesync.http.status import StatusCollector

    db = open_database(args.database_url, data_dir=args.data_dir, announce=False)
    async with connect_pool(db.url, max_size=2) as pool:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = "
                "'_collection_state'",
                (args.schema,),
            )
            if await cur.fetchone() is None:
                raise UserError(f"schema {args.schema!r} has no stripesync tables yet")
            cur = await conn.execute(
                f"SELECT collection FROM {quote(args.schema)}._collection_state"
            )
            known = [r[0] for r in await cur.fetchall()]
            cur = await conn.execute(
                f"SELECT value FROM {quote(args.schema)}._meta WHERE key = %s",  # type: ignore[arg-type]
                (BANNER_KEY,),
            )
            found = await cur.fetchone()
        data = await StatusCollector(pool, args.schema, collections=known).collect()
    banner = found[0] if found is not None else None
    rows = [r for r in data["collections"] if r["collection"] in known]
    if args.json:
        print(json.dumps({**data, "collections": rows, "banner": banner}, indent=2, default=str))
        return EXIT_OK
    for line in banner_text(banner):  # what the running sync said when it was ready
        print(line)
    columns = ("collection", "rows", "backfill", "last change", "last re-list", "skipped")
    cells = [
        (
            r["collection"],
            ("≈" if r.get("rows_estimated") else "") + str(r["rows"]),
            r["state"],
            r["last_change_at"] or "",
            r["relisted_at"] or "",
            r["skipped_reason"] or "",
        )
        for r in rows
    ]
    cursor = events_cursor_line(data.get("events_cursor"))
    console = Console()
    if not console.is_terminal:  # a file or a pipe: whole lines, never folded at 80
        print(f"stripesync: schema {args.schema}")
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        for line in (columns, *cells):
            print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
        print(cursor)
        return EXIT_OK
    table = Table(title=f"stripesync: schema {args.schema}", caption=cursor)
    for col in columns:  # a collection's name is never broken; the rest may fold
        table.add_column(col, overflow="fold", no_wrap=col == "collection")
    for row in cells:
        table.add_row(*row)
    console.print(table)
    return EXIT_OK


def events_cursor_line(cursor: dict[str, Any] | None) -> str:
    """What the events cursor means, for a person."""
    if cursor and not cursor.get("event_id"):
        return (
            "events cursor: before the first event (Stripe had none when it was recorded): "
            "the live sync applies every event from the first one"
        )
    if not cursor:
        return (
            "events cursor: none yet - no backfill or run has recorded where the live sync "
            "starts in Stripe's events; `stripesync run` records it and follows the events"
        )
    when = cursor.get("event_created") or "time unknown"
    return (
        f"events cursor: {cursor['event_id']} (created {when}): the live sync resumes "
        "after this event"
    )


# ---- running a command ------------------------------------------------------------------


def run_command(coro: Any) -> int:
    """Run a command's coroutine: user errors are one line, never a traceback. However
    it ends, the embedded PostgreSQL it started is stopped (`close_databases`)."""
    code = EXIT_ERROR
    try:
        with _sigterm_as_sigint():
            try:
                code = int(asyncio.run(coro))
            except UsageError as e:
                print(f"stripesync: {redact(str(e))}", file=sys.stderr)
                code = EXIT_USAGE
            except UserError as e:
                print(f"stripesync: {redact(str(e))}", file=sys.stderr)
                code = EXIT_ERROR
            except StripeApiError as e:
                print(f"stripesync: Stripe: {e}", file=sys.stderr)
                code = EXIT_ERROR
            except KeyboardInterrupt:
                print("stripesync: interrupted", file=sys.stderr)
                code = 130
    finally:
        with _signals_ignored():  # a second Ctrl-C must not cut the stop short
            if not close_databases() and code == EXIT_OK:
                code = EXIT_ERROR
    return code


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM does what Ctrl-C does: the command stops (the live sync after the batch
    in hand; earlier, by cancellation), and what it started is stopped. The commands
    handle SIGINT only, so SIGTERM never falls back to the default (instant death)."""
    if not _in_main_thread():
        yield
        return

    def forward(signum: int, frame: object) -> None:
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    if not _in_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---- demo -----------------------------------------------------------------------------

DEMO_DATABASE = "stripesync_demo"
DEMO_KEY = "sk_test_stripesync_demo"


def register_demo(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo",
        help="offline demo: emulator + embedded PostgreSQL + sync + proxy + status page",
    )
    p.add_argument("--customers", type=int, default=500, help="size of the seeded account")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    settings.add(p, "data_dir", "http_listen", "proxy_listen")
    p.set_defaults(run=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    return run_command(_demo(args))


async def _demo(args: argparse.Namespace) -> int:
    import signal

    from stripesync.emulator.generator import generate
    from stripesync.emulator.server import EmulatorServer
    from stripesync.http.server import parse_listen
    from stripesync.runner import RunConfig, Runner

    console = Console(stderr=True)
    db = open_database(None, data_dir=args.data_dir, announce=False, report=True)
    pg = db.embedded
    assert pg is not None
    admin = await psycopg.AsyncConnection.connect(pg.tcp_url, autocommit=True)
    async with admin:
        cur = await admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DATABASE,))
        if await cur.fetchone() is None:
            await admin.execute(f"CREATE DATABASE {DEMO_DATABASE}")
    url = pg.url_for(DEMO_DATABASE, tcp=True)
    http_host, http_port = (None, 0) if args.http_listen == "off" else parse_listen(
        args.http_listen
    )
    proxy_host, proxy_port = (None, 0) if args.proxy_listen == "off" else parse_listen(
        args.proxy_listen
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)  # SIGTERM arrives as SIGINT
    with EmulatorServer() as emu:
        counts = generate(emu.emulator, customers=args.customers, seed=42)
        added = counts["added"]
        print_line(
            f"emulator: {emu.url} seeded with "
            + ", ".join(f"{n} {t}" for t, n in sorted(added.items()))
        )
        async with connect_pool(url, max_size=20) as pool:
            async with pool.connection() as conn:
                # the emulator starts empty every time: so does the demo's schema
                await conn.execute("DROP SCHEMA IF EXISTS stripe CASCADE")
            async with StripeApi(DEMO_KEY, api_base=emu.url, max_rps=200) as api:
                config = RunConfig(
                    http_host=http_host,
                    http_port=http_port,
                    proxy_host=proxy_host,
                    proxy_port=proxy_port,
                    # the proxy reaches the database over its socket (trust): demo clients
                    # connect without a password
                    database_url=pg.url_for(DEMO_DATABASE, tcp=False),
                    on_backfill=print_result,
                )
                bar = progress_bars(console, config, not args.no_progress)
                runner = Runner(api, pool, config)
                task = asyncio.create_task(runner.run(stop))
                trickle: asyncio.Task[None] | None = None
                try:
                    while runner.state.phase != "live" and not task.done():
                        await asyncio.wait({task}, timeout=0.1)
                    if bar is not None:
                        bar.__exit__(None, None, None)
                        bar = None
                    if not task.done():
                        await show_banner(demo_banner(pg, runner), pool, "stripe", loop)
                        trickle = asyncio.create_task(_trickle(emu.url, stop))
                        with suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), args.duration)
                finally:
                    if bar is not None:
                        bar.__exit__(None, None, None)
                    stop.set()
                    await asyncio.gather(task, return_exceptions=True)
                    if trickle is not None:
                        await asyncio.gather(trickle, return_exceptions=True)
                    loop.remove_signal_handler(signal.SIGINT)
                    stop_banner(loop)
                try:
                    task.result()
                except OSError as e:
                    raise UserError(
                        f"cannot listen ({e.strerror or e}): choose other ports with "
                        "--http-listen and --proxy-listen"
                    ) from None
                print_line(f"live sync applied {runner.live.events_applied} events; stopped")
    return EXIT_OK


def demo_banner(pg: EmbeddedPostgres, runner: Any) -> list[str]:
    lines = [f"database: psql '{pg.url_for(DEMO_DATABASE, tcp=False)}'"]
    if runner.proxy is not None:
        proxied = f"postgresql://postgres@{runner.config.proxy_host}:{runner.proxy.port}"
        lines.append(f"through the proxy: psql '{proxied}/{DEMO_DATABASE}'")
    if runner.http is not None:
        lines.append(f"status page: {runner.http.url}/")
    lines.append("try:")
    for q in (
        "SELECT id, email, created FROM stripe.customer ORDER BY created DESC LIMIT 5;",
        "SELECT c.email, sum(ch.amount) / 100.0 AS paid FROM stripe.charge ch "
        "JOIN stripe.customer c ON c.id = ch.customer_id GROUP BY 1 ORDER BY 2 DESC LIMIT 5;",
        "-- through the proxy: the customer is created in Stripe first, then stored\n"
        "  INSERT INTO stripe.customer (email, name) VALUES ('you@example.com', 'You') "
        "RETURNING id;",
    ):
        lines.append(f"  {q}")
    lines.append(
        "new customers and updates arrive through the live sync every second; "
        "Ctrl-C stops the demo"
    )
    return lines


# ---- the ready banner -------------------------------------------------------------------

BANNER_KEY = "banner"  # the _meta row `stripesync status` prints it from


async def show_banner(
    lines: list[str], pool: Any, schema: str, loop: asyncio.AbstractEventLoop
) -> None:
    """Print the ready banner, print it again on SIGHUP, and record it (it holds no
    secret: proxy URLs carry no password) so that `stripesync status` shows it."""
    import os
    import socket

    def show() -> None:
        for line in lines:
            print_line(line)

    show()
    with suppress(NotImplementedError, RuntimeError, AttributeError):  # no SIGHUP here
        loop.add_signal_handler(signal.SIGHUP, show)
    record = {
        "lines": lines,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        async with pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO {quote(schema)}._meta (key, value) VALUES (%s, %s) "  # type: ignore[arg-type]
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
                (BANNER_KEY, psycopg.types.json.Jsonb(record)),
            )
    except psycopg.Error as e:
        log.warning("could not record the ready banner: %s", e)


def stop_banner(loop: asyncio.AbstractEventLoop) -> None:
    with suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.remove_signal_handler(signal.SIGHUP)


def banner_text(record: dict[str, Any] | None) -> list[str]:
    """The recorded banner, headed by who recorded it and whether it still runs here."""
    import os
    import socket

    if not record or not record.get("lines"):
        return []
    pid, host = record.get("pid"), record.get("host")
    alive = False
    if host == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
            alive = True
        except PermissionError:
            alive = True
        except OSError:
            alive = False
    if host != socket.gethostname():
        state = f"on {host}"
    else:
        state = "running" if alive else "no longer running"
    head = f"stripesync (pid {pid}, {state}) said when ready at {record.get('since')}:"
    return [head, *(f"  {line}" for line in record["lines"])]


async def _trickle(api_base: str, stop: asyncio.Event) -> None:
    """A little activity through the official SDK: new customers, updates."""
    import stripe

    client = stripe.StripeClient(
        DEMO_KEY,
        base_addresses={"api": api_base},
        http_client=stripe.HTTPXClient(),
        max_network_retries=0,
    )
    n = 0
    while not stop.is_set():
        n += 1
        try:
            c = await client.v1.customers.create_async(
                {"email": f"live{n}@example.com", "name": f"Live customer {n}"}
            )
            await client.v1.customers.update_async(c.id, {"metadata": {"plan": "demo"}})
        except stripe.StripeError as e:
            log.warning("demo activity: %s", e)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


# ---- db: the embedded PostgreSQL ------------------------------------------------------


def register_db(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "db",
        help="the embedded PostgreSQL: status, start, stop, url",
        description="The embedded PostgreSQL that commands use without a database URL. "
        "A command stops the server it started when it ends and leaves one it found "
        "running; `start` starts it for good (until `stop`).",
    )
    p.add_argument(
        "action",
        choices=["status", "start", "stop", "url"],
        help="status: whether it runs (pid, port, data directory, URL); start: start it and "
        "leave it running; stop: stop it; url: its psql URL",
    )
    settings.add(p, "data_dir")
    p.set_defaults(run=cmd_db)


def cmd_db(args: argparse.Namespace) -> int:
    pg = EmbeddedPostgres(args.data_dir or default_data_dir(), port=0)
    try:
        if args.action == "status":
            return _db_status(pg)
        if args.action == "start":
            pg.start()
            said = "started" if pg.started else "already running"
            print_line(f"embedded PostgreSQL {said} (pid {pg.info.pid}, {pg.data_dir})")
            print(pg.socket_url)
            return EXIT_OK
        if args.action == "stop":
            info = pg.find_running()
            if info is None:
                print_line(f"embedded PostgreSQL was not running ({pg.data_dir})")
                return EXIT_OK
            pg.stop()
            print_line(f"embedded PostgreSQL stopped (pid {info.pid}, {pg.data_dir})")
            return EXIT_OK
        # url: the one the other commands print (the Unix socket: no password)
        if pg.find_running() is None:
            print_line(
                f"stripesync: embedded PostgreSQL in {pg.data_dir} is not running "
                "(`stripesync db start` starts it)"
            )
            return EXIT_ERROR
        print(pg.socket_url)
        return EXIT_OK
    except EmbeddedPostgresError as e:
        print_line(f"stripesync: embedded PostgreSQL: {redact(str(e))}")
        return EXIT_ERROR


def _db_status(pg: EmbeddedPostgres) -> int:
    """What runs in the data directory; never the password (it stays in its file)."""
    info = pg.find_running()
    if info is None:
        made = (pg.pgdata / "PG_VERSION").exists()
        print("embedded PostgreSQL: not running" + ("" if made else " (never started here)"))
        print(f"data directory: {pg.data_dir}")
        return EXIT_OK
    print(f"embedded PostgreSQL: running ({info.status})")
    print(f"pid: {info.pid}")
    print(f"port: {f'{pg.host}:{info.port}' if info.listen else 'none (Unix socket only)'}")
    print(f"data directory: {pg.data_dir}")
    print(f"url: {pg.socket_url}")
    if info.listen:
        tcp = f"postgresql://{SUPERUSER}@{pg.host}:{info.port}/postgres"
        print(f"tcp url: {tcp} (password in {pg.data_dir / 'superuser-password'})")
    return EXIT_OK
