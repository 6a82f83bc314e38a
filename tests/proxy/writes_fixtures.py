"""Fixtures for the write tests: a migrated database, the emulator as Stripe, and a proxy
with the StripeWriteHandler in front of the database.

- ``stripe_database`` (module): a database with schema ``stripe`` migrated once.
- ``writes`` (function): every table of that schema emptied, the emulator reset, a proxy
  with a :class:`StripeWriteHandler` (StripeApi on the emulator, a pool on the database);
  a :class:`WriteRig` with ``connect()`` (through the proxy), ``direct()`` (straight to
  the database) and ``stripe`` (the SDK on the emulator).
- ``handler_proxy(start_proxy, upstream_url, api, store_url)``: another proxy with a
  handler whose store connections use ``store_url`` (a role's, say); yields
  ``(proxy, pool)``, the pool closed afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import stripe
from psycopg_pool import AsyncConnectionPool

from stripesync.proxy.hooks import ExtendedCall, ProxySession
from stripesync.proxy.messages import Query
from stripesync.proxy.writes import StripeWriteHandler
from stripesync.schema.migrate import migrate
from stripesync.stripe_api.client import StripeApi
from tests.plugins.emulator import EmulatorHandle
from tests.plugins.postgres import PgServer

if TYPE_CHECKING:  # conftest imports this module
    from tests.proxy.conftest import RunningProxy


async def _migrate(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await migrate(conn, "stripe")


@pytest.fixture(scope="module")
def stripe_database(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.unique_name("writes")
    url = pg_server.create_database(name)
    asyncio.run(_migrate(url))
    try:
        yield url
    finally:
        pg_server.drop_database(name)


_EMPTY_ALL = """DO $$DECLARE t text; BEGIN
  SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO t
  FROM pg_tables WHERE schemaname = 'stripe'
    AND tablename NOT IN ('_meta', '_collection_state');
  EXECUTE 'TRUNCATE ' || t;
END$$"""


@dataclass
class WriteRig:
    proxy: RunningProxy
    database_url: str
    emulator: EmulatorHandle
    handler: CountingHandler
    api: StripeApi

    @property
    def url(self) -> str:
        return self.proxy.url(self.database_url)

    def connect(self, **options: Any) -> psycopg.Connection[Any]:
        """A client connection through the proxy."""
        options.setdefault("autocommit", True)
        return psycopg.connect(self.url, **options)

    def direct(self) -> psycopg.Connection[Any]:
        """A connection straight to the database (what is stored)."""
        return psycopg.connect(self.database_url, autocommit=True)

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.direct() as conn:
            return conn.execute(sql, params).fetchall()

    @property
    def stripe(self) -> stripe.StripeClient:
        return self.emulator.stripe()


class CountingHandler(StripeWriteHandler):
    """The handler, counting which path each claimed statement took."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = {"query": 0, "execute": 0, "passed": 0}
        self.claimed: list[ExtendedCall] = []  # the extended calls it took over

    async def handle_query(self, session: ProxySession, query: Query) -> bool:
        self.calls["query"] += 1  # before the reply reaches the client
        done = await super().handle_query(session, query)
        if not done:
            self.calls["query"] -= 1
            self.calls["passed"] += 1
        return done

    async def handle_execute(self, session: ProxySession, call: ExtendedCall) -> bool:
        self.calls["execute"] += 1
        done = await super().handle_execute(session, call)
        if not done:
            self.calls["execute"] -= 1
            self.calls["passed"] += 1
        else:
            self.claimed.append(call)
        return done


@contextmanager
def handler_proxy(
    start_proxy: Callable[..., RunningProxy],
    upstream_url: str,
    api: StripeApi,
    store_url: str,
    **handler_options: Any,
) -> Iterator[tuple[RunningProxy, AsyncConnectionPool[Any]]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(store_url, open=False)
    handler = StripeWriteHandler(api, pool, **handler_options)
    proxy = start_proxy(upstream_url, write_handler=handler)
    proxy.call(pool.open(wait=True))
    try:
        yield proxy, pool
    finally:
        proxy.call(pool.close())


@pytest.fixture
def writes(
    stripe_database: str,
    emulator: EmulatorHandle,
    start_proxy: Callable[..., RunningProxy],
) -> Iterator[WriteRig]:
    with psycopg.connect(stripe_database, autocommit=True) as conn:
        conn.execute(_EMPTY_ALL)
    api = StripeApi("sk_test_writes", api_base=emulator.url, max_rps=5000, max_retries=1)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        stripe_database, open=False, min_size=1, max_size=4
    )
    handler = CountingHandler(api, pool)
    proxy = start_proxy(stripe_database, write_handler=handler)
    proxy.call(pool.open(wait=True))
    try:
        yield WriteRig(proxy, stripe_database, emulator, handler, api)
    finally:
        proxy.call(pool.close())
        proxy.call(api.close())
