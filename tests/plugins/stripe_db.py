"""Fixtures for the sync's tests: a migrated `stripe` schema behind a connection pool, and
a StripeApi client of the emulator.

A test module that names `TABLES` (catalog names or collections) gets only those tables;
otherwise every collection's table is created.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from stripesync.catalog import Collection, build_catalog
from stripesync.schema.migrate import migrate
from stripesync.stripe_api.client import StripeApi


@pytest.fixture
async def pool(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Any]:
    wanted = getattr(request.module, "TABLES", None)
    collections: list[Collection] | None = None
    if wanted is not None:
        catalog = build_catalog()
        collections = [c if isinstance(c, Collection) else catalog[c] for c in wanted]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        await migrate(c, "stripe", collections)
    async with AsyncConnectionPool(
        database_url, min_size=1, max_size=8, open=False, kwargs={"autocommit": True}
    ) as p:
        yield p


@pytest.fixture
async def api(emulator: Any) -> AsyncIterator[StripeApi]:
    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=1000) as a:
        yield a
