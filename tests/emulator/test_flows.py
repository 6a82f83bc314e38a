"""Money moves as on Stripe: a subscription's invoice paid through a PaymentIntent, a
charge and a balance transaction; declines with Stripe's test cards; prorations as
`proration_behavior` says; a customer's card sources among its payment methods. All
through the official SDK over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

MONTH = 30 * 86400  # the emulator's month


def _events(client: stripe.StripeClient) -> list[Any]:
    """Every event, oldest first."""
    return list(reversed(client.v1.events.list(params={"limit": 100}).data))


def _types(client: stripe.StripeClient, keep: tuple[str, ...] = ()) -> list[str]:
    return [e.type for e in _events(client) if not keep or e.type.startswith(keep)]


def _paying_customer(client: stripe.StripeClient, pm: str = "pm_card_visa") -> tuple[Any, str]:
    """A customer whose default payment method is the test card `pm`."""
    cus = client.v1.customers.create()
    attached = client.v1.payment_methods.attach(pm, params={"customer": cus.id})
    client.v1.customers.update(
        cus.id, params={"invoice_settings": {"default_payment_method": attached.id}}
    )
    return cus, attached.id


def _price(client: stripe.StripeClient, amount: int, name: str = "Seat") -> Any:
    return client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "product_data": {"name": name},
        }
    )


def _invoice_intent(client: stripe.StripeClient, invoice_id: str) -> Any:
    """The PaymentIntent of an invoice, through its `payments` (the pinned version has
    no `invoice.payment_intent`)."""
    inv = client.v1.invoices.retrieve(invoice_id, params={"expand": ["payments"]})
    [payment] = inv.payments.data
    assert payment.payment.type == "payment_intent"
    return client.v1.payment_intents.retrieve(payment.payment.payment_intent), payment


# ---- a subscription's invoice ------------------------------------------------------------


def test_first_invoice_is_paid_through_a_payment_intent_and_a_charge(emulator):
    client = emulator.stripe()
    cus, pm = _paying_customer(client)
    price = _price(client, 2000)
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price.id, "quantity": 2}]}
    )
    assert sub.status == "active"
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (inv.status, inv.total, inv.amount_paid, inv.amount_remaining) == ("paid", 4000, 4000, 0)
    assert (inv.attempted, inv.attempt_count, inv.billing_reason) == (
        True,
        1,
        "subscription_create",
    )
    assert "payments" not in inv.to_dict()  # includable: only when expanded
    pi, payment = _invoice_intent(client, inv.id)
    assert payment.object == "invoice_payment" and payment.id.startswith("inpay_")
    assert (payment.invoice, payment.status, payment.is_default) == (inv.id, "paid", True)
    assert (payment.amount_requested, payment.amount_paid) == (4000, 4000)
    assert payment.status_transitions.paid_at == inv.status_transitions.paid_at
    listed = client.v1.invoice_payments.list(params={"invoice": inv.id}).data
    assert [p.id for p in listed] == [payment.id]

    assert (pi.status, pi.amount, pi.amount_received, pi.currency) == (
        "succeeded",
        4000,
        4000,
        "usd",
    )
    assert (pi.customer, pi.payment_method, pi.description) == (
        cus.id,
        pm,
        "Subscription creation",
    )
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.status, charge.paid, charge.captured, charge.amount) == (
        "succeeded",
        True,
        True,
        4000,
    )
    assert (charge.payment_intent, charge.payment_method, charge.customer) == (pi.id, pm, cus.id)
    assert charge.payment_method_details.type == "card"
    assert charge.payment_method_details.card.last4 == "4242"
    assert charge.outcome.type == "authorized"
    txn = client.v1.balance_transactions.retrieve(charge.balance_transaction)
    assert (txn.type, txn.source, txn.amount, txn.currency) == ("charge", charge.id, 4000, "usd")
    assert (txn.fee, txn.net) == (146, 3854)  # 2.9% + 30 cents
    assert [c.id for c in client.v1.charges.list(params={"customer": cus.id}).data] == [charge.id]

    money = (
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "payment_intent.",
        "charge.",
        "invoice_payment.",
        "customer.subscription.",
    )
    assert _types(client, money) == [
        "invoice.created",
        "invoice.finalized",
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice_payment.paid",
        "customer.subscription.created",
    ]
    by_type = {e.type: e.data.object for e in _events(client)}
    assert by_type["invoice.paid"].id == inv.id
    assert by_type["charge.succeeded"].id == charge.id
    assert by_type["payment_intent.succeeded"].latest_charge == charge.id


def test_a_legacy_card_source_pays_the_invoice(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(params={"source": "tok_mastercard"})
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": _price(client, 1500).id}]}
    )
    assert sub.status == "active"
    pi, _ = _invoice_intent(client, sub.latest_invoice)
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount, charge.payment_method) == (1500, cus.default_source)
    assert charge.source.id == cus.default_source


def test_without_a_payment_method_the_invoice_stays_open_until_its_intent_is_confirmed(
    emulator,
):
    client = emulator.stripe()
    cus = client.v1.customers.create()
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": _price(client, 900).id}]}
    )
    assert sub.status == "incomplete"
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (inv.status, inv.amount_due, inv.amount_paid, inv.amount_remaining) == (
        "open",
        900,
        0,
        900,
    )
    assert inv.attempted is False
    pi, payment = _invoice_intent(client, inv.id)
    assert (pi.status, pi.amount, pi.payment_method) == ("requires_payment_method", 900, None)
    assert (payment.status, payment.amount_paid) == ("open", None)
    assert client.v1.charges.list(params={"customer": cus.id}).data == []
    assert "invoice.paid" not in _types(client)
    assert "invoice.payment_failed" not in _types(client)  # nothing was attempted
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoices.pay(inv.id)
    assert exc.value.http_status == 400
    assert "no attached payment source or default payment method" in exc.value.user_message

    # the customer pays the intent: the invoice is paid, the subscription active
    confirmed = client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert confirmed.status == "succeeded"
    assert client.v1.invoices.retrieve(inv.id).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    updated = [e for e in _events(client) if e.type == "customer.subscription.updated"]
    assert [e.data.previous_attributes.status for e in updated] == ["incomplete"]


def test_a_declined_first_invoice_leaves_the_subscription_incomplete(emulator):
    client = emulator.stripe()
    cus, pm = _paying_customer(client, "pm_card_chargeDeclinedInsufficientFunds")
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": _price(client, 1200).id}]}
    )
    assert sub.status == "incomplete"
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (inv.status, inv.attempted, inv.attempt_count, inv.amount_paid) == ("open", True, 1, 0)
    pi, payment = _invoice_intent(client, inv.id)
    assert (pi.status, pi.payment_method, payment.status) == (
        "requires_payment_method",
        None,
        "open",
    )
    err = pi.last_payment_error
    assert (err.type, err.code, err.decline_code) == (
        "card_error",
        "card_declined",
        "insufficient_funds",
    )
    assert err.payment_method.id == pm
    charge = client.v1.charges.retrieve(err.charge)
    assert (charge.status, charge.paid, charge.failure_code) == ("failed", False, "card_declined")
    assert charge.failure_message == "Your card has insufficient funds."
    assert (charge.outcome.type, charge.outcome.reason) == ("issuer_declined", "insufficient_funds")
    assert charge.balance_transaction is None
    assert pi.latest_charge == charge.id
    types = _types(client, ("invoice.", "payment_intent.", "charge."))
    assert types == [
        "invoice.created",
        "invoice.finalized",
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
        "invoice.payment_failed",
        "invoice.updated",
    ]

    # paying it again with a good card: paid, active
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(inv.id)  # the default card declines again
    assert client.v1.invoices.retrieve(inv.id).attempt_count == 2
    paid = client.v1.invoices.pay(inv.id, params={"payment_method": "pm_card_visa"})
    assert (paid.status, paid.amount_paid, paid.attempt_count) == ("paid", 1200, 3)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    pi, payment = _invoice_intent(client, inv.id)
    assert (pi.status, payment.status, payment.amount_paid) == ("succeeded", "paid", 1200)
    assert client.v1.charges.retrieve(pi.latest_charge).status == "succeeded"


def test_a_trial_invoice_is_paid_without_a_payment(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create()
    sub = client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": _price(client, 800).id}],
            "trial_period_days": 7,
        }
    )
    assert sub.status == "trialing"
    inv = client.v1.invoices.retrieve(sub.latest_invoice, params={"expand": ["payments"]})
    assert (inv.status, inv.total, inv.payments.data) == ("paid", 0, [])
    assert client.v1.payment_intents.list().data == []


# ---- declines ----------------------------------------------------------------------------

# Stripe's declining test payment methods: (error code, decline code, message)
DECLINES = {
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclinedLostCard": ("card_declined", "lost_card", "Your card was declined."),
    "pm_card_chargeDeclinedStolenCard": ("card_declined", "stolen_card", "Your card was declined."),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "expired_card", "Your card has expired."),
    "pm_card_chargeDeclinedIncorrectCvc": (
        "incorrect_cvc",
        "incorrect_cvc",
        "Your card's security code is incorrect.",
    ),
    "pm_card_chargeDeclinedProcessingError": (
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
}


@pytest.mark.parametrize("pm", sorted(DECLINES))
def test_declining_test_cards_answer_402_card_error(emulator, pm):
    code, decline_code, message = DECLINES[pm]
    client = emulator.stripe()
    with pytest.raises(stripe.CardError) as exc:
        client.v1.payment_intents.create(
            params={"amount": 2500, "currency": "usd", "payment_method": pm, "confirm": True}
        )
    e = exc.value
    assert (e.http_status, e.code, e.user_message) == (402, code, message)
    body = e.json_body["error"]
    assert (body["type"], body["code"], body["decline_code"]) == ("card_error", code, decline_code)
    assert body.get("param") == {"incorrect_cvc": "cvc", "expired_card": "exp_month"}.get(code)
    charge = client.v1.charges.retrieve(body["charge"])
    assert (charge.status, charge.paid, charge.amount_captured) == ("failed", False, 0)
    assert (charge.failure_code, charge.failure_message) == (code, message)
    assert (charge.outcome.type, charge.outcome.reason) == ("issuer_declined", decline_code)
    assert charge.outcome.network_status == "declined_by_network"
    assert charge.balance_transaction is None
    pi = client.v1.payment_intents.retrieve(body["payment_intent"]["id"])
    assert (pi.status, pi.latest_charge, pi.amount_received) == (
        "requires_payment_method",
        charge.id,
        0,
    )
    assert (pi.last_payment_error.code, pi.last_payment_error.decline_code) == (code, decline_code)
    assert pi.last_payment_error.charge == charge.id
    assert _types(client, ("payment_intent.", "charge.")) == [
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
    ]
    assert client.v1.balance_transactions.list().data == []


def test_a_declined_payment_intent_can_be_confirmed_again(emulator):
    client = emulator.stripe()
    pi = client.v1.payment_intents.create(params={"amount": 700, "currency": "usd"})
    with pytest.raises(stripe.CardError) as exc:
        client.v1.payment_intents.confirm(
            pi.id, params={"payment_method": "pm_card_chargeDeclined"}
        )
    assert exc.value.json_body["error"]["decline_code"] == "generic_decline"
    ok = client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert (ok.status, ok.amount_received, ok.last_payment_error) == ("succeeded", 700, None)
    charges = client.v1.charges.list(params={"payment_intent": pi.id}).data
    assert sorted(c.status for c in charges) == ["failed", "succeeded"]


@pytest.mark.parametrize(
    ("token", "code", "decline_code"),
    [
        ("tok_chargeDeclined", "card_declined", "generic_decline"),
        ("tok_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("tok_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ],
)
def test_declined_charges_with_test_tokens(emulator, token, code, decline_code):
    client = emulator.stripe()
    with pytest.raises(stripe.CardError) as exc:
        client.v1.charges.create(params={"amount": 1000, "currency": "usd", "source": token})
    body = exc.value.json_body["error"]
    assert exc.value.http_status == 402
    assert (body["type"], body["code"], body["decline_code"]) == ("card_error", code, decline_code)
    charge = client.v1.charges.retrieve(body["charge"])
    assert (charge.status, charge.failure_code, charge.source.last4) == (
        "failed",
        code,
        {"tok_chargeDeclined": "0002"}.get(token, charge.source.last4),
    )
    [event] = [e for e in _events(client) if e.type.startswith("charge.")]
    assert (event.type, event.data.object.id) == ("charge.failed", charge.id)


# ---- prorations --------------------------------------------------------------------------


def _subscription(client: stripe.StripeClient, amount: int = 3000, qty: int = 1) -> tuple[Any, Any]:
    cus, _ = _paying_customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": _price(client, amount).id, "quantity": qty}],
        }
    )
    return cus, sub


def _pending(client: stripe.StripeClient, cus_id: str) -> list[Any]:
    items = client.v1.invoice_items.list(params={"customer": cus_id, "pending": True}).data
    return sorted(items, key=lambda i: i.amount)


def test_a_quantity_change_creates_prorations_for_the_time_left(emulator):
    client = emulator.stripe()
    cus, sub = _subscription(client, 3000, 1)
    [item] = sub["items"].data
    start, end = item.current_period_start, item.current_period_end
    assert end - start == MONTH
    at = start + 10 * 86400  # a third of the period gone: two thirds left
    client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item.id, "quantity": 2}], "proration_date": at}
    )
    credit, charge = _pending(client, cus.id)
    assert (credit.amount, charge.amount) == (-2000, 4000)
    for ii, qty in ((credit, 1), (charge, 2)):
        assert (ii.proration, ii.quantity, ii.invoice) == (True, qty, None)
        assert (ii.period.start, ii.period.end) == (at, end)
        assert ii.parent.subscription_details.subscription == sub.id
        assert ii.parent.subscription_details.subscription_item == item.id
        assert ii.pricing.price_details.price == item.price.id
    assert credit.description.startswith("Unused time on 1 \u00d7 Seat after ")
    assert charge.description.startswith("Remaining time on 2 \u00d7 Seat after ")
    assert _types(client, ("invoiceitem.",)) == ["invoiceitem.created", "invoiceitem.created"]
    # the subscription's next invoice takes them: its preview shows them
    upcoming = client.v1.invoices.create_preview(params={"subscription": sub.id})
    assert sorted(line.amount for line in upcoming.lines.data) == [-2000, 4000, 6000]


def test_a_price_change_on_the_item_prorates_old_and_new_price(emulator):
    client = emulator.stripe()
    cus, sub = _subscription(client, 3000, 2)
    [item] = sub["items"].data
    dearer = _price(client, 4500, "Pro seat")
    at = item.current_period_start + 20 * 86400  # one third left
    client.v1.subscription_items.update(item.id, params={"price": dearer.id, "proration_date": at})
    credit, charge = _pending(client, cus.id)
    assert (credit.amount, charge.amount) == (-2000, 3000)  # -(3000 * 2)/3, (4500 * 2)/3
    assert credit.pricing.price_details.price == item.price.id
    assert charge.pricing.price_details.price == dearer.id


def test_proration_behavior_none_creates_nothing(emulator):
    client = emulator.stripe()
    cus, sub = _subscription(client)
    [item] = sub["items"].data
    client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item.id, "quantity": 5}], "proration_behavior": "none"}
    )
    client.v1.subscription_items.update(
        item.id, params={"quantity": 3, "proration_behavior": "none"}
    )
    assert _pending(client, cus.id) == []
    # and a metadata-only change prorates nothing either
    client.v1.subscription_items.update(item.id, params={"metadata": {"k": "v"}})
    assert _pending(client, cus.id) == []


def test_always_invoice_invoices_and_pays_the_prorations_at_once(emulator):
    client = emulator.stripe()
    cus, sub = _subscription(client, 3000, 1)
    [item] = sub["items"].data
    at = item.current_period_start + 15 * 86400  # half left
    updated = client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": item.id, "quantity": 3}],
            "proration_behavior": "always_invoice",
            "proration_date": at,
        },
    )
    assert updated.status == "active"
    assert updated.latest_invoice != sub.latest_invoice
    inv = client.v1.invoices.retrieve(updated.latest_invoice)
    assert (inv.billing_reason, inv.status, inv.total, inv.amount_paid) == (
        "subscription_update",
        "paid",
        3000,  # -1500 + 4500
        3000,
    )
    lines = client.v1.invoices.line_items.list(inv.id).data
    assert sorted(line.amount for line in lines) == [-1500, 4500]
    assert _pending(client, cus.id) == []
    pi, _ = _invoice_intent(client, inv.id)
    assert (pi.status, pi.amount, pi.description) == ("succeeded", 3000, "Subscription update")
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount, charge.status) == (3000, "succeeded")
    assert client.v1.balance_transactions.retrieve(charge.balance_transaction).amount == 3000


def test_always_invoice_with_a_declining_card_makes_the_subscription_past_due(emulator):
    client = emulator.stripe()
    cus, sub = _subscription(client, 3000, 1)
    failing = client.v1.payment_methods.attach(
        "pm_card_chargeDeclined", params={"customer": cus.id}
    )
    client.v1.customers.update(
        cus.id, params={"invoice_settings": {"default_payment_method": failing.id}}
    )
    [item] = sub["items"].data
    updated = client.v1.subscriptions.update(
        sub.id,
        params={"items": [{"id": item.id, "quantity": 2}], "proration_behavior": "always_invoice"},
    )
    assert updated.status == "past_due"
    inv = client.v1.invoices.retrieve(updated.latest_invoice)
    assert (inv.status, inv.attempted, inv.attempt_count) == ("open", True, 1)
    assert "invoice.payment_failed" in _types(client)


def test_adding_and_removing_items_prorate(emulator):
    client = emulator.stripe()
    cus, sub = _subscription(client, 3000, 1)
    start = sub["items"].data[0].current_period_start
    added = client.v1.subscription_items.create(
        params={
            "subscription": sub.id,
            "price": _price(client, 600, "Extra").id,
            "proration_date": start + 15 * 86400,
        }
    )
    assert [i.amount for i in _pending(client, cus.id)] == [300]
    client.v1.subscription_items.delete(added.id, params={"proration_date": start + 25 * 86400})
    assert [i.amount for i in _pending(client, cus.id)] == [-100, 300]


# ---- payment methods ---------------------------------------------------------------------


def test_a_customers_card_sources_are_listed_among_its_payment_methods(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(params={"source": "tok_mastercard"})
    card = cus.default_source
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    client.v1.customers.create(params={"source": "tok_amex"})  # another customer's card
    listed = client.v1.payment_methods.list(params={"customer": cus.id}).data
    assert [(p.id, p.object, p.type, p.customer) for p in listed] == [
        (pm.id, "payment_method", "card", cus.id),
        (card, "payment_method", "card", cus.id),
    ]
    as_pm = listed[1]
    assert (as_pm.card.brand, as_pm.card.last4, as_pm.card.exp_year) == ("mastercard", "4444", 2034)
    assert as_pm.card.checks.cvc_check == "pass"
    nested = client.v1.customers.payment_methods.list(cus.id, params={"type": "card"}).data
    assert [p.id for p in nested] == [pm.id, card]
    # pages, the card source as a cursor
    first = client.v1.customers.payment_methods.list(cus.id, params={"limit": 1})
    assert ([p.id for p in first.data], first.has_more) == ([pm.id], True)
    second = client.v1.payment_methods.list(
        params={"customer": cus.id, "limit": 1, "starting_after": pm.id}
    )
    assert ([p.id for p in second.data], second.has_more) == ([card], False)
    assert (
        client.v1.payment_methods.list(params={"customer": cus.id, "type": "sepa_debit"}).data == []
    )
