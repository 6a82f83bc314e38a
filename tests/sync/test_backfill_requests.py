"""What the backfill asks Stripe for: every page of data once, children without a
request per parent where Stripe offers a way, counts of distinct objects stored, and a
re-run that brings a finished copy up to date. Counted from the emulator's request log."""

from collections import Counter
from typing import Any

import stripe

from stripesync.catalog import build_catalog
from stripesync.emulator.generator import generate
from stripesync.obs.metrics import BACKFILL_OBJECTS
from stripesync.stripe_api.client import StripeApi
from stripesync.sync.backfill import Backfill

CAT = build_catalog()
KEY = "sk_test_emulator"


async def _rows(pool: Any, q: str, *args: Any) -> list[Any]:
    async with pool.connection() as conn:
        return await (await conn.execute(q, args or None)).fetchall()


def _list_requests(log: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [r for r in log if r["method"] == "GET" and r["path"] == path]


def _metric(name: str) -> float:
    return BACKFILL_OBJECTS.labels(name)._value.get()  # type: ignore[attr-defined]


async def test_slices_partition_each_list_and_counts_are_rows(emulator, pool):
    """Customers and charges paged by many slices at once: no object is served twice,
    the requests are the pages of data plus a handful per list, and the counts the log,
    the status table and /metrics show are the rows stored."""
    generate(emulator.state, customers=6000, charges=6000, seed=11, card_ratio=0,
             tax_id_ratio=0, refund_ratio=0, dispute_ratio=0, products=0, subscriptions=0,
             invoiceitems=0, accounts=0, checkout_sessions=0)  # fmt: skip
    # answers that take a while make the backfill keep many slices in flight and split
    emulator.controls.configure(latency_ms=25)
    emulator.controls.clear_requests()
    metrics_before = {n: _metric(n) for n in ("customer", "charge")}
    async with StripeApi(KEY, api_base=emulator.url, max_rps=400) as api:
        result = await Backfill(api, pool, collections=["customer", "charge"]).run()
    log = emulator.controls.requests()
    for name, path in (("customer", "/v1/customers"), ("charge", "/v1/charges")):
        pages = _list_requests(log, path)
        served = Counter(oid for r in pages for oid in r["listed"])
        assert served and max(served.values()) == 1, f"{name}: served twice"
        rows = (await _rows(pool, f"SELECT count(*) FROM stripe.{CAT[name].table}"))[0][0]
        assert len(served) == rows == 6000
        # 60 pages of data; slices end in part-empty pages, the oldest comes back empty
        assert len(pages) <= 60 * 1.05 + 12, f"{name}: {len(pages)} requests"
        # the slices were used: more than one request in flight at once
        assert any("created" in r["query"] for r in pages)
        state = await _rows(
            pool, "SELECT objects FROM stripe._collection_state WHERE collection = %s", name
        )
        assert state[0][0] == rows
        assert _metric(name) - metrics_before[name] == rows
    assert result.objects == 12000


def _customer_children(emulator: Any) -> dict[str, Any]:
    """Customers whose embedded lists say all, some whose lists are truncated (more than
    ten sources or tax ids), and two that held cash."""
    generate(emulator.state, customers=250, seed=12, card_ratio=0.6, tax_id_ratio=0.3,
             subscriptions=0, charges=0, invoiceitems=0, accounts=0, products=3,
             checkout_sessions=5)  # fmt: skip
    client = stripe.StripeClient(KEY, base_addresses={"api": emulator.url})
    many_cards = [client.v1.customers.create({"name": f"many cards {i}"}).id for i in range(2)]
    for cid in many_cards:
        for _ in range(12):
            client.v1.customers.payment_sources.create(cid, {"source": "tok_visa"})
    banked = client.v1.customers.create({"name": "bank account"}).id
    client.v1.customers.payment_sources.create(banked, {"source": "btok_us_verified"})
    many_ids = client.v1.customers.create({"name": "many tax ids"}).id
    for i in range(11):
        client.v1.customers.tax_ids.create(many_ids, {"type": "eu_vat", "value": f"DE12345678{i}"})
    holders = [client.v1.customers.create({"name": f"cash {i}"}).id for i in range(2)]
    loaded: list[dict[str, Any]] = []
    for n, cid in enumerate(holders):
        settings = {"reconciliation_mode": "automatic", "using_merchant_default": True}
        loaded.append({"object": "cash_balance", "customer": cid, "available": {"usd": 500},
                       "livemode": False, "settings": settings})  # fmt: skip
        loaded.append({"object": "customer_cash_balance_transaction", "id": f"ccsbtxn_t{n}",
                       "customer": cid, "created": 1_700_000_000 + n, "currency": "usd",
                       "ending_balance": 500, "net_amount": 500, "type": "funded",
                       "livemode": False,
                       "funded": {"bank_transfer": {"type": "us_bank_transfer",
                                                    "reference": f"ref {n}"}}})  # fmt: skip
    emulator.load(loaded)
    return {"many_cards": many_cards, "many_ids": [many_ids], "holders": holders}


CHILDREN = ["customer", "source", "bank_account", "tax_id", "customer_cash_balance_transaction",
            "checkout.session", "item"]  # fmt: skip


async def test_children_come_with_their_parents_pages(emulator, pool):
    """A customer's sources and tax ids come with the customers' pages
    (`expand[]=data.sources`), a checkout session's line items with the sessions' pages;
    only a truncated list is read per parent, and cash balance transactions only for the
    customers whose cash balance names a currency."""
    made = _customer_children(emulator)
    emulator.controls.clear_requests()
    async with StripeApi(KEY, api_base=emulator.url, max_rps=500) as api:
        result = await Backfill(api, pool, collections=CHILDREN).run()
    assert not result.skipped, result.skipped
    log = emulator.controls.requests()
    per_parent = Counter(
        (r["path"].split("/")[3], r["path"].split("/")[4])
        for r in log
        if r["path"].startswith("/v1/customers/") and r["path"].count("/") == 4
    )
    sources = {cid for (cid, what) in per_parent if what == "sources"}
    assert sources == set(made["many_cards"])  # once for cards, once for bank accounts
    assert sum(n for (_, what), n in per_parent.items() if what == "sources") == 4
    assert {cid for (cid, what) in per_parent if what == "tax_ids"} == set(made["many_ids"])
    cash = {cid for (cid, what) in per_parent if what == "cash_balance_transactions"}
    assert cash == set(made["holders"])
    assert not [r for r in log if r["path"].startswith("/v1/checkout/sessions/")]
    # and the copy holds every child, under its parent
    em = emulator.state
    for name, objects in (
        ("source", {"card", "source"}),
        ("bank_account", {"bank_account"}),
        ("tax_id", {"tax_id"}),
    ):
        want = {
            rec.id: rec.obj.get("customer")
            for t in objects
            for rec in em.store.index(t).records()
            if rec.obj.get("customer")
        }
        got = dict(await _rows(pool, f"SELECT id, _parent_id FROM stripe.{CAT[name].table}"))
        assert got == want and want, name
    txns = await _rows(pool, "SELECT id FROM stripe.customer_cash_balance_transaction")
    assert sorted(r[0] for r in txns) == ["ccsbtxn_t0", "ccsbtxn_t1"]
    items = (await _rows(pool, "SELECT count(*) FROM stripe.item"))[0][0]
    assert items == sum(
        len(em.store.path_index[f"/v1/checkout/sessions/{s.id}/line_items"])
        for s in em.store.index("checkout.session").records()
    ) > 0
    # the customers' rows are the customers as Stripe sends them unasked
    raw = await _rows(pool, "SELECT _raw FROM stripe.customer")
    assert raw and not [r for (r,) in raw if {"sources", "tax_ids", "cash_balance"} & set(r)]


async def test_a_killed_backfill_resumes_carrying_children(emulator, pool):
    """Killed after the customers' first pages: the resumed run still reads each
    customer's children once, from the pages or per truncated parent."""
    made = _customer_children(emulator)
    async with StripeApi(KEY, api_base=emulator.url, max_rps=500) as api:
        first = Backfill(api, pool, collections=CHILDREN)
        pages = 0
        real = first._commit_page

        async def dying(*a: Any, **kw: Any) -> None:
            nonlocal pages
            pages += 1
            if pages > 2:
                raise RuntimeError("killed")
            await real(*a, **kw)

        first._commit_page = dying  # type: ignore[method-assign]
        result = await first.run()
        assert result.skipped  # the killed collections are recorded as failed
        emulator.controls.clear_requests()
        second = await Backfill(api, pool, collections=CHILDREN).run()
    assert not second.skipped, second.skipped
    log = emulator.controls.requests()
    sources = {r["path"].split("/")[3] for r in log if r["path"].endswith("/sources")}
    assert sources <= set(made["many_cards"])
    want = {rec.id for t in ("card", "source") for rec in emulator.state.store.index(t).records()
            if rec.obj.get("customer")}  # fmt: skip
    got = {r[0] for r in await _rows(pool, "SELECT id FROM stripe.source")}
    assert got == want


async def test_a_backfill_of_a_finished_copy_catches_up_from_events(emulator, pool, capsys):
    """`stripesync backfill` run again after it finished copies nothing again: it applies
    the events since its cursor (a customer created since lands) and says so."""
    from stripesync import app

    generate(emulator.state, customers=30, seed=13, subscriptions=0, charges=0)
    async with StripeApi(KEY, api_base=emulator.url, max_rps=500) as api:
        await Backfill(api, pool, collections=["customer"]).run()
    client = stripe.StripeClient(KEY, base_addresses={"api": emulator.url})
    late = client.v1.customers.create({"name": "created after the backfill"}).id
    emulator.controls.clear_requests()
    async with StripeApi(KEY, api_base=emulator.url, max_rps=500) as api:
        again = await Backfill(api, pool, collections=["customer"]).run()
        assert again.copy_existed and again.already == ["customer"] and again.objects == 0
        app.print_result(again)
        applied = await app.catch_up(api, pool, "stripe", ["customer"])
    assert applied >= 1
    err = capsys.readouterr().err
    assert "backfilled 0 objects from 0 collections" in err and "1 were complete before" in err
    assert "the copy was already backfilled: applied" in err and "keeps it current" in err
    rows = {r[0] for r in await _rows(pool, "SELECT id FROM stripe.customer")}
    assert late in rows
    # nothing was listed again: only the events were read
    assert {r["path"] for r in emulator.controls.requests()} == {"/v1/events"}
