"""The upcoming-invoice tables against the emulator over HTTP, into a real PostgreSQL."""

import time
from collections import Counter

import httpx

from stripesync.catalog import build_catalog
from stripesync.catalog.entries import PRE_BASIL_VERSION
from stripesync.store import Incoming, Store
from stripesync.stripe_api.client import StripeApi
from stripesync.sync.backfill import Backfill
from stripesync.sync.events import plan_events
from stripesync.sync.upcoming import UpcomingInvoices

CAT = build_catalog()
UPCOMING = "/v1/invoices/upcoming"
PREVIEW = "/v1/invoices/create_preview"
TABLES = (
    "customer",
    "subscription",
    "subscription_item",
    "event",
    "upcoming_customer_invoice",
    "upcoming_subscription_invoice",
)






def _price(client, amount):
    return client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "product_data": {"name": f"plan {amount}"},
        }
    )


def _account(emulator):
    """a: two subscriptions (1000 + 500); b: one (2 x 500); c: nothing to bill."""
    client = emulator.stripe()
    p1000, p500 = _price(client, 1000), _price(client, 500)
    # each with a card, so that their subscriptions' first invoices are paid (active)
    a, b, c = (client.v1.customers.create(params={"name": n, "source": "tok_visa"}) for n in "abc")

    def sub(cus, price, qty=1):
        items = [{"price": price.id, "quantity": qty}]
        return client.v1.subscriptions.create(params={"customer": cus.id, "items": items}).id

    subs = {"a1": sub(a, p1000), "a2": sub(a, p500), "b": sub(b, p500, 2)}
    return client, {"a": a.id, "b": b.id, "c": c.id}, subs, {"1000": p1000.id, "500": p500.id}


async def _backfill(api, pool):
    result = await Backfill(api, pool, collections=["customer", "subscription"]).run()
    assert not result.skipped


async def _rows(pool, table, key):
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {key}, amount_due, customer_id, _raw, extract(epoch FROM _stripe_time) "
            f"FROM stripe.{table}"
        )
        return {r[0]: r[1:] for r in await cur.fetchall()}


async def _amounts(pool):
    cus = await _rows(pool, "upcoming_customer_invoice", "customer_id")
    sub = await _rows(pool, "upcoming_subscription_invoice", "subscription_id")
    return {k: v[0] for k, v in cus.items()}, {k: v[0] for k, v in sub.items()}


def _upcoming(emulator, **params):
    r = httpx.get(
        f"{emulator.url}{UPCOMING}",
        params=params,
        headers={"Authorization": "Bearer sk_test_emulator", "Stripe-Version": PRE_BASIL_VERSION},
    )
    return r.status_code, r.json()


def _record(api):
    """Count the requests the module makes, by (method, path, params)."""
    seen: Counter = Counter()
    request = api.request

    async def recording(method, path, params=None, **kw):
        seen[(method.upper(), path, tuple(sorted((params or {}).items())))] += 1
        return await request(method, path, params, **kw)

    api.request = recording
    return seen


async def test_fill_all_matches_the_emulators_previews(emulator, pool, api):
    client, cus, subs, _ = _account(emulator)
    await _backfill(api, pool)
    started = time.time()
    up = UpcomingInvoices(api, pool)
    result = await up.fill_all()
    assert (result.fetched, result.upserted, result.removed, result.failed) == (6, 5, 0, {})
    assert not up.fallback
    by_cus = await _rows(pool, "upcoming_customer_invoice", "customer_id")
    by_sub = await _rows(pool, "upcoming_subscription_invoice", "subscription_id")
    assert {k: v[0] for k, v in by_cus.items()} == {cus["a"]: 1500, cus["b"]: 1000}
    assert {k: v[0] for k, v in by_sub.items()} == {
        subs["a1"]: 1000,
        subs["a2"]: 500,
        subs["b"]: 1000,
    }
    # the rows are Stripe's own previews: same amounts and lines as asking it directly
    for name in ("a", "b"):
        status, direct = _upcoming(emulator, customer=cus[name])
        amount, customer_id, raw, stripe_time = by_cus[cus[name]]
        assert status == 200 and (amount, customer_id) == (direct["amount_due"], cus[name])
        assert raw["object"] == "invoice" and raw["total"] == direct["total"]
        assert sorted(x["amount"] for x in raw["lines"]["data"]) == sorted(
            x["amount"] for x in direct["lines"]["data"]
        )
        assert started - 1 <= stripe_time <= time.time() + 1
    for name, sid in subs.items():
        preview = client.v1.invoices.create_preview(params={"subscription": sid})
        amount, customer_id, raw, _ = by_sub[sid]
        assert amount == preview.amount_due and customer_id == cus[name[0]]
        assert [x["subscription"] for x in raw["lines"]["data"]] == [sid]
    # "no upcoming invoice" is Stripe's 404, and customer c has no row
    status, body = _upcoming(emulator, customer=cus["c"])
    assert status == 404 and body["error"]["code"] == "invoice_upcoming_none"
    assert cus["c"] not in by_cus


async def test_a_row_goes_without_a_tombstone_and_comes_back(emulator, pool, api):
    client, cus, _, _ = _account(emulator)
    coll = CAT["upcoming_customer_invoice"]
    stale = {"object": "invoice", "customer": cus["c"], "amount_due": 999, "created": 1}
    async with pool.connection() as conn:
        await Store().upsert(
            conn, coll, [Incoming(stale, stripe_time=time.time() - 60, key=cus["c"])]
        )
    up = UpcomingInvoices(api, pool)
    result = await up.refresh([cus["c"]], [])
    assert (result.fetched, result.upserted, result.removed) == (1, 0, 1)
    assert cus["c"] not in (await _amounts(pool))[0]
    async with pool.connection() as conn:
        assert await (await conn.execute("SELECT count(*) FROM stripe._deletions")).fetchall() == [
            (0,)
        ]
    # a pending invoice item gives c an upcoming invoice again
    client.v1.invoice_items.create(params={"customer": cus["c"], "amount": 321, "currency": "usd"})
    result = await up.refresh([cus["c"]], [])
    assert (result.upserted, result.removed) == (1, 0)
    assert (await _amounts(pool))[0] == {cus["c"]: 321}


async def test_events_refresh_what_they_can_change(emulator, pool, api):
    client, cus, subs, _ = _account(emulator)
    await _backfill(api, pool)
    up = UpcomingInvoices(api, pool)
    await up.fill_all()
    newest = (await api.get("/v1/events", {"limit": 1}))["data"][0]["id"]
    # an invoice item for a: every preview of a changes (pending items go into each)
    client.v1.invoice_items.create(params={"customer": cus["a"], "amount": 250, "currency": "usd"})
    # b's subscription ends: its rows go
    client.v1.subscriptions.cancel(subs["b"])
    events = (await api.get("/v1/events", {"limit": 100, "ending_before": newest}))["data"]
    assert {e["type"] for e in events} >= {"invoiceitem.created", "customer.subscription.deleted"}
    plan = plan_events(list(reversed(events)), catalog=CAT)
    customers, subscriptions = await up.affected(plan)
    assert customers == {cus["a"], cus["b"]}
    assert subscriptions == {subs["a1"], subs["a2"], subs["b"]}
    result = await up.refresh_for(plan)
    assert (result.fetched, result.failed) == (5, {})
    by_cus, by_sub = await _amounts(pool)
    assert by_cus == {cus["a"]: 1750}
    assert by_sub == {subs["a1"]: 1250, subs["a2"]: 750}
    assert by_cus[cus["a"]] == _upcoming(emulator, customer=cus["a"])[1]["amount_due"]
    assert by_sub[subs["a1"]] == _upcoming(emulator, subscription=subs["a1"])[1]["amount_due"]


async def test_affected_follows_prices_coupons_and_tax_rates(emulator, pool, api):
    _, cus, subs, prices = _account(emulator)
    await _backfill(api, pool)
    store = Store()
    sub_cat, cus_cat = CAT["subscription"], CAT["customer"]
    taxed = {
        "id": "sub_taxed",
        "object": "subscription",
        "customer": "cus_taxed",
        "status": "active",
        "default_tax_rates": [{"id": "txr_1", "object": "tax_rate"}],
        "items": {"object": "list", "data": [], "has_more": False},
    }
    ended = {**taxed, "id": "sub_ended", "status": "canceled"}
    discounted = {
        "id": "cus_disc",
        "object": "customer",
        "discount": {"object": "discount", "source": {"coupon": "co_1", "type": "coupon"}},
    }
    async with pool.connection() as conn:
        await store.upsert(
            conn, sub_cat, [Incoming(taxed, stripe_time=1), Incoming(ended, stripe_time=1)]
        )
        await store.upsert(conn, cus_cat, [Incoming(discounted, stripe_time=1)])
    up = UpcomingInvoices(api, pool)

    def ev(obj):
        return {"id": "evt_x", "type": f"{obj['object']}.updated", "data": {"object": obj}}

    assert await up.affected([ev({"object": "price", "id": prices["500"]})]) == (
        {cus["a"], cus["b"]},
        {subs["a2"], subs["b"]},
    )
    assert await up.affected([ev({"object": "plan", "id": prices["1000"]})]) == (
        {cus["a"]},
        {subs["a1"]},
    )
    assert await up.affected([ev({"object": "tax_rate", "id": "txr_1"})]) == (
        {"cus_taxed"},
        {"sub_taxed"},
    )
    assert await up.affected([ev({"object": "coupon", "id": "co_1"})]) == ({"cus_disc"}, set())
    # a subscription's own change: it and its customer, not its siblings
    sub_ev = ev({"object": "subscription", "id": subs["a1"], "customer": cus["a"]})
    assert await up.affected([sub_ev]) == ({cus["a"]}, {subs["a1"]})
    # a customer's change reaches all of its live subscriptions
    assert await up.affected([ev({"object": "customer", "id": cus["a"]})]) == (
        {cus["a"]},
        {subs["a1"], subs["a2"]},
    )
    # an invoice (basil shape: the subscription under parent) and a charge
    invoice = {
        "object": "invoice",
        "id": "in_1",
        "customer": cus["b"],
        "parent": {"subscription_details": {"subscription": subs["b"]}},
    }
    charge = {"object": "charge", "id": "ch_1", "customer": cus["a"]}
    assert await up.affected([ev(invoice), ev(charge)]) == ({cus["b"]}, {subs["b"]})


async def test_falls_back_to_create_preview_when_the_endpoint_is_refused(emulator, pool, api):
    client, cus, subs, _ = _account(emulator)
    await _backfill(api, pool)
    seen = _record(api)
    # a Stripe-Version after 2025-03-31 no longer has GET /v1/invoices/upcoming: 404
    up = UpcomingInvoices(api, pool, upcoming_version="2025-03-31.basil", concurrency=1)
    result = await up.fill_all()
    assert up.fallback and "Unrecognized request URL" in (up.fallback_reason or "")
    assert (result.fetched, result.upserted, result.removed, result.failed) == (6, 5, 0, {})
    by_cus, by_sub = await _amounts(pool)
    assert by_sub == {subs["a1"]: 1000, subs["a2"]: 500, subs["b"]: 1000}
    # per customer: the preview of one of its live subscriptions (whose period ends first)
    (chosen,) = [
        dict(k[2])["subscription"]
        for k in seen
        if k[1] == PREVIEW and dict(k[2]).get("customer") == cus["a"]
    ]
    assert chosen in (subs["a1"], subs["a2"]) and by_cus[cus["a"]] == by_sub[chosen]
    assert by_cus[cus["b"]] == 1000
    assert cus["c"] not in by_cus
    refused = [k for k in seen if k[1] == UPCOMING]
    assert len(refused) == 1  # remembered after the first refusal
    previews = Counter(dict(k[2]).get("subscription") for k in seen if k[1] == PREVIEW)
    assert previews[subs["b"]] == 2  # for b and for its subscription
    # the fallback holds for the API client, whatever UpcomingInvoices is made next
    seen.clear()
    client.v1.invoice_items.create(params={"customer": cus["b"], "amount": 5, "currency": "usd"})
    await UpcomingInvoices(api, pool).refresh([cus["b"]], [subs["b"]])
    assert {k[:2] for k in seen} == {("POST", PREVIEW)} and sum(seen.values()) == 2
    assert (await _amounts(pool))[0][cus["b"]] == 1005


async def test_an_invalid_version_is_a_refusal_too(emulator, pool):
    _, cus, _, _ = _account(emulator)
    async with StripeApi("sk_test_emulator", api_base=emulator.url, max_rps=500) as api:
        await _backfill(api, pool)
        up = UpcomingInvoices(api, pool, upcoming_version="not-a-version")
        result = await up.refresh([cus["b"]], [])
        assert up.fallback and "version" in (up.fallback_reason or "")
        assert (result.upserted, result.failed) == (1, {})
    assert (await _amounts(pool))[0] == {cus["b"]: 1000}


async def test_one_request_per_distinct_id(emulator, pool, api):
    client = emulator.stripe()
    price = _price(client, 700)
    customers = [client.v1.customers.create(params={"source": "tok_visa"}).id for _ in range(5)]
    subs = [
        client.v1.subscriptions.create(params={"customer": c, "items": [{"price": price.id}]}).id
        for c in customers[:3]
    ]
    seen = _record(api)
    ids = [customers[i % 5] for i in range(20)]  # 20 ids, 5 distinct
    result = await UpcomingInvoices(api, pool).refresh(ids, subs * 4)
    assert result.fetched == 8 and result.failed == {}
    assert sorted(seen.values()) == [1] * 8
    assert {dict(k[2]).get("customer") for k in seen} - {None} == set(customers)
    assert {dict(k[2]).get("subscription") for k in seen} - {None} == set(subs)
    assert api.stats.requests[(UPCOMING, 200)] == 6 and api.stats.requests[(UPCOMING, 404)] == 2
    by_cus, by_sub = await _amounts(pool)
    assert by_cus == dict.fromkeys(customers[:3], 700) and by_sub == dict.fromkeys(subs, 700)


async def test_a_failed_preview_leaves_its_row_and_the_rest_are_written(emulator, pool):
    _, cus, subs, _ = _account(emulator)
    async with StripeApi(
        "sk_test_emulator", api_base=emulator.url, max_rps=500, max_retries=0
    ) as api:
        up = UpcomingInvoices(api, pool, concurrency=1)
        await up.refresh([cus["a"]], [])
        emulator.controls.fault("500", UPCOMING, nth=1)
        result = await up.refresh([cus["a"]], [subs["b"]])
    assert list(result.failed) == [cus["a"]] and "500" in result.failed[cus["a"]]
    assert result.upserted == 1 and not up.fallback  # a 500 is no refusal
    assert await _amounts(pool) == ({cus["a"]: 1500}, {subs["b"]: 1000})
