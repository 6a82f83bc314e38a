"""Nested collections, singletons and derived state, through the SDK."""

from __future__ import annotations

import pytest
import stripe


def _price(client, amount=1000, interval="month"):
    return client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": interval},
            "product_data": {"name": f"plan {amount}"},
        }
    )


def test_customer_tax_ids_sources_and_balance_transactions(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create()
    tax = client.v1.customers.tax_ids.create(cus.id, params={"type": "eu_vat", "value": "FR12345"})
    assert tax.id.startswith("txi_") and tax.customer == cus.id and tax.country == "FR"
    assert [t.id for t in client.v1.customers.tax_ids.list(cus.id).data] == [tax.id]
    assert client.v1.customers.tax_ids.retrieve(cus.id, tax.id).value == "FR12345"
    other = client.v1.customers.create()
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.tax_ids.retrieve(other.id, tax.id)
    card = client.v1.customers.payment_sources.create(cus.id, params={"source": "tok_amex"})
    bank = client.v1.customers.payment_sources.create(cus.id, params={"source": "btok_us"})
    assert card.object == "card" and card.brand == "American Express"
    assert bank.object == "bank_account"
    listed = client.v1.customers.payment_sources.list(cus.id)
    assert {s.id for s in listed.data} == {card.id, bank.id}
    only_cards = client.v1.customers.payment_sources.list(cus.id, params={"object": "card"})
    assert [s.id for s in only_cards.data] == [card.id]
    assert client.v1.customers.retrieve(cus.id).default_source == card.id
    client.v1.customers.payment_sources.delete(cus.id, card.id)
    assert client.v1.customers.retrieve(cus.id).default_source == bank.id
    txn = client.v1.customers.balance_transactions.create(
        cus.id, params={"amount": -500, "currency": "usd"}
    )
    assert txn.ending_balance == -500
    assert client.v1.customers.retrieve(cus.id).balance == -500
    assert [t.id for t in client.v1.customers.balance_transactions.list(cus.id).data] == [txn.id]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.tax_ids.list("cus_nobody")
    assert exc.value.http_status == 404


def test_subscription_items_invoice_and_lines(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(params={"source": "tok_visa"})  # pays the first invoice
    a, b = _price(client, 1000), _price(client, 300)
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": a.id}, {"price": b.id, "quantity": 2}]}
    )
    assert sub.status == "active"
    assert [i.price.id for i in sub["items"].data] == [a.id, b.id]
    assert sub["items"].data[0].current_period_end > sub["items"].data[0].current_period_start
    items = client.v1.subscription_items.list(params={"subscription": sub.id})
    assert {i.id for i in items.data} == {i.id for i in sub["items"].data}
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert inv.status == "paid"
    assert inv.amount_paid == 1600
    assert inv.parent.subscription_details.subscription == sub.id
    lines = client.v1.invoices.line_items.list(inv.id)
    assert sorted(x.amount for x in lines.data) == [600, 1000]
    assert inv.lines.total_count == 2
    assert [i.id for i in client.v1.invoices.list(params={"subscription": sub.id}).data] == [inv.id]
    # add an item: the subscription changes, with an event
    client.v1.subscription_items.create(
        params={"subscription": sub.id, "price": _price(client, 5).id}
    )
    assert len(client.v1.subscriptions.retrieve(sub.id)["items"].data) == 3


def test_deleting_a_customer_cancels_its_subscriptions(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create()
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": _price(client).id}]}
    )
    client.v1.customers.delete(cus.id)
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    types = [e.type for e in client.v1.events.list(params={"limit": 100}).data]
    assert types[:2] == ["customer.deleted", "customer.subscription.deleted"]


def test_deleted_objects_retrieve_as_stripe_does(emulator):
    client = emulator.stripe()
    prod = client.v1.products.create(params={"name": "temp"})
    client.v1.products.delete(prod.id)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.products.retrieve(prod.id)
    assert exc.value.http_status == 404
    plan = client.v1.plans.create(
        params={"currency": "usd", "interval": "month", "amount": 100, "product": {"name": "p"}}
    )
    assert client.v1.plans.delete(plan.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.plans.retrieve(plan.id)


def test_draft_invoice_lifecycle(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create()
    inv = client.v1.invoices.create(
        params={"customer": cus.id, "collection_method": "send_invoice", "days_until_due": 30}
    )
    assert inv.status == "draft"
    ii = client.v1.invoice_items.create(
        params={"customer": cus.id, "amount": 1234, "currency": "usd", "invoice": inv.id}
    )
    got = client.v1.invoices.retrieve(inv.id)
    assert (
        got.amount_due == 1234
        and got.lines.data[0].parent.invoice_item_details.invoice_item == ii.id
    )
    fin = client.v1.invoices.finalize_invoice(inv.id)
    assert fin.status == "open" and fin.number
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.delete(inv.id)
    voided = client.v1.invoices.void_invoice(inv.id)
    assert voided.status == "void"
    ev = client.v1.events.list(params={"type": "invoice.voided"}).data
    assert ev and ev[0].data.object.id == inv.id


def test_charges_refunds_and_application_fee_refunds(emulator):
    client = emulator.stripe()
    ch = client.v1.charges.create(params={"amount": 5000, "currency": "usd", "source": "tok_visa"})
    assert ch.status == "succeeded" and ch.paid
    client.v1.refunds.create(params={"charge": ch.id, "amount": 2000})
    after = client.v1.charges.retrieve(ch.id)
    assert after.amount_refunded == 2000 and after.refunded is False
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create(params={"charge": ch.id, "amount": 9000})
    ev = client.v1.events.list(params={"type": "charge.refunded"}).data[0]
    assert ev.data.previous_attributes.amount_refunded == 0
    with pytest.raises(stripe.CardError):
        client.v1.charges.create(
            params={"amount": 5000, "currency": "usd", "source": "tok_chargeDeclined"}
        )
    emulator.controls.generate(customers=20, accounts=2)
    fee = client.v1.application_fees.list().data[0]
    refund_amount = fee.amount - fee.amount_refunded
    if refund_amount:
        fr = client.v1.application_fees.refunds.create(fee.id, params={"amount": refund_amount})
        assert fr.fee == fee.id
        assert client.v1.application_fees.retrieve(fee.id).refunded is True
    assert client.v1.application_fees.refunds.list(fee.id).object == "list"


def test_accounts_persons_external_accounts_and_singletons(emulator):
    client = emulator.stripe()
    acct = client.v1.accounts.create(params={"type": "custom", "country": "US"})
    person = client.v1.accounts.persons.create(acct.id, params={"first_name": "Jo"})
    assert person.account == acct.id
    assert [p.id for p in client.v1.accounts.persons.list(acct.id).data] == [person.id]
    ext = client.v1.accounts.external_accounts.create(
        acct.id, params={"external_account": "btok_us"}
    )
    assert ext.object == "bank_account" and ext.account == acct.id
    assert [x.id for x in client.v1.accounts.external_accounts.list(acct.id).data] == [ext.id]
    me = client.v1.accounts.retrieve_current()
    assert me.object == "account" and me.id.startswith("acct_")
    bal = client.v1.balance.retrieve()
    assert bal.object == "balance" and bal.available[0].currency == "usd"
    cash = client.v1.customers.cash_balance.retrieve(client.v1.customers.create().id)
    assert cash.object == "cash_balance"


def test_checkout_session_line_items(emulator):
    client = emulator.stripe()
    price = _price(client, 2500)
    cs = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 2}],
            "success_url": "https://example.com/ok",
        }
    )
    assert cs.amount_total == 5000 and cs.status == "open"
    items = client.v1.checkout.sessions.line_items.list(cs.id)
    assert items.data[0].object == "item" and items.data[0].quantity == 2
    expanded = client.v1.checkout.sessions.retrieve(cs.id, params={"expand": ["line_items"]})
    assert expanded.line_items.data[0].id == items.data[0].id
    assert client.v1.checkout.sessions.expire(cs.id).status == "expired"


def test_create_preview(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create()
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": _price(client, 4200).id}]}
    )
    preview = client.v1.invoices.create_preview(params={"subscription": sub.id})
    assert preview.amount_due == 4200
    assert preview.lines.data[0].amount == 4200
