import psycopg
import pytest

from stripesync.catalog import build_catalog
from stripesync.schema.migrate import migrate
from stripesync.store import Store
from stripesync.stripe_api.client import PINNED_VERSION
from stripesync.sync.events import apply_plan, plan_events

CAT = build_catalog()
_n = 0


def event(etype, obj, created, *, version=PINNED_VERSION, previous=None):
    global _n
    _n += 1
    data = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": f"evt_{_n:06d}",
        "object": "event",
        "type": etype,
        "created": created,
        "api_version": version,
        "livemode": False,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "data": data,
    }


def customer(cid, **kw):
    return {"id": cid, "object": "customer", "created": 1, "livemode": False, **kw}


@pytest.fixture
async def conn(database_url):
    async with await psycopg.AsyncConnection.connect(database_url) as c:
        await migrate(c, "stripe")
        await c.commit()
        yield c


async def _rows(conn, q):
    return await (await conn.execute(q)).fetchall()


async def test_creates_updates_and_deletes_land_in_order(conn):
    evs = [
        event("customer.created", customer("cus_1", email="a@x"), 100),
        event("customer.updated", customer("cus_1", email="b@x"), 101, previous={"email": "a@x"}),
        event("customer.created", customer("cus_2"), 102),
        event(
            "customer.tax_id.created",
            {"id": "txi_1", "object": "tax_id", "customer": "cus_2", "created": 102},
            102,
        ),
        event("customer.deleted", customer("cus_2", deleted=True), 103),
    ]
    plan = plan_events(evs)
    assert not plan.refetch
    await apply_plan(conn, Store(), plan)
    assert await _rows(conn, "SELECT id, email FROM stripe.customer") == [("cus_1", "b@x")]
    assert await _rows(conn, "SELECT count(*) FROM stripe.tax_id") == [(0,)]  # child gone too
    assert await _rows(conn, "SELECT collection, id FROM stripe._deletions") == [
        ("customer", "cus_2")
    ]
    assert await _rows(conn, "SELECT count(*) FROM stripe.event") == [(5,)]


async def test_a_canceled_subscription_keeps_its_row():
    sub = {
        "id": "sub_1",
        "object": "subscription",
        "status": "canceled",
        "customer": "cus_1",
        "created": 1,
    }
    plan = plan_events([event("customer.subscription.deleted", sub, 200)])
    assert not plan.deletes
    assert [i.obj["status"] for i in plan.upserts["subscription"]] == ["canceled"]
    assert plan.touched_customers == {"cus_1"} and plan.touched_subscriptions == {"sub_1"}


async def test_other_api_version_or_same_second_events_are_refetched():
    a = event("customer.updated", customer("cus_9", email="x"), 300, version="2020-08-27")
    plan = plan_events([a])
    assert ("customer", "cus_9") in plan.refetch
    b = event("customer.updated", customer("cus_8", email="1"), 400)
    c = event("customer.updated", customer("cus_8", email="2"), 400)
    plan = plan_events([b, c])
    assert ("customer", "cus_8") in plan.refetch


async def test_sources_are_routed_by_their_object_type():
    card = {"id": "card_1", "object": "card", "customer": "cus_1"}
    bank = {"id": "ba_1", "object": "bank_account", "customer": "cus_1"}
    plan = plan_events(
        [
            event("customer.source.created", card, 10),
            event("customer.source.created", bank, 11),
        ]
    )
    assert [i.parent_id for i in plan.upserts["source"]] == ["cus_1"]
    assert [i.obj["id"] for i in plan.upserts["bank_account"]] == ["ba_1"]


async def test_invoice_events_keep_invoice_lines_current(conn):
    inv = {
        "id": "in_1",
        "object": "invoice",
        "customer": "cus_1",
        "created": 5,
        "lines": {
            "object": "list",
            "has_more": False,
            "url": "/v1/invoices/in_1/lines",
            "data": [{"id": "il_1", "object": "line_item", "amount": 500}],
        },
    }
    plan = plan_events([event("invoice.created", inv, 500)])
    await apply_plan(conn, Store(), plan)
    assert await _rows(conn, "SELECT id, amount, _parent_id FROM stripe.line_item") == [
        ("il_1", 500, "in_1")
    ]


async def test_duplicated_and_out_of_order_events_leave_the_newest_state(conn):
    store = Store("stripe")
    newer = event("customer.updated", customer("cus_ooo", email="new@example.com"), 200)
    older = event("customer.updated", customer("cus_ooo", email="old@example.com"), 100)
    # the newer event first, then the same again, then the older one in a later batch
    for batch in ([newer, newer], [newer], [older]):
        await apply_plan(conn, store, plan_events(batch, catalog=CAT), catalog=CAT)
        await conn.commit()
    rows = await _rows(conn, "SELECT email, _event_id FROM stripe.customer WHERE id = 'cus_ooo'")
    assert rows == [("new@example.com", newer["id"])]
    events = await _rows(conn, "SELECT id FROM stripe.event ORDER BY id")
    assert sorted(e[0] for e in events) == sorted({newer["id"], older["id"]})


async def test_an_update_older_than_a_deletion_does_not_resurrect(conn):
    store = Store("stripe")
    created = event("customer.created", customer("cus_gone", email="a@example.com"), 100)
    deleted = event("customer.deleted", customer("cus_gone", deleted=True), 300)
    late = event("customer.updated", customer("cus_gone", email="b@example.com"), 200)
    for batch in ([created], [deleted], [late]):
        await apply_plan(conn, store, plan_events(batch, catalog=CAT), catalog=CAT)
        await conn.commit()
    assert await _rows(conn, "SELECT id FROM stripe.customer WHERE id = 'cus_gone'") == []
    tomb = await _rows(conn, "SELECT event_id FROM stripe._deletions WHERE id = 'cus_gone'")
    assert tomb == [(deleted["id"],)]


async def test_subscription_events_keep_its_items_current(conn):
    store = Store("stripe")
    item = {"id": "si_1", "object": "subscription_item", "created": 1, "quantity": 3,
            "subscription": "sub_1", "metadata": {}}
    sub = {"id": "sub_1", "object": "subscription", "created": 1, "status": "active",
           "customer": "cus_1",
           "items": {"object": "list", "data": [item], "has_more": False, "url": "/x"}}
    ev = event("customer.subscription.updated", sub, 100)
    await apply_plan(conn, store, plan_events([ev], catalog=CAT), catalog=CAT)
    await conn.commit()
    rows = await _rows(conn, "SELECT id, quantity, _parent_id FROM stripe.subscription_item")
    assert rows == [("si_1", 3, "sub_1")]


def _sub(sid, items, **kw):
    return {"id": sid, "object": "subscription", "created": 1, "status": "active",
            "customer": "cus_1", **kw,
            "items": {"object": "list", "data": items, "has_more": False, "url": "/x"}}


def _item(iid, sid, quantity=1):
    return {"id": iid, "object": "subscription_item", "created": 1, "quantity": quantity,
            "subscription": sid, "metadata": {}}


async def test_items_a_subscription_no_longer_lists_are_deleted(conn):
    """Replacing an item deletes the old one at Stripe, with no event of its own: the
    subscription's next event lists its items without it."""
    store = Store("stripe")
    first = event("customer.subscription.created",
                  _sub("sub_r", [_item("si_a", "sub_r"), _item("si_b", "sub_r")]), 100)
    second = event("customer.subscription.updated",
                   _sub("sub_r", [_item("si_a", "sub_r"), _item("si_c", "sub_r", 4)]), 101)
    for batch in ([first], [second]):
        await apply_plan(conn, store, plan_events(batch, catalog=CAT), catalog=CAT)
        await conn.commit()
    rows = await _rows(conn, "SELECT id FROM stripe.subscription_item ORDER BY id")
    assert rows == [("si_a",), ("si_c",)]
    tomb = await _rows(conn, "SELECT id, event_id FROM stripe._deletions")
    assert tomb == [("si_b", second["id"])]
    # the older event again (a replay) brings nothing back
    await apply_plan(conn, store, plan_events([first], catalog=CAT), catalog=CAT)
    rows = await _rows(conn, "SELECT id FROM stripe.subscription_item ORDER BY id")
    assert rows == [("si_a",), ("si_c",)]


async def test_within_one_batch_the_newest_list_decides(conn):
    store = Store("stripe")
    evs = [
        event("customer.subscription.created", _sub("sub_n", [_item("si_x", "sub_n")]), 200),
        event("customer.subscription.updated", _sub("sub_n", [_item("si_y", "sub_n")]), 201),
    ]
    await apply_plan(conn, store, plan_events(evs, catalog=CAT), catalog=CAT)
    assert await _rows(conn, "SELECT id FROM stripe.subscription_item") == [("si_y",)]


async def test_same_second_events_leave_the_children_to_the_fresh_copy():
    """Two events of one subscription in one second: their order is unknown, so neither
    list removes children; the refetched subscription's list does."""
    evs = [
        event("customer.subscription.updated", _sub("sub_s", [_item("si_1", "sub_s")]), 300),
        event("customer.subscription.updated", _sub("sub_s", [_item("si_2", "sub_s")]), 300),
    ]
    plan = plan_events(evs, catalog=CAT)
    assert ("subscription", "sub_s") in plan.refetch
    assert not plan.child_lists


async def test_a_finalized_invoice_refetches_its_customer_and_truncated_lines_are_followed():
    lines = {"object": "list", "has_more": True, "url": "/v1/invoices/in_l/lines",
             "data": [{"id": "il_1", "object": "line_item",
                       "parent": {"invoice_item_details": {"invoice_item": "ii_1"}}}]}
    inv = {"id": "in_l", "object": "invoice", "customer": "cus_f", "created": 1,
           "lines": lines}
    plan = plan_events([event("invoice.created", inv, 400)], catalog=CAT)
    assert ("customer", "cus_f") not in plan.refetch  # no number yet
    assert {("invoice", "in_l"), ("invoiceitem", "ii_1")} <= set(plan.refetch)
    assert plan.follow_lines == {"in_l"}
    assert not plan.child_lists  # a truncated list proves nothing absent
    plan = plan_events([event("invoice.finalized", inv, 401)], catalog=CAT)
    assert ("customer", "cus_f") in plan.refetch
    assert not plan.follow_lines  # a finalized invoice's lines take on no items
