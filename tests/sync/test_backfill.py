"""The backfill against the emulator over real HTTP, into a real PostgreSQL."""

import asyncio

import pytest

from stripesync.catalog import build_catalog
from stripesync.emulator.generator import generate
from stripesync.stripe_api.client import StripeApi
from stripesync.sync.backfill import Backfill

CAT = build_catalog()




async def _rows(pool, q, *args):
    async with pool.connection() as conn:
        return await (await conn.execute(q, args or None)).fetchall()


async def test_backfill_lands_every_object_exactly(emulator, pool):
    generate(emulator.state, customers=60, seed=7)
    api = StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500)
    async with api:
        result = await Backfill(api, pool, concurrency=16).run()
    assert result.objects > 0
    # every customer, charge and subscription the emulator has, byte-for-byte in _raw
    for name, path, params in (
        ("customer", "/v1/customers", {}),
        ("charge", "/v1/charges", {}),
        ("subscription", "/v1/subscriptions", {"status": "all"}),
        ("price", "/v1/prices", {}),
    ):
        async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as a:
            expected = {}
            params = {**params, "limit": 100}
            while True:
                page = await a.get(path, params)
                expected.update({o["id"]: o for o in page["data"]})
                if not page["has_more"]:
                    break
                params["starting_after"] = page["data"][-1]["id"]
        rows = await _rows(pool, f"SELECT id, _raw FROM stripe.{CAT[name].table}")
        assert expected, name
        assert {r[0]: r[1] for r in rows} == expected, name
    # children through their parents: invoice lines and customers' tax ids
    lines = await _rows(pool, "SELECT count(*), count(DISTINCT _parent_id) FROM stripe.line_item")
    invoices = await _rows(pool, "SELECT count(*) FROM stripe.invoice")
    assert lines[0][0] > 0 and lines[0][1] == invoices[0][0]
    states = dict(await _rows(pool, "SELECT collection, state FROM stripe._collection_state"))
    assert states["customer"] == "done" and states["line_item"] == "done"
    # typed columns agree with the raw objects
    typed = await _rows(
        pool,
        "SELECT amount, customer_id, extract(epoch FROM created)::bigint, _raw "
        "FROM stripe.charge LIMIT 20",
    )
    for amount, customer_id, created, raw in typed:
        assert amount == raw["amount"] and created == raw["created"]
        assert customer_id == raw["customer"]


async def test_refused_collections_are_recorded_and_the_rest_finish(emulator, pool):
    generate(emulator.state, customers=10, seed=1)
    emulator.controls.restrict("rk_test_limited", {"*": "read", "charge": "none"})
    async with StripeApi("rk_test_limited", api_base=emulator.url, max_rps=500) as api:
        result = await Backfill(api, pool, collections=["customer", "charge"]).run()
    assert "charge" in result.skipped and "permission" in result.skipped["charge"]
    assert result.done == ["customer"]
    rows = await _rows(
        pool,
        "SELECT state, skipped_reason FROM stripe._collection_state WHERE collection = %s",
        "charge",
    )
    assert rows[0][0] == "skipped" and rows[0][1]
    assert (await _rows(pool, "SELECT count(*) FROM stripe.customer"))[0][0] == 10


async def test_a_killed_backfill_resumes_and_converges(emulator, pool):
    generate(emulator.state, customers=450, seed=3, subscriptions=0, charges=0)
    emulator.controls.configure(latency_ms=20)
    pages = asyncio.Event()

    def progress(p):
        if p.collection == "customer" and p.pages >= 3:
            pages.set()

    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as api:
        task = asyncio.create_task(
            Backfill(api, pool, collections=["customer"], concurrency=2, on_progress=progress).run()
        )
        await asyncio.wait_for(pages.wait(), 30)
        task.cancel()  # killed mid-flight: whatever page was in hand is rolled back
        with pytest.raises(asyncio.CancelledError):
            await task
    partial = (await _rows(pool, "SELECT count(*) FROM stripe.customer"))[0][0]
    assert 0 < partial < 450
    emulator.controls.configure(latency_ms=0)
    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as api:
        second = await Backfill(api, pool, collections=["customer"], concurrency=4).run()
    assert second.done == ["customer"] and not second.skipped
    ids = await _rows(pool, "SELECT id FROM stripe.customer")
    assert len(ids) == 450 == len(emulator.state.store.objects("customer"))
    # the resumed run did not start over
    assert second.objects < 450


async def test_429s_are_retried_and_the_backfill_converges(emulator, pool):
    """Asking more of the API than it allows: Stripe answers 429, the client backs off
    and retries, and nothing is lost."""
    generate(emulator.state, customers=1200, seed=5, subscriptions=0, charges=0)
    emulator.controls.configure(rate_limit=5)  # the burst is smaller than the 12 pages
    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=60) as api:
        result = await Backfill(api, pool, collections=["customer"]).run()
        assert api.stats.rate_limited > 0 and api.stats.retries >= api.stats.rate_limited
    assert result.done == ["customer"] and not result.skipped
    ids = {r[0] for r in await _rows(pool, "SELECT id FROM stripe.customer")}
    assert ids == set(emulator.state.store.objects("customer"))


async def test_the_client_stays_within_its_rate(emulator, pool):
    """Within the limit the API sets, the backfill's own limiter keeps it under: no 429,
    and no second with more requests than allowed."""
    import time

    generate(emulator.state, customers=5000, seed=6, subscriptions=0, charges=0)
    emulator.controls.configure(rate_limit=40, latency_ms=5)
    seconds: list[float] = []
    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=40) as api:
        acquire = api.limiter.acquire

        async def timed() -> None:
            await acquire()
            seconds.append(time.monotonic())  # the moment a request may go

        api.limiter.acquire = timed  # type: ignore[method-assign]
        result = await Backfill(api, pool, collections=["customer"]).run()
        assert api.stats.rate_limited == 0
    assert result.done == ["customer"]
    assert len(seconds) > 40  # long enough to measure
    # any window of one second holds at most the rate plus the limiter's small burst
    busiest = max(
        sum(1 for t in seconds if start <= t < start + 1.0) for start in seconds
    )
    assert busiest <= 40 + 4, busiest
    ids = await _rows(pool, "SELECT count(*) FROM stripe.customer")
    assert ids[0][0] == 5000
