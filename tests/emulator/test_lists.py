"""Lists as Stripe serves them, through the SDK."""

from __future__ import annotations

import pytest
import stripe


def _customers(client, n, **extra):
    return [client.v1.customers.create(params={"email": f"c{i}@x.io", **extra}) for i in range(n)]


def test_newest_first_with_stable_tiebreak(emulator):
    client = emulator.stripe()
    made = _customers(client, 5)  # all within the same second, mostly
    page = client.v1.customers.list(params={"limit": 100})
    assert [c.id for c in page.data] == [c.id for c in reversed(made)]
    assert page.has_more is False
    assert page.url == "/v1/customers"
    assert page.object == "list"


def test_default_limit_and_paging_both_ways(emulator):
    client = emulator.stripe()
    made = [c.id for c in _customers(client, 25)]
    newest_first = list(reversed(made))
    first = client.v1.customers.list()
    assert len(first.data) == 10 and first.has_more is True
    assert [c.id for c in first.data] == newest_first[:10]
    second = client.v1.customers.list(params={"starting_after": first.data[-1].id})
    assert [c.id for c in second.data] == newest_first[10:20]
    back = client.v1.customers.list(params={"ending_before": second.data[0].id, "limit": 3})
    assert [c.id for c in back.data] == newest_first[7:10]
    assert back.has_more is True
    every = [c.id for c in client.v1.customers.list(params={"limit": 7}).auto_paging_iter()]
    assert every == newest_first


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_limit_out_of_range_is_refused(emulator, limit):
    client = emulator.stripe()
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.list(params={"limit": limit})
    assert exc.value.http_status == 400
    assert exc.value.param == "limit"


def test_both_cursors_is_refused(emulator):
    client = emulator.stripe()
    a, b = _customers(client, 2)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.list(params={"starting_after": a.id, "ending_before": b.id})
    assert exc.value.http_status == 400


def test_created_filters(emulator):
    client = emulator.stripe()
    old = client.v1.customers.create()
    emulator.advance(100)
    mid = client.v1.customers.create()
    emulator.advance(100)
    new = client.v1.customers.create()
    # the clock moved 100 s (and the wall clock may have ticked a second meanwhile)
    assert mid.created - old.created in (100, 101)

    def ids(**created):
        return [c.id for c in client.v1.customers.list(params={"created": created}).data]

    assert ids(gt=old.created) == [new.id, mid.id]
    assert ids(gte=mid.created, lt=new.created) == [mid.id]
    assert ids(lte=old.created) == [old.id]
    exact = client.v1.customers.list(params={"created": mid.created})
    assert [c.id for c in exact.data] == [mid.id]


def test_list_filters_from_the_params_type(emulator):
    client = emulator.stripe()
    client.v1.customers.create(params={"email": "a@x.io"})
    b = client.v1.customers.create(params={"email": "b@x.io"})
    page = client.v1.customers.list(params={"email": "b@x.io"})
    assert [c.id for c in page.data] == [b.id]


def test_subscriptions_exclude_canceled_unless_asked(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create()
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
        }
    )
    keep = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price.id}]}
    )
    gone = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price.id}]}
    )
    client.v1.subscriptions.cancel(gone.id)

    def ids(**params):
        return {s.id for s in client.v1.subscriptions.list(params=params).data}

    assert ids() == {keep.id}
    assert ids(status="all") == {keep.id, gone.id}
    assert ids(status="canceled") == {gone.id}
    assert ids(customer=cus.id, price=price.id) == {keep.id}
    assert ids(customer="cus_nobody") == set()


def test_expand_on_lists_needs_the_data_prefix(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(params={"email": "x@y.z"})
    price = client.v1.prices.create(
        params={"currency": "usd", "unit_amount": 500, "product_data": {"name": "P"}}
    )
    client.v1.invoice_items.create(params={"customer": cus.id, "pricing": {"price": price.id}})
    page = client.v1.invoice_items.list(params={"expand": ["data.customer"]})
    assert page.data[0].customer.email == "x@y.z"
    plain = client.v1.invoice_items.list()
    assert plain.data[0].customer == cus.id


def test_expand_on_retrieve_and_nested(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(params={"source": "tok_visa"})
    ch = client.v1.charges.create(params={"amount": 2000, "currency": "usd", "customer": cus.id})
    got = client.v1.charges.retrieve(
        ch.id, params={"expand": ["customer.default_source", "balance_transaction"]}
    )
    assert got.customer.id == cus.id
    assert got.customer.default_source.object == "card"
    assert got.balance_transaction.amount == 2000
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.charges.retrieve(ch.id, params={"expand": ["currency"]})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.charges.retrieve(ch.id, params={"expand": ["a.b.c.d.e"]})


def test_includable_lists_by_expand(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(
        params={
            "source": "tok_mastercard",
            "tax_id_data": [{"type": "eu_vat", "value": "DE123456789"}],
        }
    )
    plain = client.v1.customers.retrieve(cus.id)
    assert "sources" not in plain and "tax_ids" not in plain  # Stripe leaves them out
    full = client.v1.customers.retrieve(cus.id, params={"expand": ["sources", "tax_ids"]})
    assert full.sources.data[0].brand == "MasterCard"
    assert full.sources.url == f"/v1/customers/{cus.id}/sources"
    assert full.tax_ids.data[0].value == "DE123456789"


def test_search(emulator):
    client = emulator.stripe()
    client.v1.customers.create(params={"email": "one@x.io", "metadata": {"tier": "gold"}})
    two = client.v1.customers.create(params={"email": "two@x.io", "metadata": {"tier": "silver"}})
    res = client.v1.customers.search(params={"query": "metadata['tier']:'silver'"})
    assert [c.id for c in res.data] == [two.id]
    res = client.v1.customers.search(params={"query": "email~'x.io'", "limit": 1})
    assert len(res.data) == 1 and res.has_more is True and res.next_page
