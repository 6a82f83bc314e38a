import json

import psycopg
import pytest

from stripesync.catalog import build_catalog
from stripesync.schema.migrate import migrate
from stripesync.store import Incoming, Store

CAT = build_catalog()


def _customer(i: str, **kw):
    obj = {
        "id": i,
        "object": "customer",
        "created": 1_700_000_000,
        "email": f"{i}@example.com",
        "balance": 0,
        "livemode": False,
        "metadata": {"k": "v"},
        "default_source": None,
        "address": None,
    }
    obj.update(kw)
    return obj


@pytest.fixture
async def conn(database_url):
    async with await psycopg.AsyncConnection.connect(database_url) as c:
        await migrate(
            c,
            "stripe",
            [CAT["customer"], CAT["tax_id"], CAT["charge"], CAT["upcoming_subscription_invoice"]],
        )
        await c.commit()
        yield c


async def _rows(conn, sql):
    cur = await conn.execute(sql)
    return await cur.fetchall()


async def test_upsert_fills_typed_columns_and_keeps_the_exact_raw(conn):
    store = Store("stripe")
    obj = _customer("cus_1", balance=-250, default_source={"id": "card_1", "object": "card"})
    res = await store.upsert(conn, CAT["customer"], [Incoming(obj, stripe_time=100.0)])
    await conn.commit()
    assert (res.received, res.written) == (1, 1)
    rows = await _rows(
        conn,
        "SELECT id, email, balance, created, metadata, livemode, default_source_id, _raw "
        "FROM stripe.customer",
    )
    ((id_, email, balance, created, metadata, livemode, source_id, raw),) = rows
    assert (id_, email, balance, metadata, livemode) == (
        "cus_1",
        "cus_1@example.com",
        -250,
        {"k": "v"},
        False,
    )
    assert created.timestamp() == 1_700_000_000
    assert source_id == "card_1"  # an expanded reference still gives the id
    assert raw == obj


async def test_newest_copy_wins_whatever_the_arrival_order(conn):
    store = Store("stripe")
    c = CAT["customer"]
    await store.upsert(conn, c, [Incoming(_customer("cus_1", email="new@x"), stripe_time=200)])
    await store.upsert(conn, c, [Incoming(_customer("cus_1", email="old@x"), stripe_time=100)])
    assert await _rows(conn, "SELECT email FROM stripe.customer") == [("new@x",)]
    # within one batch: the newest, and on a tie the later one
    await store.upsert(
        conn,
        c,
        [
            Incoming(_customer("cus_2", email="b"), stripe_time=300),
            Incoming(_customer("cus_2", email="c"), stripe_time=300),
            Incoming(_customer("cus_2", email="a"), stripe_time=250),
        ],
    )
    assert await _rows(conn, "SELECT email FROM stripe.customer WHERE id = 'cus_2'") == [("c",)]


async def test_delete_removes_children_records_a_tombstone_and_blocks_resurrection(conn):
    store = Store("stripe")
    c, tax = CAT["customer"], CAT["tax_id"]
    await store.upsert(conn, c, [Incoming(_customer("cus_1"), stripe_time=100)])
    tid = {"id": "txi_1", "object": "tax_id", "created": 1, "customer": "cus_1", "livemode": False}
    await store.upsert(conn, tax, [Incoming(tid, stripe_time=100, parent_id="cus_1")])
    removed = await store.delete(
        conn, c, ["cus_1"], deleted_at=150, event_id="evt_1", children=[tax]
    )
    assert removed == 1
    assert await _rows(conn, "SELECT count(*) FROM stripe.customer") == [(0,)]
    assert await _rows(conn, "SELECT count(*) FROM stripe.tax_id") == [(0,)]
    assert await _rows(conn, "SELECT collection, id, event_id FROM stripe._deletions") == [
        ("customer", "cus_1", "evt_1")
    ]
    # a page fetched before the deletion must not bring it back
    res = await store.upsert(conn, c, [Incoming(_customer("cus_1"), stripe_time=120)])
    assert res.written == 0
    assert await _rows(conn, "SELECT count(*) FROM stripe.customer") == [(0,)]


async def test_delete_skips_child_tables_this_schema_does_not_have(conn):
    """A run syncing only some collections has no table for some children."""
    store = Store("stripe")
    c = CAT["customer"]
    missing = [x for x in CAT.children_of("customer") if x.name == "bank_account"]
    assert missing and await store.present(conn, missing) == []
    await store.upsert(conn, c, [Incoming(_customer("cus_9"), stripe_time=100)])
    removed = await store.delete(
        conn, c, ["cus_9"], deleted_at=150, children=[CAT["tax_id"], *missing]
    )
    assert removed == 1
    assert await _rows(conn, "SELECT id FROM stripe._deletions") == [("cus_9",)]
    assert [x.name for x in await store.present(conn, [CAT["tax_id"], *missing])] == ["tax_id"]


async def test_key_given_from_outside_for_upcoming_invoices(conn):
    store = Store("stripe")
    inv = {"object": "invoice", "customer": "cus_1", "amount_due": 500, "created": 5}
    coll = CAT["upcoming_subscription_invoice"]
    await store.upsert(conn, coll, [Incoming(json.dumps(inv), stripe_time=1, key="sub_1")])
    rows = await _rows(
        conn,
        "SELECT subscription_id, customer_id, amount_due FROM stripe.upcoming_subscription_invoice",
    )
    assert rows == [("sub_1", "cus_1", 500)]


async def test_remove_leaves_no_tombstone_and_keeps_newer_copies(conn):
    store = Store("stripe")
    coll = CAT["upcoming_subscription_invoice"]
    inv = {"object": "invoice", "customer": "cus_1", "amount_due": 500, "created": 5}
    await store.upsert(
        conn,
        coll,
        [Incoming(inv, stripe_time=100, key="sub_1"), Incoming(inv, stripe_time=300, key="sub_2")],
    )
    # sub_2's copy is newer than the answer "no upcoming invoice": it stays
    assert await store.remove(conn, coll, {"sub_1": 200, "sub_2": 200}) == 1
    left = await _rows(conn, "SELECT subscription_id FROM stripe.upcoming_subscription_invoice")
    assert left == [("sub_2",)]
    assert await _rows(conn, "SELECT count(*) FROM stripe._deletions") == [(0,)]
    # a later copy comes back
    res = await store.upsert(conn, coll, [Incoming(inv, stripe_time=250, key="sub_1")])
    assert res.written == 1
    assert await store.remove(conn, coll, {}) == 0


async def test_credentials_the_catalog_masks_are_stored_as_null(database_url):
    """A webhook endpoint's `secret` (Stripe returns it when the endpoint is created)
    never reaches the table: its column is NULL and `_raw` holds null in its place."""
    endpoint = CAT["webhook_endpoint"]
    assert endpoint.masked == ("secret",)
    created = {
        "id": "we_1",
        "object": "webhook_endpoint",
        "created": 1_700_000_000,
        "url": "https://example.com/hooks",
        "enabled_events": ["*"],
        "secret": "whsec_created0000000000000000000000",
        "status": "enabled",
    }
    listed = {k: v for k, v in created.items() if k != "secret"} | {"id": "we_2"}
    as_text = json.dumps({**created, "id": "we_3", "secret": "whsec_text000000000000000000"})
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await migrate(conn, "stripe", [endpoint])
        await conn.commit()
        store = Store("stripe")
        res = await store.upsert(
            conn,
            endpoint,
            [
                Incoming(created, stripe_time=100.0),
                Incoming(listed, stripe_time=100.0),
                Incoming(as_text, stripe_time=100.0),
            ],
        )
        await conn.commit()
        assert res.written == 3
        rows = await _rows(
            conn, "SELECT id, secret, _raw, t::text FROM stripe.webhook_endpoint t ORDER BY id"
        )
    assert [(r[0], r[1]) for r in rows] == [("we_1", None), ("we_2", None), ("we_3", None)]
    raws = {r[0]: r[2] for r in rows}
    assert raws["we_1"] == {**created, "secret": None}  # the rest exactly as Stripe sent it
    assert "secret" not in raws["we_2"]  # a field Stripe did not send is not added
    assert raws["we_3"]["secret"] is None and raws["we_3"]["url"] == created["url"]
    assert not [r[3] for r in rows if "whsec_" in r[3]]
