"""`stripesync run`: migrations, the backfill (or its resumption), then the live sync
until stopped, with the HTTP endpoints beside it.

The order of one run:

1. the HTTP server (health, metrics, webhooks) starts first, so a backfill is visible;
2. migrations; the backfill records the events cursor, then pages what is not done;
   the upcoming invoices of every customer and subscription are fetched;
3. the live sync polls from that cursor; beside it, what Stripe announces through no
   event (accounts, persons, external accounts, country specs, report types, the
   balance) is listed again every `relist_interval` and repaired; a stop (SIGINT /
   SIGTERM) lets the batch in hand commit, then everything closes;
4. when the saved cursor has fallen out of Stripe's 30-day window of events, the run
   says so loudly, backfills everything again, removes the rows of objects Stripe no
   longer lists, and resumes from a fresh cursor.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from stripesync.catalog import Catalog, ReadKind, build_catalog
from stripesync.http.server import HttpServer, create_app, is_loopback
from stripesync.http.status import (
    FreshnessHistory,
    RecentErrors,
    StatusCollector,
    status_routes,
)
from stripesync.obs.metrics import BACKFILL_DONE, EVENTS_LAG
from stripesync.proxy.hooks import WriteHandler
from stripesync.proxy.server import ProxyServer
from stripesync.proxy.workers import ProxyWorkers, WorkerSettings
from stripesync.proxy.writes import StripeWriteHandler
from stripesync.schema.columns import quote
from stripesync.schema.ddl import SECRETS_TABLE, WEBHOOK_SECRET_KEY
from stripesync.schema.migrate import migrate
from stripesync.store.secrets import keep_secret, read_secrets
from stripesync.store.store import fetch_time
from stripesync.stripe_api.client import StripeApi, redact
from stripesync.sync.backfill import Backfill, BackfillResult, Progress
from stripesync.sync.events import Plan
from stripesync.sync.live import CursorExpired, LiveSync
from stripesync.sync.relist import Relister
from stripesync.sync.upcoming import UpcomingInvoices

log = logging.getLogger("stripesync.run")


@dataclass
class RunConfig:
    schema: str = "stripe"
    collections: Sequence[str] | None = None
    poll_interval: float = 0.5
    lag_budget: float = 10.0  # /health is 503 when the copy may be older than this
    http_host: str | None = "127.0.0.1"  # None: no HTTP server
    http_port: int = 8484
    http_token: str | None = field(default=None, repr=False)  # asked for by / and /metrics
    webhook_secrets: Sequence[str] = ()
    relist_interval: float = 3600.0  # what events miss is listed again this often
    # the write-through proxy: None for none; it relays to `database_url`
    proxy_host: str | None = None
    proxy_port: int = 6543
    proxy_workers: int = 1  # processes sharing the proxy's port (this one is the first)
    api_key: str | None = field(default=None, repr=False)  # for the other proxy workers
    log_format: str = "text"  # the other proxy workers log like this process
    log_level: str = "info"
    database_url: str | None = field(default=None, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    backfill_concurrency: int = 32
    on_progress: Callable[[Progress], None] | None = None
    on_backfill: Callable[[BackfillResult], None] | None = None


@dataclass
class RunState:
    phase: str = "starting"  # starting, backfill, live, rebackfill, stopped
    backfills: list[BackfillResult] = field(default_factory=list)
    rebackfills: int = 0


class Runner:
    """One account synced into one schema, until `stop` is set."""

    def __init__(
        self,
        api: StripeApi,
        pool: AsyncConnectionPool,  # type: ignore[type-arg]
        config: RunConfig,
        *,
        catalog: Catalog | None = None,
    ) -> None:
        self.api = api
        self.pool = pool
        self.catalog = catalog or build_catalog()
        if config.collections:
            wanted = list(config.collections)
            # the live sync keeps every event it applies: its table is always there
            needs = ["event"]
            if {"upcoming_customer_invoice", "upcoming_subscription_invoice"} & set(wanted):
                # which upcoming invoices to fetch comes from these tables
                needs += ["customer", "subscription", "subscription_item"]
            config.collections = wanted + [n for n in needs if n not in wanted]
        self.config = config
        self.state = RunState()
        # the live sync writes only the selected collections' tables
        selected = Catalog(self.catalog.select(list(config.collections or []) or None))
        self.live = LiveSync(
            api,
            pool,
            schema=config.schema,
            catalog=selected,
            poll_interval=config.poll_interval,
            after_batch=self._after_batch,
        )
        self.http: HttpServer | None = None
        self.history = FreshnessHistory()
        self.errors: RecentErrors | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._sampler_stop = asyncio.Event()
        self.proxy: ProxyServer | None = None
        self.proxy_workers: ProxyWorkers | None = None
        self._peer_dir: Path | None = None
        self.write_handler: WriteHandler | None = None  # writes go to Stripe when set
        self._after_batch_hooks: list[Callable[[Plan], Awaitable[None]]] = []
        self.relister = Relister(
            api,
            pool,
            schema=config.schema,
            catalog=self.catalog,
            interval=config.relist_interval,
            collections=config.collections,
        )
        self.add_after_batch(self.relister.after_batch)
        self.upcoming: UpcomingInvoices | None = None
        if {"upcoming_customer_invoice", "upcoming_subscription_invoice"} & set(selected.names()):
            self.upcoming = UpcomingInvoices(api, pool, schema=config.schema, catalog=selected)
            self.add_after_batch(self.upcoming.after_batch)

    # ---- the whole run -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> RunState:
        await self._start_http()
        try:
            await self._start_proxy()
            async with self.pool.connection() as conn:
                selected = self.catalog.select(list(self.config.collections or []) or None)
                await migrate(
                    conn, self.config.schema, selected if self.config.collections else None
                )
            await self._until(stop, self._backfill("backfill"))
            if self.upcoming is not None and not stop.is_set():
                await self._until(stop, self._fill_upcoming())
            relisting = asyncio.create_task(self.relister.run(stop))
            try:
                while not stop.is_set():
                    self.state.phase = "live"
                    try:
                        await self.live.run(stop)
                    except CursorExpired as e:
                        await self._rebackfill(stop, str(e))
            finally:
                relisting.cancel()  # a re-list in hand stops; it removes nothing then
                await asyncio.gather(relisting, return_exceptions=True)
        finally:
            self.state.phase = "stopped"
            await self._stop_proxy()
            await self._stop_http()
        return self.state

    async def _until(self, stop: asyncio.Event, work: Awaitable[Any]) -> None:
        """Run `work` unless `stop` comes first (then it is cancelled: a backfill page in
        hand rolls back and is read again next time)."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task not in done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return
        task.result()

    async def _backfill(self, phase: str) -> BackfillResult:
        self.state.phase = phase
        bf = Backfill(
            self.api,
            self.pool,
            schema=self.config.schema,
            catalog=self.catalog,
            collections=self.config.collections,
            concurrency=self.config.backfill_concurrency,
            on_progress=self._progress,
        )
        result = await bf.run()
        self.state.backfills.append(result)
        for name in result.done:
            BACKFILL_DONE.labels(name).set(1)
        for name in result.skipped:
            BACKFILL_DONE.labels(name).set(1)
        if self.config.on_backfill:
            self.config.on_backfill(result)
        log.info(
            "%s: %d objects from %d collections in %.1f s (%d skipped)",
            phase,
            result.objects,
            len(result.done),
            result.seconds,
            len(result.skipped),
        )
        return result

    async def _fill_upcoming(self) -> None:
        assert self.upcoming is not None
        result = await self.upcoming.fill_all()
        log.info(
            "upcoming invoices: %d fetched, %d stored, %d without one, %d failed",
            result.fetched,
            result.upserted,
            result.removed,
            len(result.failed),
        )

    def _progress(self, p: Progress) -> None:
        BACKFILL_DONE.labels(p.collection).set(1 if p.state in ("done", "skipped") else 0)
        if self.config.on_progress:
            self.config.on_progress(p)

    # ---- long downtime ------------------------------------------------------------------

    async def _rebackfill(self, stop: asyncio.Event, why: str) -> None:
        """The cursor is gone from Stripe's window: read everything again, then drop
        the rows of objects Stripe no longer lists (deleted while we were away)."""
        self.state.rebackfills += 1
        log.error(
            "LIVE SYNC CANNOT RESUME: %s. Changes made while stripesync was stopped are "
            "no longer in Stripe's events: backfilling every collection again.",
            why,
        )
        s = quote(self.config.schema)
        # what the re-backfill's copies will be dated at the least
        started = fetch_time(self.api.clock.now())
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {s}._backfill_cursor")
            await conn.execute(
                f"UPDATE {s}._collection_state SET state = 'pending', skipped_reason = NULL, "
                "objects = 0, pages = 0, finished_at = NULL, updated_at = now()"
            )
            await conn.execute(f"DELETE FROM {s}._events_cursor WHERE name = 'live'")
        await self._until(stop, self._backfill("rebackfill"))
        if self.upcoming is not None and not stop.is_set():
            await self._until(stop, self._fill_upcoming())
        if stop.is_set():
            return
        result = self.state.backfills[-1]
        removed = await self._sweep(result, started)
        log.warning(
            "re-backfill done: %d objects read again, %d rows of objects Stripe no longer "
            "has removed; the live sync resumes",
            result.objects,
            removed,
        )

    async def _sweep(self, result: BackfillResult, started: float) -> int:
        """Rows of fully listed collections that the re-backfill did not see."""
        s = quote(self.config.schema)
        removed = 0
        async with self.pool.connection() as conn, conn.transaction():
            for name in result.done:
                c = self.catalog[name]
                if not all(r.kind in (ReadKind.LIST, ReadKind.NESTED) for r in c.reads):
                    continue
                cur = await conn.execute(
                    f"WITH gone AS (DELETE FROM {s}.{quote(c.table)} "  # type: ignore[arg-type]
                    f"WHERE _stripe_time < to_timestamp(%s) RETURNING {quote(c.key)}) "
                    f"INSERT INTO {s}._deletions (collection, id, deleted_at, event_id) "
                    "SELECT %s, g.k, to_timestamp(%s), NULL FROM (SELECT "
                    f"{quote(c.key)} AS k FROM gone) g "
                    "ON CONFLICT (collection, id) DO NOTHING",
                    (started, name, started),
                )
                removed += max(cur.rowcount, 0)
        return removed

    # ---- after each batch of events ----------------------------------------------------

    def add_after_batch(self, hook: Callable[[Plan], Awaitable[None]]) -> None:
        self._after_batch_hooks.append(hook)

    async def _after_batch(self, plan: Plan) -> None:
        for hook in self._after_batch_hooks:
            await hook(plan)

    # ---- HTTP ----------------------------------------------------------------------------

    async def health(self) -> tuple[bool, dict[str, Any]]:
        details: dict[str, Any] = {"phase": self.state.phase}
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
            details["database"] = "ok"
            db_ok = True
        except (psycopg.Error, TimeoutError, OSError) as e:
            details["database"] = redact(f"unreachable: {type(e).__name__}")
            db_ok = False
        lag = self.live.lag_seconds()
        details["events_lag_seconds"] = None if lag is None else round(lag, 3)
        details["lag_budget_seconds"] = self.config.lag_budget
        ok = db_ok and lag is not None and lag <= self.config.lag_budget
        if lag is None:
            details["reason"] = "the live sync has not caught up yet"
        elif lag > self.config.lag_budget:
            details["reason"] = "the live sync is behind its lag budget"
        elif not db_ok:
            details["reason"] = "the database is unreachable"
        return ok, details

    async def _on_webhook(self, event: dict[str, Any]) -> None:
        self.live.nudge.set()

    async def webhook_secrets(self) -> list[str]:
        """Secrets given on the command line, and those of endpoints we registered (in
        the secrets table, which only its owner may read)."""
        secrets = list(self.config.webhook_secrets)
        prefix = WEBHOOK_SECRET_KEY + ":"
        schema = self.config.schema
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                    (f"{quote(schema)}.{quote(SECRETS_TABLE)}", f"{quote(schema)}._meta"),
                )
                row = await cur.fetchone()
                if row is not None and row[0]:
                    kept = await read_secrets(conn, schema, prefix)
                    secrets += [str(v["secret"]) for v in kept.values() if v.get("secret")]
                elif row is not None and row[1]:
                    # a schema an older version made: its secrets are still in _meta
                    # until the migration (which runs after the HTTP server starts)
                    cur = await conn.execute(
                        f"SELECT value ->> 'secret' FROM {quote(schema)}._meta "  # type: ignore[arg-type]
                        "WHERE starts_with(key, %s)",
                        (prefix,),
                    )
                    secrets += [r[0] for r in await cur.fetchall() if r[0]]
        except psycopg.errors.InsufficientPrivilege:
            log.warning(
                "this role may not read %s.%s: the secrets of webhook endpoints stripesync "
                "registered are not used (run stripesync as the owner of the schema's "
                "tables, or pass --webhook-secret)",
                schema,
                SECRETS_TABLE,
            )
        return secrets

    async def _start_http(self) -> None:
        if self.config.http_host is None:
            return
        EVENTS_LAG.set_function(
            lambda: float("nan") if (lag := self.live.lag_seconds()) is None else lag
        )
        self.errors = RecentErrors().install()
        routes = status_routes(
            StatusCollector(
                self.pool,
                self.config.schema,
                lag=self.live.lag_seconds,
                history=self.history,
                errors=self.errors,
                catalog=self.catalog,
                collections=self.config.collections,
                lag_budget=self.config.lag_budget,
                phase=lambda: self.state.phase,
                clock_offset=lambda: self.api.clock.offset if self.api.clock.known else None,
            )
        )
        app = create_app(
            health=self.health,
            webhook_secrets=await self.webhook_secrets(),
            on_webhook=self._on_webhook,
            routes=routes,
            auth_token=self.config.http_token,
        )
        self._sampler_stop.clear()
        self._sampler = asyncio.create_task(
            self.history.sample(self.live.lag_seconds, self._sampler_stop)
        )
        self.http = HttpServer(app, self.config.http_host, self.config.http_port)
        await self.http.start()
        log.info(
            "HTTP endpoints on %s (status page, /health, /metrics, /webhooks/stripe)",
            self.http.url,
        )
        if not self.config.http_token and not is_loopback(self.config.http_host):
            log.warning(
                "the status page and /metrics on %s are open to anyone who can reach them:"
                " set --http-token",
                self.config.http_host,
            )

    async def _start_proxy(self) -> None:
        if self.config.proxy_host is None:
            return
        if not self.config.database_url:
            raise ValueError("the proxy needs the database URL")
        if self.write_handler is None:
            # writes to synced tables go to Stripe first, then through the store
            self.write_handler = StripeWriteHandler(
                self.api, self.pool, schema=self.config.schema, catalog=self.catalog
            )
        workers = self.config.proxy_workers
        if workers > 1:
            if not self.config.api_key:
                raise ValueError("proxy workers need the Stripe key")
            self._peer_dir = Path(tempfile.mkdtemp(prefix="stripesync-proxy-"))
        self.proxy = ProxyServer(
            self.config.database_url,
            listen_host=self.config.proxy_host,
            listen_port=self.config.proxy_port,
            tls_cert=self.config.tls_cert,
            tls_key=self.config.tls_key,
            write_handler=self.write_handler,
            workers=workers,
            peer_dir=self._peer_dir,
        )
        await self.proxy.start()
        if workers > 1:
            assert self._peer_dir is not None
            self.proxy_workers = ProxyWorkers(
                workers,
                listen_host=self.config.proxy_host,
                listen_port=self.proxy.port,
                peer_dir=self._peer_dir,
                settings=WorkerSettings(
                    database_url=self.config.database_url,
                    schema=self.config.schema,
                    api_key=self.config.api_key,
                    api_base=self.api.api_base,
                    max_rps=self.api.limiter.rate / workers,
                    tls_cert=self.config.tls_cert,
                    tls_key=self.config.tls_key,
                    log_format=self.config.log_format,
                    log_level=self.config.log_level,
                ),
            )
            await self.proxy_workers.start()
        log.info(
            "PostgreSQL proxy on %s:%d (%d worker%s)",
            self.config.proxy_host,
            self.proxy.port,
            workers,
            "" if workers == 1 else "s",
        )

    async def _stop_proxy(self) -> None:
        if self.proxy_workers is not None:
            await self.proxy_workers.stop()
            self.proxy_workers = None
        if self.proxy is not None:
            await self.proxy.stop()
            self.proxy = None
        if self._peer_dir is not None:
            shutil.rmtree(self._peer_dir, ignore_errors=True)
            self._peer_dir = None

    async def _stop_http(self) -> None:
        if self._sampler is not None:
            self._sampler_stop.set()
            await asyncio.gather(self._sampler, return_exceptions=True)
            self._sampler = None
        if self.errors is not None:
            self.errors.uninstall()
            self.errors = None
        if self.http is not None:
            await self.http.stop()
            self.http = None


async def register_webhook(
    api: StripeApi,
    pool: AsyncConnectionPool,  # type: ignore[type-arg]
    schema: str,
    url: str,
) -> str:
    """Create (or update) the webhook endpoint that nudges the live sync. A new
    endpoint's secret is kept in the secrets table (its owner alone may read it), never
    printed. Returns the endpoint id."""
    page = await api.get("/v1/webhook_endpoints", {"limit": 100})
    existing = next((w for w in page.get("data", []) if w.get("url") == url), None)
    params: dict[str, Any] = {
        "enabled_events": ["*"],
        "description": "stripesync live sync nudges",
    }
    if existing is not None:
        await api.post(f"/v1/webhook_endpoints/{existing['id']}", {**params, "disabled": False})
        log.info("webhook endpoint %s (%s) updated", existing["id"], url)
        return str(existing["id"])
    created = await api.post("/v1/webhook_endpoints", {**params, "url": url})
    async with pool.connection() as conn:
        await keep_secret(
            conn,
            schema,
            f"{WEBHOOK_SECRET_KEY}:{created['id']}",
            {"secret": created.get("secret"), "url": url},
        )
    log.info(
        "webhook endpoint %s (%s) created; its secret is kept in %s.%s (readable by its "
        "owner only)",
        created["id"],
        url,
        schema,
        SECRETS_TABLE,
    )
    return str(created["id"])
