"""Events: what fires, their shape, and GET /v1/events."""

from __future__ import annotations

import pytest
import stripe


def _types(client, **params):
    return [e.type for e in client.v1.events.list(params={"limit": 100, **params}).data]


def test_create_update_delete_emit_events_with_previous_attributes(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(
        params={"email": "a@x.io", "metadata": {"a": "1"}}, options={"idempotency_key": "k1"}
    )
    client.v1.customers.update(cus.id, params={"email": "b@x.io", "metadata": {"b": "2"}})
    client.v1.customers.update(cus.id, params={"email": "b@x.io"})  # no change: no event
    client.v1.customers.delete(cus.id)
    events = client.v1.events.list().data
    assert [e.type for e in events] == ["customer.deleted", "customer.updated", "customer.created"]
    created = events[2]
    assert created.data.object.id == cus.id
    assert created.data.object.email == "a@x.io"
    assert created.request.idempotency_key == "k1"
    assert created.request.id.startswith("req_")
    assert created.api_version == "2026-10-28.endive"
    assert created.livemode is False
    assert created.pending_webhooks == 0
    updated = events[1]
    assert updated.data.object.email == "b@x.io"
    prev = updated.data.previous_attributes.to_dict()
    assert prev == {"email": "a@x.io", "metadata": {"b": None}}
    assert "previous_attributes" not in created.data.to_dict()


def test_event_retrieve_and_type_filters(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create()
    client.v1.products.create(params={"name": "P"})
    evs = client.v1.events.list().data
    assert client.v1.events.retrieve(evs[0].id).id == evs[0].id
    assert _types(client, type="customer.created") == ["customer.created"]
    assert _types(client, type="product.*") == ["product.created"]
    assert sorted(_types(client, types=["product.created", "customer.created"])) == [
        "customer.created",
        "product.created",
    ]
    assert cus.id


def test_nested_and_derived_event_types(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(params={"source": "tok_visa"})  # pays the invoice
    tax = client.v1.customers.tax_ids.create(cus.id, params={"type": "eu_vat", "value": "DE1"})
    client.v1.customers.tax_ids.delete(cus.id, tax.id)
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 700,
            "recurring": {"interval": "month"},
            "product_data": {"name": "X"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price.id}]}
    )
    client.v1.subscriptions.update(sub.id, params={"metadata": {"k": "v"}})
    ii = client.v1.invoice_items.create(
        params={"customer": cus.id, "amount": 100, "currency": "usd"}
    )
    client.v1.invoice_items.delete(ii.id)
    types = set(_types(client))
    for t in [
        "customer.tax_id.created",
        "customer.tax_id.deleted",
        "customer.subscription.created",
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoiceitem.created",
        "invoiceitem.deleted",
        "price.created",
        "product.created",
    ]:
        assert t in types, t
    # types Stripe does not have are never emitted
    assert "subscription_item.created" not in types
    assert "line_item.created" not in types


def test_events_page_like_lists_and_filter_by_created(emulator):
    client = emulator.stripe()
    for i in range(5):
        client.v1.products.create(params={"name": f"p{i}"})
        emulator.advance(10)
    all_events = client.v1.events.list(params={"limit": 100}).data
    assert len(all_events) == 5
    page = client.v1.events.list(params={"limit": 2, "starting_after": all_events[1].id})
    assert [e.id for e in page.data] == [e.id for e in all_events[2:4]]
    cut = all_events[2].created
    newer = client.v1.events.list(params={"created": {"gt": cut}}).data
    assert [e.id for e in newer] == [e.id for e in all_events[:2]]


def test_events_older_than_30_days_are_gone(emulator):
    client = emulator.stripe()
    client.v1.customers.create()
    evt = client.v1.events.list().data[0]
    emulator.advance(29 * 86400)
    assert len(client.v1.events.list().data) == 1
    emulator.advance(2 * 86400)
    assert client.v1.events.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.events.retrieve(evt.id)
    assert exc.value.http_status == 404


def test_subscription_cancel_emits_deleted(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create()
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 700,
            "recurring": {"interval": "month"},
            "product_data": {"name": "X"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price.id}]}
    )
    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled"
    assert canceled.canceled_at is not None
    ev = client.v1.events.list(params={"type": "customer.subscription.deleted"}).data
    assert ev[0].data.object.id == sub.id
    assert ev[0].data.object.status == "canceled"


def test_invoice_created_shows_the_pending_items_it_took_on(emulator):
    """Stripe's invoice.created carries the invoice as created: with the lines of the
    pending invoice items it took on (their own change has no event)."""
    client = emulator.stripe()
    cus = client.v1.customers.create()
    ii = client.v1.invoice_items.create(
        params={"customer": cus.id, "amount": 700, "currency": "usd"}
    )
    inv = client.v1.invoices.create(
        params={"customer": cus.id, "pending_invoice_items_behavior": "include"}
    )
    created = client.v1.events.list(params={"type": "invoice.created"}).data[0]
    assert created.data.object.to_dict() == client.v1.invoices.retrieve(inv.id).to_dict()
    lines = created.data.object.lines.data
    assert [ln.parent.invoice_item_details.invoice_item for ln in lines] == [ii.id]
    assert _types(client, type="invoiceitem.*") == ["invoiceitem.created"]


def test_an_invoice_item_on_a_finalized_invoice_cannot_be_updated(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create()
    ii = client.v1.invoice_items.create(
        params={"customer": cus.id, "amount": 700, "currency": "usd"}
    )
    inv = client.v1.invoices.create(
        params={"customer": cus.id, "pending_invoice_items_behavior": "include"}
    )
    client.v1.invoices.finalize_invoice(inv.id)
    before = client.v1.invoice_items.retrieve(ii.id).to_dict()
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.update(ii.id, params={"amount": 900, "description": "x"})
    assert client.v1.invoice_items.retrieve(ii.id).to_dict() == before
