"""The Runner in-process: long downtime (an expired events cursor) and re-backfill."""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg
from psycopg_pool import AsyncConnectionPool

from stripesync.emulator.generator import generate
from stripesync.runner import RunConfig, Runner
from stripesync.stripe_api.client import StripeApi


async def _until_live(runner: Runner) -> None:
    deadline = time.monotonic() + 30
    while runner.state.phase != "live" or runner.live.polls == 0:
        assert time.monotonic() < deadline, runner.state
        await asyncio.sleep(0.05)


async def _run_until_live(api: StripeApi, pool: AsyncConnectionPool) -> Runner:  # type: ignore[type-arg]
    runner = Runner(api, pool, RunConfig(collections=["customer"], http_host=None))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await _until_live(runner)
    stop.set()
    await task
    return runner


async def test_an_expired_cursor_is_loud_rebackfills_and_removes_the_gone(
    emulator, database_url, caplog
) -> None:
    generate(emulator.state, customers=30, seed=4, subscriptions=0, charges=0)
    sdk = emulator.stripe()
    async with (
        AsyncConnectionPool(database_url, open=False, kwargs={"autocommit": True}) as pool,
        StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as api,
    ):
        first = await _run_until_live(api, pool)
        assert first.state.rebackfills == 0
        # while stripesync is away for more than 30 days: one customer deleted, one added
        gone = next(iter(emulator.state.store.objects("customer")))
        sdk.v1.customers.delete(gone)
        new = sdk.v1.customers.create(params={"email": "while-away@example.com"})
        async with pool.connection() as conn:
            # as if the first run had been 31 days ago
            await conn.execute(
                "UPDATE stripe._events_cursor SET event_created = %s WHERE name = 'live'",
                (int(time.time()) - 31 * 86400,),
            )
            await conn.execute(
                "UPDATE stripe.customer SET _stripe_time = _stripe_time - interval '31 days'"
            )
        with caplog.at_level(logging.WARNING, logger="stripesync"):
            second = await _run_until_live(api, pool)
        assert second.state.rebackfills == 1
        assert any("LIVE SYNC CANNOT RESUME" in r.getMessage() for r in caplog.records)
        async with pool.connection() as conn:
            ids = {r[0] for r in await (await conn.execute("SELECT id FROM stripe.customer"))
                   .fetchall()}
            tomb = await (await conn.execute(
                "SELECT count(*) FROM stripe._deletions WHERE id = %s", (gone,))).fetchone()
            cursor = await (await conn.execute(
                "SELECT event_created FROM stripe._events_cursor WHERE name = 'live'"
            )).fetchone()
    assert ids == set(emulator.state.store.objects("customer"))
    assert new.id in ids and gone not in ids
    assert tomb == (1,)
    assert cursor is not None and cursor[0] > time.time() - 3600  # a fresh cursor


async def test_a_database_outage_is_retried_not_fatal(emulator, database_url, pg_server) -> None:
    """The live sync survives a moment without its database and catches up."""
    async with (
        AsyncConnectionPool(database_url, open=False, kwargs={"autocommit": True},
                            max_size=4) as pool,
        StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as api,
    ):
        runner = Runner(api, pool, RunConfig(collections=["customer"], http_host=None,
                                             poll_interval=0.1))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await _until_live(runner)
        dbname = database_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
        c = emulator.stripe().v1.customers.create(params={"email": "after-outage@example.com"})
        deadline = time.monotonic() + 15
        found = None
        while time.monotonic() < deadline and not found:
            await asyncio.sleep(0.1)
            with psycopg.connect(database_url) as check:
                found = check.execute(
                    "SELECT email FROM stripe.customer WHERE id = %s", (c.id,)
                ).fetchone()
        assert not task.done()
        stop.set()
        await task
    assert found == ("after-outage@example.com",)


async def test_upcoming_invoices_are_filled_and_follow_events(emulator, database_url) -> None:
    generate(emulator.state, customers=6, seed=8, subscriptions=4, charges=0, invoiceitems=0)
    names = ["customer", "subscription", "invoiceitem", "upcoming_customer_invoice",
             "upcoming_subscription_invoice"]
    async with (
        AsyncConnectionPool(database_url, open=False, kwargs={"autocommit": True}) as pool,
        StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as api,
    ):
        runner = Runner(api, pool, RunConfig(collections=names, http_host=None,
                                             poll_interval=0.1))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await _until_live(runner)

        async def upcoming(cid: str) -> int | None:
            async with pool.connection() as conn:
                row = await (await conn.execute(
                    "SELECT amount_due FROM stripe.upcoming_customer_invoice "
                    "WHERE customer_id = %s", (cid,))).fetchone()
            return None if row is None else int(row[0])

        async with pool.connection() as conn:
            subs = await (await conn.execute(
                "SELECT id, customer_id FROM stripe.subscription WHERE status = 'active'"
            )).fetchall()
            n_sub_rows = await (await conn.execute(
                "SELECT count(*) FROM stripe.upcoming_subscription_invoice")).fetchone()
        assert subs and n_sub_rows == (len(subs),)
        cid = subs[0][1]
        before = await upcoming(cid)
        assert before is not None
        emulator.stripe().v1.invoice_items.create(
            params={"customer": cid, "amount": 1234, "currency": "usd"}
        )
        deadline = time.monotonic() + 10
        after = before
        while after == before and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            after = await upcoming(cid)
        stop.set()
        await task
    assert after == before + 1234


async def test_what_events_miss_is_relisted_while_live(emulator, database_url) -> None:
    """A country spec Stripe adds without an event arrives through the re-list."""
    async with (
        AsyncConnectionPool(database_url, open=False, kwargs={"autocommit": True}) as pool,
        StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as api,
    ):
        runner = Runner(api, pool, RunConfig(collections=["country_spec"], http_host=None,
                                             relist_interval=0.5))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await _until_live(runner)
        spec = {"id": "ZZ", "object": "country_spec", "default_currency": "zzz",
                "supported_bank_account_currencies": {}, "supported_payment_currencies": [],
                "supported_payment_methods": [], "supported_transfer_countries": [],
                "verification_fields": {}}
        emulator.load([spec])  # no event
        deadline = time.monotonic() + 10
        row = None
        while row is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            async with pool.connection() as conn:
                row = await (await conn.execute(
                    "SELECT default_currency FROM stripe.country_spec WHERE id = 'ZZ'"
                )).fetchone()
        stop.set()
        await task
    assert row == ("zzz",)


async def test_health_says_why_not(emulator, database_url) -> None:
    async with (
        AsyncConnectionPool(database_url, open=False, kwargs={"autocommit": True}) as pool,
        StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as api,
    ):
        runner = Runner(api, pool, RunConfig(collections=["customer"], http_host=None,
                                             lag_budget=5))
        ok, details = await runner.health()
        assert not ok and details["reason"] == "the live sync has not caught up yet"
        assert details["database"] == "ok"
        runner.live.caught_up_at = time.time() - 60  # a minute behind
        ok, details = await runner.health()
        assert not ok and details["reason"] == "the live sync is behind its lag budget"
        runner.live.caught_up_at = time.time()
        ok, details = await runner.health()
        assert ok and details["events_lag_seconds"] < 5
    # the pool is closed: the database is unreachable
    ok, details = await runner.health()
    assert not ok and details["database"].startswith("unreachable")
