"""The scheduled re-list against the emulator over real HTTP, into a real PostgreSQL."""

import asyncio
import time

import pytest

from stripesync.catalog import build_catalog
from stripesync.store import Incoming, Store
from stripesync.stripe_api.client import StripeApi
from stripesync.sync.events import plan_events
from stripesync.sync.relist import REMOVAL_MARGIN, Relister

CAT = build_catalog()
# the tables these tests touch (the re-listed collections and the children of accounts):
# migrating all of the catalog's would cost seconds per test
TABLES = [
    CAT[n]
    for n in (
        "account",
        "person",
        "bank_account",
        "source",
        "capability",
        "country_spec",
        "reporting.report_type",
        "balance",
        "balance_transaction",
    )
]






async def _rows(pool, q, *args):
    async with pool.connection() as conn:
        return await (await conn.execute(q, args or None)).fetchall()


async def _raw(pool, table, key="id"):
    return {k: raw for k, raw in await _rows(pool, f"SELECT {key}, _raw FROM stripe.{table}")}


def _spec(country, currency):
    return {
        "id": country,
        "object": "country_spec",
        "default_currency": currency,
        "supported_payment_currencies": [currency],
        "supported_payment_methods": ["card"],
        "supported_transfer_countries": [country],
        "supported_bank_account_currencies": {currency: [country]},
        "verification_fields": {},
    }


async def _age(pool, *tables):
    """As if the rows had been written a minute ago (a re-list removes only rows older
    than its start, less REMOVAL_MARGIN)."""
    async with pool.connection() as conn:
        for t in tables:
            await conn.execute(
                f"UPDATE stripe.{t} SET _stripe_time = _stripe_time - interval '1 minute'"
            )


def _stripe_objects(emulator, obj_type):
    return {i: rec.copy() for i, rec in emulator.state.store.objects(obj_type).items()}


def _silently_remove(emulator, obj_type, obj_id):
    """Gone at Stripe with no event, as Stripe does for what the re-list repairs."""
    store = emulator.state.store
    store.remove(store.get(obj_type, obj_id))


async def test_drift_is_repaired_new_objects_appear_and_vanished_rows_go(emulator, api, pool):
    emulator.load([_spec("US", "usd"), _spec("FR", "eur"), _spec("DE", "eur")])
    relister = Relister(api, pool, collections=["country_spec"])
    first = await relister.relist("country_spec")
    assert (first.listed, first.repaired, first.removed, first.skipped) == (3, 3, 0, None)
    assert await _raw(pool, "country_spec") == _stripe_objects(emulator, "country_spec")

    # behind the sync's back: a row edited in the database, an object created at Stripe
    # without an event, an object Stripe stopped listing
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE stripe.country_spec SET default_currency = 'xxx', "
            "_raw = jsonb_set(_raw, '{default_currency}', '\"xxx\"') WHERE id = 'US'"
        )
    emulator.load([_spec("JP", "jpy")])
    _silently_remove(emulator, "country_spec", "FR")
    await _age(pool, "country_spec")
    before = api.clock.now()  # Stripe's time, as tombstones are
    second = await relister.relist("country_spec")
    assert (second.listed, second.repaired, second.removed, second.skipped) == (3, 2, 1, None)
    assert second.requests == 1
    rows = await _raw(pool, "country_spec")
    assert rows == _stripe_objects(emulator, "country_spec")
    assert sorted(rows) == ["DE", "JP", "US"]
    assert (await _rows(pool, "SELECT default_currency FROM stripe.country_spec WHERE id = 'US'"))[
        0
    ][0] == "usd"
    # the removal is a tombstone at the start of the re-list: a late copy from before it
    # (an old event) does not bring the row back, a later listing does
    tomb = await _rows(
        pool,
        "SELECT id, extract(epoch FROM deleted_at)::float8 FROM stripe._deletions "
        "WHERE collection = 'country_spec'",
    )
    assert [t[0] for t in tomb] == ["FR"]
    assert before - REMOVAL_MARGIN <= tomb[0][1] <= api.clock.now() - REMOVAL_MARGIN
    store = Store()
    async with pool.connection() as conn:
        late = Incoming(_spec("FR", "eur"), stripe_time=tomb[0][1] - 1)
        assert (await store.upsert(conn, CAT["country_spec"], [late])).written == 0
    emulator.load([_spec("FR", "eur")])  # Stripe lists it again
    third = await relister.relist("country_spec")
    assert (third.listed, third.repaired, third.removed) == (4, 1, 0)
    assert sorted(await _raw(pool, "country_spec")) == ["DE", "FR", "JP", "US"]
    # nothing to repair: nothing repaired, nothing removed
    fourth = await relister.relist("country_spec")
    assert (fourth.listed, fourth.repaired, fourth.removed) == (4, 0, 0)
    state = await _rows(
        pool,
        "SELECT listed, repaired, removed, skipped_reason FROM stripe._relist_state "
        "WHERE collection = 'country_spec'",
    )
    assert state == [(4, 0, 0, None)]


async def test_rows_written_by_events_during_the_relist_survive(emulator, api, pool):
    emulator.load([_spec("US", "usd"), _spec("FR", "eur")])
    relister = Relister(api, pool, collections=["country_spec"])
    await relister.relist("country_spec")
    store = Store()
    async with pool.connection() as conn:
        # an event applied a second before the re-list starts (its time may even be
        # after the start: events' times are whole seconds)
        await store.upsert(
            conn, CAT["country_spec"], [Incoming(_spec("CA", "cad"), time.time() - 1)]
        )
    emulator.controls.configure(latency_ms=400)
    task = asyncio.create_task(relister.relist("country_spec"))
    await asyncio.sleep(0.15)  # the list request is in flight
    during = time.time()
    newer_us = {**_spec("US", "usd"), "default_currency": "cad"}
    async with pool.connection() as conn:
        # an event applied meanwhile: a newer state of a listed object, and an object
        # Stripe does not list (yet)
        await store.upsert(
            conn,
            CAT["country_spec"],
            [Incoming(newer_us, stripe_time=during), Incoming(_spec("BR", "brl"), during)],
        )
    result = await task
    emulator.controls.configure(latency_ms=0)
    assert (result.listed, result.repaired, result.removed) == (2, 0, 0)
    rows = await _raw(pool, "country_spec")
    assert rows["US"]["default_currency"] == "cad"  # the newer copy won
    assert rows["BR"]["default_currency"] == "brl"  # not removed: newer than the re-list
    assert sorted(rows) == ["BR", "CA", "FR", "US"]
    # a later round proves BR and CA absent and restores US
    await _age(pool, "country_spec")
    nxt = await relister.relist("country_spec")
    assert (nxt.listed, nxt.repaired, nxt.removed) == (2, 1, 2)
    assert await _raw(pool, "country_spec") == _stripe_objects(emulator, "country_spec")


async def test_accounts_persons_and_external_accounts(emulator, api, pool):
    sdk = emulator.stripe()
    a1 = sdk.v1.accounts.create(params={"type": "custom", "country": "US"})
    a2 = sdk.v1.accounts.create(params={"type": "custom", "country": "FR"})
    p1 = sdk.v1.accounts.persons.create(a1.id, params={"first_name": "Ann"})
    p2 = sdk.v1.accounts.persons.create(a1.id, params={"first_name": "Bob"})
    p3 = sdk.v1.accounts.persons.create(a2.id, params={"first_name": "Cid"})
    ba = sdk.v1.accounts.external_accounts.create(a1.id, params={"external_account": "btok_us"})
    relister = Relister(api, pool)
    assert {"account", "person", "bank_account", "balance"} <= set(relister.collections)
    order = relister.collections
    assert order.index("account") < order.index("person")
    assert order.index("account") < order.index("bank_account")

    accounts = await relister.relist("account")
    # the connected accounts and the platform's own (GET /v1/account)
    platform = (await api.get("/v1/account"))["id"]
    assert sorted(await _raw(pool, "account")) == sorted([a1.id, a2.id, platform])
    assert (accounts.listed, accounts.repaired, accounts.removed) == (3, 3, 0)

    # a customer's bank account: announced by customer.source.* events, so not re-listed
    # (and not removed, although Stripe does not list it here)
    async with pool.connection() as conn:
        await Store().upsert(
            conn,
            CAT["bank_account"],
            [Incoming({"id": "ba_customer", "object": "bank_account"}, 1.0, parent_id="cus_1")],
        )

    persons = await relister.relist("person")
    assert (persons.listed, persons.repaired, persons.removed) == (3, 3, 0)
    rows = dict(await _rows(pool, "SELECT id, _parent_id FROM stripe.person"))
    assert rows == {p1.id: a1.id, p2.id: a1.id, p3.id: a2.id}
    banks = await relister.relist("bank_account")
    assert (banks.listed, banks.repaired, banks.removed) == (1, 1, 0)
    rows = dict(await _rows(pool, "SELECT id, _parent_id FROM stripe.bank_account"))
    assert rows == {ba.id: a1.id, "ba_customer": "cus_1"}
    # one request per account (the platform's own included: it has no persons)
    assert persons.requests == 3

    # drift: a person edited in the database, one removed at Stripe, one added at Stripe
    # without an event; an external bank account gone without an event
    async with pool.connection() as conn:
        await conn.execute(
            'UPDATE stripe.person SET _raw = _raw || \'{"first_name": "Zed"}\' WHERE id = %s',
            (p1.id,),
        )
    _silently_remove(emulator, "person", p2.id)
    emulator.load([{"id": "person_new", "object": "person", "account": a2.id, "created": 1}])
    _silently_remove(emulator, "bank_account", ba.id)
    await _age(pool, "person", "bank_account", "account")
    persons = await relister.relist("person")
    assert (persons.listed, persons.repaired, persons.removed) == (3, 2, 1)
    stripe_persons = _stripe_objects(emulator, "person")
    assert await _raw(pool, "person") == stripe_persons
    assert sorted(stripe_persons) == sorted([p1.id, p3.id, "person_new"])
    banks = await relister.relist("bank_account")
    assert (banks.listed, banks.repaired, banks.removed) == (0, 0, 1)
    assert sorted(await _raw(pool, "bank_account")) == ["ba_customer"]

    # a connected account gone without an event: its row goes, and its children's rows
    _silently_remove(emulator, "account", a2.id)
    accounts = await relister.relist("account")
    assert (accounts.listed, accounts.repaired, accounts.removed) == (2, 0, 1)
    assert sorted(await _raw(pool, "account")) == sorted([a1.id, platform])
    assert sorted(await _raw(pool, "person")) == [p1.id]


async def test_balance_singleton_and_its_refresh_on_balance_available(emulator, api, pool):
    relister = Relister(api, pool)
    result = await relister.relist("balance")
    assert (result.listed, result.repaired, result.removed, result.requests) == (1, 1, 0, 1)
    stripe_balance = await api.get("/v1/balance")
    assert await _raw(pool, "balance", key="object") == {"balance": stripe_balance}

    changed = {**stripe_balance, "available": [{"amount": 4242, "currency": "usd"}]}
    emulator.load([changed])  # the balance moved
    assert (await api.get("/v1/balance"))["available"] == [{"amount": 4242, "currency": "usd"}]
    refreshed = await relister.refresh_balance()
    assert refreshed is not None and (refreshed.listed, refreshed.repaired) == (1, 1)
    assert await _raw(pool, "balance", key="object") == {"balance": changed}

    # the live sync's hook: a batch with balance.available refreshes, others do not
    later = {**stripe_balance, "available": [{"amount": 7, "currency": "usd"}]}
    emulator.load([later])
    other = {
        "id": "evt_1",
        "object": "event",
        "type": "customer.created",
        "created": 1,
        "data": {"object": {"id": "cus_1", "object": "customer"}},
    }
    await relister.after_batch(plan_events([other]))
    assert (await _raw(pool, "balance", key="object"))["balance"] == changed
    available = {
        "id": "evt_2",
        "object": "event",
        "type": "balance.available",
        "created": 2,
        "data": {"object": stripe_balance},
    }
    await relister.after_batch(plan_events([available]))
    assert (await _raw(pool, "balance", key="object"))["balance"] == later
    # not synced: no refresh
    assert await Relister(api, pool, collections=["country_spec"]).refresh_balance() is None


async def test_balance_transactions_are_relisted_from_a_window(emulator, api, pool):
    now = int(time.time())

    def txn(i, created):
        return {
            "id": f"txn_{i}",
            "object": "balance_transaction",
            "amount": 100 * i,
            "created": created,
            "currency": "usd",
            "status": "available",
        }

    emulator.load([txn(1, now - 60 * 86400), txn(2, now - 3600)])
    relister = Relister(api, pool, collections=["balance_transaction"])
    first = await relister.relist("balance_transaction")
    assert (first.listed, first.repaired, first.removed) == (2, 2, 0)
    # the next rounds read only the last week before the newest row, and remove nothing
    emulator.load([{**txn(2, now - 3600), "status": "pending"}, txn(3, now - 60)])
    _silently_remove(emulator, "balance_transaction", "txn_1")
    await _age(pool, "balance_transaction")
    second = await relister.relist("balance_transaction")
    assert (second.listed, second.repaired, second.removed) == (2, 2, 0)
    rows = await _raw(pool, "balance_transaction")
    assert sorted(rows) == ["txn_1", "txn_2", "txn_3"]
    assert rows["txn_2"]["status"] == "pending"


async def _run_for(relister, seconds):
    stop = asyncio.Event()
    task = asyncio.create_task(relister.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 5)


def _requests(api, path):
    return sum(n for (endpoint, status), n in api.stats.requests.items() if endpoint == path)


async def _relisted_at(pool):
    return dict(
        await _rows(
            pool,
            "SELECT collection, extract(epoch FROM relisted_at)::float8 FROM stripe._relist_state",
        )
    )


async def test_the_schedule_repeats_and_survives_a_restart(emulator, pool):
    emulator.load([_spec("US", "usd")])
    names = ["country_spec", "reporting.report_type"]
    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=1000) as api:
        relister = Relister(api, pool, collections=names, interval=0.2)
        assert relister.collections == names
        stop = asyncio.Event()
        task = asyncio.create_task(relister.run(stop))
        await asyncio.sleep(0.5)
        emulator.load([_spec("JP", "jpy")])  # picked up by a later round
        await asyncio.sleep(0.6)
        stop.set()
        await asyncio.wait_for(task, 5)
        # every 0.2 s for 1.1 s; report types staggered by half an interval
        assert 3 <= _requests(api, "/v1/country_specs") <= 7
        assert 3 <= _requests(api, "/v1/reporting/report_types") <= 7
    assert sorted(await _raw(pool, "country_spec")) == ["JP", "US"]
    stored = await _relisted_at(pool)
    assert set(stored) == set(names) and all(time.time() - t < 0.5 for t in stored.values())

    # a restart an hour-interval later: what was just re-listed is not due; balance, never
    # re-listed, starts at once (first of the stagger); report types are not due either
    names = ["country_spec", "reporting.report_type", "balance"]
    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=1000) as api:
        await _run_for(Relister(api, pool, collections=names, interval=3600), 0.4)
        assert _requests(api, "/v1/country_specs") == 0
        assert _requests(api, "/v1/reporting/report_types") == 0
        assert _requests(api, "/v1/balance") == 1
    assert (await _relisted_at(pool))["country_spec"] == stored["country_spec"]

    # two hours later (as the database tells it), country specs are due, once
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE stripe._relist_state SET relisted_at = now() - interval '2 hours' "
            "WHERE collection = 'country_spec'"
        )
    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=1000) as api:
        await _run_for(Relister(api, pool, collections=names, interval=3600), 0.4)
        assert _requests(api, "/v1/country_specs") == 1
        assert _requests(api, "/v1/reporting/report_types") == 0
        assert _requests(api, "/v1/balance") == 0
    assert time.time() - (await _relisted_at(pool))["country_spec"] < 1


async def test_first_relists_are_spread_over_the_interval(emulator, api, pool):
    names = ["country_spec", "reporting.report_type", "balance"]
    await _run_for(Relister(api, pool, collections=names, interval=3.0), 0.5)
    # slots at 0, 1 and 2 s: only the first is due within half a second
    assert _requests(api, "/v1/country_specs") == 1
    assert _requests(api, "/v1/reporting/report_types") == 0
    assert _requests(api, "/v1/balance") == 0


async def test_a_refused_collection_does_not_stop_the_others(emulator, pool):
    emulator.load([_spec("US", "usd")])
    emulator.load(
        [{"id": "balance.summary.1", "object": "reporting.report_type", "name": "Summary"}]
    )
    emulator.controls.restrict("rk_test_limited", {"*": "read", "country_spec": "none"})
    names = ["country_spec", "reporting.report_type"]
    async with StripeApi("rk_test_limited", api_base=emulator.url, max_rps=1000) as api:
        relister = Relister(api, pool, collections=names, interval=0.2)
        await _run_for(relister, 0.7)
        assert _requests(api, "/v1/reporting/report_types") >= 3
        assert _requests(api, "/v1/country_specs") >= 3  # tried again each round
    refused = relister.results["country_spec"]
    assert not refused.ok and "permission denied" in refused.skipped
    assert relister.results["reporting.report_type"].ok
    assert sorted(await _raw(pool, "reporting_report_type")) == ["balance.summary.1"]
    assert await _raw(pool, "country_spec") == {}
    state = dict(await _rows(pool, "SELECT collection, skipped_reason FROM stripe._relist_state"))
    assert "permission denied" in state["country_spec"]
    assert state["reporting.report_type"] is None


async def test_what_is_relisted(api):
    pool = None  # choosing the collections reads nothing
    relister = Relister(api, pool)
    relisted = set(relister.collections)
    assert {
        "account",
        "person",
        "bank_account",
        "country_spec",
        "reporting.report_type",
        "balance",
        "balance_transaction",
        "invoiceitem",  # pending items change without an event
    } == relisted
    # application is marked, but Stripe has no list of applications
    assert CAT["application"].relist and "application" not in relisted
    sub = Relister(api, pool, collections=["customer", "person", "balance"])
    assert sub.collections == ["balance", "person"]  # parents first
    with pytest.raises(ValueError, match="not re-listed"):
        await sub.relist("customer")


async def test_a_failing_collection_is_retried_and_does_not_stop_the_others(emulator, pool):
    emulator.load([_spec("US", "usd")])
    emulator.controls.fault("500", "/v1/country_specs", times=2)
    names = ["country_spec", "reporting.report_type"]
    async with StripeApi(
        "sk_test_emulator", api_base=emulator.url, max_rps=1000, max_retries=0
    ) as api:
        relister = Relister(api, pool, collections=names, interval=0.2)
        await _run_for(relister, 0.9)
        assert _requests(api, "/v1/reporting/report_types") >= 3
        # two failures, then re-listed
        assert api.stats.requests[("/v1/country_specs", 500)] == 2
        assert api.stats.requests[("/v1/country_specs", 200)] >= 1
    assert relister.results["country_spec"].ok
    assert sorted(await _raw(pool, "country_spec")) == ["US"]
