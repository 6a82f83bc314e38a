"""The emulator's contract suite: the same scenarios, through the official SDK, against the
emulator and against localstripe (a Stripe fake we did not write), for what both serve:
customers, products, plans, prices, payment methods, subscriptions, invoice items,
invoices, events, and the shape of errors.

Stripe's documented behaviour is the reference. Each test asserts what Stripe does; where
localstripe does otherwise, the test steps around it in a branch guarded by
``backend.departs("<name>")``, a name listed once in ``DEPARTURES`` (and in the table of
``docs/emulator-contract.md``). That branch asserts what localstripe does instead, so a
departure that localstripe fixes shows up as a failure and is taken off the list. The
emulator never departs: a difference there is a bug in the emulator.

Run: ``.venv/bin/pytest -q tests/contract``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stripe

BACKENDS = ["emulator", "localstripe"]


@dataclass(frozen=True)
class Departure:
    stripe: str  # what Stripe does
    localstripe: str  # what localstripe 1.15.10 does instead
    step: str  # how the suite steps around it


DEPARTURES: dict[str, Departure] = {
    "list-order": Departure(
        "Lists are newest first; `starting_after` pages towards older objects.",
        "Customers, products, plans, subscriptions and events come oldest first (store "
        "order); `starting_after` pages towards newer ones.",
        "Expect the creation order instead of its reverse; the pages and `has_more` are "
        "checked the same way.",
    ),
    "ending-before": Departure(
        "`ending_before` pages backwards from a cursor.",
        "400 `Unexpected ending_before`.",
        "Assert the 400; page only with `starting_after`.",
    ),
    "created-filter": Departure(
        "Top-level lists (customers, products, …) filter on `created[gt|gte|lt|lte]`.",
        "400 `Unexpected created` on customers (only events take `created`).",
        "Assert the 400; filter `created` on events only.",
    ),
    "unknown-cursor": Departure(
        "A `starting_after` that names no object is an error: `resource_missing`, "
        "param `starting_after`.",
        "The cursor is ignored and the first page is served.",
        "Assert that the first page comes back.",
    ),
    "limit-range": Departure(
        "`limit` outside 1..100 is a 400 (`parameter_invalid_integer`, param `limit`).",
        "`limit=101` is served.",
        "Assert that the list is served.",
    ),
    "deleted-customer-retrieve": Departure(
        "Retrieving a deleted customer answers 200 with `{id, object, deleted: true}`.",
        "404 `Not Found`.",
        "Assert the 404.",
    ),
    "untyped-updates": Departure(
        "Update parameters are typed: `active=false` makes `active` the boolean false.",
        'Updates store the form strings as sent: `active` becomes "false", which neither '
        "`active` filter matches.",
        'Assert the "false" string and that neither `active` filter lists the product.',
    ),
    "metadata-unset": Departure(
        'Setting a metadata key to "" removes the key.',
        'The key is kept with the value "".',
        'Assert the "" value.',
    ),
    "error-body": Departure(
        "Errors carry `code` (`resource_missing`, `parameter_missing`, "
        "`parameter_unknown`, …), `param`, and a message naming the object or parameter.",
        "Only `type` and a generic message (`Not Found`, `Bad request`, `Unexpected x`).",
        "Assert status, `type` and localstripe's message; assert `code` and `param` absent.",
    ),
    "duplicate-id": Departure(
        "Creating a plan (or product) with an id in use: 400 `resource_already_exists`, "
        "param `id`.",
        "409 `Conflict`.",
        "Assert the 409.",
    ),
    "no-prices": Departure(
        "`/v1/prices` (the successor of plans) creates, retrieves and lists prices.",
        "No such route: a plain-text 404 (the SDK raises `APIError`).",
        "Assert the 404; plans stand in for prices in the other scenarios.",
    ),
    "product-delete-with-plans": Departure(
        "A product that still has plans (prices) cannot be deleted: 400.",
        "It is deleted; its plans stay and then fail to render (their `name` reads the product).",
        "Assert the deletion went through, on a product no other scenario uses.",
    ),
    "no-standalone-invoices": Departure(
        "`POST /v1/invoices` makes a draft invoice for any customer; with "
        "`pending_invoice_items_behavior=include` it takes the pending invoice items.",
        "404 `No upcoming invoices for customer` unless the customer has a subscription.",
        "Assert the 404; the invoice list is checked on subscriptions' invoices instead.",
    ),
    "invoiceitem-list-pending-only": Departure(
        "`GET /v1/invoiceitems` lists every invoice item (`pending=true` narrows it to "
        "the ones on no invoice).",
        "Lists only pending items: once on an invoice, an item disappears from the list.",
        "Expect the invoiced item to be missing from the list (it still retrieves).",
    ),
    "subscription-canceled-at": Departure(
        "A canceled subscription has `canceled_at` and `ended_at` set.",
        "`canceled_at` stays null (`ended_at` is set).",
        "Assert `canceled_at` is null.",
    ),
    "customer-delete-keeps-subscriptions": Departure(
        "Deleting a customer cancels its subscriptions.",
        "Its subscriptions stay `active`.",
        "Assert the subscription is still active.",
    ),
    "missing-event-types": Departure(
        "Every write emits its event: `product.updated`, `product.deleted`, "
        "`plan.updated`, `plan.deleted`, `invoiceitem.created`, "
        "`customer.subscription.updated`, `invoice.finalized`, `invoice.paid`, "
        "`payment_method.attached`, … .",
        "Those types are never emitted (creates, `customer.*` and a few invoice and "
        "subscription types are).",
        "Expect exactly those types to be missing (`LOCALSTRIPE_MISSING_EVENTS`).",
    ),
    "no-previous-attributes": Departure(
        "`*.updated` events carry `data.previous_attributes`.",
        "No `previous_attributes`.",
        "Assert it is absent.",
    ),
    "types-filter": Departure(
        "`GET /v1/events` filters on several types with `types[]`.",
        "400 `Unexpected types`.",
        "Assert the 400; query each `type` alone and merge.",
    ),
}

# what localstripe never emits, of the types the scenario of
# test_event_types_of_creates_updates_deletes expects
LOCALSTRIPE_MISSING_EVENTS = {
    "product.updated",
    "product.deleted",
    "plan.updated",
    "plan.deleted",
    "invoiceitem.created",
    "customer.subscription.updated",
    "invoice.finalized",
    "invoice.paid",
    "payment_method.attached",
}


@dataclass
class Backend:
    name: str
    sdk: stripe.StripeClient
    _advance: Callable[[float], int]

    def departs(self, departure: str) -> bool:
        """True on the backend that departs from Stripe there (only localstripe does)."""
        if departure not in DEPARTURES:
            raise KeyError(f"{departure!r} is not listed in DEPARTURES")
        return self.name == "localstripe"

    def advance(self, seconds: int) -> int:
        """Move the backend's clock forward (no sleeping); return its time."""
        return self._advance(seconds)

    def newest_first(self, ids_oldest_first: list[str]) -> list[str]:
        """The order Stripe lists these objects in, or localstripe's."""
        if self.departs("list-order"):
            return list(ids_oldest_first)
        return list(reversed(ids_oldest_first))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "emulator":
        em = request.getfixturevalue("emulator")
        return Backend("emulator", em.stripe(), em.advance)
    ls = request.getfixturevalue("localstripe")
    return Backend("localstripe", ls.stripe(), ls.advance)


# ---- helpers -----------------------------------------------------------------------------


def ids(objs: Any) -> list[str]:
    return [o.id for o in objs]


def pages(list_page: Callable[..., Any], limit: int, **params: Any) -> list[tuple[list[str], bool]]:
    """Walk a list with `limit` and `starting_after`: (ids, has_more) per page."""
    out: list[tuple[list[str], bool]] = []
    after: str | None = None
    while True:
        q = {"limit": limit, **params}
        if after:
            q["starting_after"] = after
        page = list_page(params=q)
        out.append((ids(page.data), page.has_more))
        if not page.has_more or not page.data:
            return out
        after = page.data[-1].id


def error_of(call: Callable[[], Any]) -> stripe.StripeError:
    with pytest.raises(stripe.StripeError) as exc:
        call()
    return exc.value


def assert_invalid_request(
    backend: Backend,
    err: stripe.StripeError,
    *,
    status: int,
    code: str,
    param: str | None,
    message: str,
    localstripe: tuple[int, str],
) -> None:
    """Stripe's error shape, or localstripe's bare one (status, message)."""
    assert isinstance(err, stripe.InvalidRequestError)
    assert err.error is not None and err.error.type == "invalid_request_error"
    if backend.departs("error-body"):
        assert (err.http_status, err.user_message) == localstripe
        assert err.code is None and err.param is None
        return
    assert err.http_status == status
    assert err.code == code
    assert err.param == param
    assert err.user_message == message


def paying_customer(sc: stripe.StripeClient, **params: Any) -> Any:
    """A customer with Stripe's test card attached as its default payment method."""
    cus = sc.v1.customers.create(params=params)
    pm = sc.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    cus = sc.v1.customers.update(
        cus.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    assert cus.invoice_settings.default_payment_method == pm.id
    return cus


def monthly_plan(sc: stripe.StripeClient, plan_id: str, amount: int) -> Any:
    product = sc.v1.products.create(params={"name": f"Product of {plan_id}"})
    return sc.v1.plans.create(
        params={
            "id": plan_id,
            "amount": amount,
            "currency": "usd",
            "interval": "month",
            "product": product.id,
        }
    )


# ---- customers ---------------------------------------------------------------------------


def test_customer_create_retrieve_update(backend: Backend) -> None:
    sc = backend.sdk
    now = backend.advance(0)
    cus = sc.v1.customers.create(
        params={"email": "ada@example.com", "name": "Ada", "metadata": {"plan": "pro"}}
    )
    assert re.fullmatch(r"cus_[A-Za-z0-9]{14,}", cus.id)
    assert cus.object == "customer"
    assert (cus.email, cus.name, cus.livemode) == ("ada@example.com", "Ada", False)
    assert cus.metadata.to_dict() == {"plan": "pro"}
    assert abs(cus.created - now) <= 5

    got = sc.v1.customers.retrieve(cus.id)
    assert (got.id, got.email, got.created) == (cus.id, "ada@example.com", cus.created)

    upd = sc.v1.customers.update(cus.id, params={"name": "Ada L.", "metadata": {"seats": "3"}})
    assert upd.name == "Ada L."
    assert upd.email == "ada@example.com"
    assert upd.metadata.to_dict() == {"plan": "pro", "seats": "3"}  # merged, not replaced

    upd = sc.v1.customers.update(cus.id, params={"metadata": {"plan": ""}})
    if backend.departs("metadata-unset"):
        assert upd.metadata.to_dict() == {"plan": "", "seats": "3"}
    else:
        assert upd.metadata.to_dict() == {"seats": "3"}
    assert sc.v1.customers.retrieve(cus.id).metadata.to_dict() == upd.metadata.to_dict()


def test_customer_list_pages_newest_first(backend: Backend) -> None:
    sc = backend.sdk
    made = [sc.v1.customers.create(params={"email": f"c{i}@example.com"}).id for i in range(5)]
    expected = backend.newest_first(made)

    walked = pages(sc.v1.customers.list, limit=2)
    assert walked == [(expected[0:2], True), (expected[2:4], True), (expected[4:], False)]

    whole = sc.v1.customers.list(params={"limit": 100})
    assert (ids(whole.data), whole.has_more) == (expected, False)
    assert whole.url == "/v1/customers"
    assert ids(sc.v1.customers.list().data) == expected  # default limit 10

    only = sc.v1.customers.list(params={"email": "c3@example.com"})
    assert ids(only.data) == [made[3]]
    assert only.data[0].email == "c3@example.com"


def test_list_cursors_and_limits(backend: Backend) -> None:
    sc = backend.sdk
    made = [sc.v1.customers.create(params={"name": f"n{i}"}).id for i in range(3)]
    expected = backend.newest_first(made)

    if backend.departs("ending-before"):
        err = error_of(lambda: sc.v1.customers.list(params={"ending_before": expected[2]}))
        assert (err.http_status, err.user_message) == (400, "Unexpected ending_before")
    else:
        back = sc.v1.customers.list(params={"ending_before": expected[2], "limit": 1})
        assert (ids(back.data), back.has_more) == ([expected[1]], True)

    t = sc.v1.customers.retrieve(made[0]).created
    if backend.departs("created-filter"):
        err = error_of(lambda: sc.v1.customers.list(params={"created": {"gte": t}}))
        assert (err.http_status, err.user_message) == (400, "Unexpected created")
    else:
        assert ids(sc.v1.customers.list(params={"created": {"gte": t}}).data) == expected
        assert sc.v1.customers.list(params={"created": {"gt": t + 60}}).data == []

    if backend.departs("unknown-cursor"):
        first = sc.v1.customers.list(params={"starting_after": "cus_NoSuchCustomer0"})
        assert ids(first.data) == expected
    else:
        err = error_of(
            lambda: sc.v1.customers.list(params={"starting_after": "cus_NoSuchCustomer0"})
        )
        assert err.code == "resource_missing"
        assert err.param == "starting_after"
        assert err.user_message == "No such customer: 'cus_NoSuchCustomer0'"

    if backend.departs("limit-range"):
        assert ids(sc.v1.customers.list(params={"limit": 101}).data) == expected
    else:
        err = error_of(lambda: sc.v1.customers.list(params={"limit": 101}))
        assert (err.http_status, err.param) == (400, "limit")
        assert err.user_message == "Invalid limit: must be between 1 and 100"


def test_customer_delete(backend: Backend) -> None:
    sc = backend.sdk
    keep = sc.v1.customers.create(params={"name": "keep"})
    gone = sc.v1.customers.create(params={"name": "gone"})
    deleted = sc.v1.customers.delete(gone.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (gone.id, "customer", True)

    if backend.departs("deleted-customer-retrieve"):
        err = error_of(lambda: sc.v1.customers.retrieve(gone.id))
        assert (err.http_status, err.user_message) == (404, "Not Found")
    else:
        again = sc.v1.customers.retrieve(gone.id)
        assert again.to_dict() == {"id": gone.id, "object": "customer", "deleted": True}

    assert ids(sc.v1.customers.list().data) == [keep.id]


# ---- products, plans, prices -------------------------------------------------------------


def test_product_lifecycle(backend: Backend) -> None:
    sc = backend.sdk
    first = sc.v1.products.create(params={"name": "Basic"})
    prod = sc.v1.products.create(
        params={"name": "Gold", "description": "The gold tier", "metadata": {"tier": "3"}}
    )
    assert prod.id.startswith("prod_")
    assert prod.object == "product"
    assert (prod.name, prod.description, prod.active) == ("Gold", "The gold tier", True)
    assert prod.metadata.to_dict() == {"tier": "3"}

    upd = sc.v1.products.update(prod.id, params={"name": "Gold+", "active": False})
    assert sc.v1.products.retrieve(prod.id).name == upd.name == "Gold+"
    assert ids(sc.v1.products.list().data) == backend.newest_first([first.id, prod.id])
    assert ids(sc.v1.products.list(params={"active": True}).data) == [first.id]
    inactive = ids(sc.v1.products.list(params={"active": False}).data)
    if backend.departs("untyped-updates"):
        assert (upd.active, inactive) == ("false", [])
    else:
        assert (upd.active, inactive) == (False, [prod.id])

    deleted = sc.v1.products.delete(prod.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (prod.id, "product", True)
    err = error_of(lambda: sc.v1.products.retrieve(prod.id))
    assert_invalid_request(
        backend,
        err,
        status=404,
        code="resource_missing",
        param="id",
        message=f"No such product: '{prod.id}'",
        localstripe=(404, "Not Found"),
    )
    assert ids(sc.v1.products.list().data) == [first.id]


def test_product_with_plans_cannot_be_deleted(backend: Backend) -> None:
    sc = backend.sdk
    plan = monthly_plan(sc, "silver-monthly", 900)
    if backend.departs("product-delete-with-plans"):
        assert sc.v1.products.delete(plan.product).deleted is True
        return
    err = error_of(lambda: sc.v1.products.delete(plan.product))
    assert isinstance(err, stripe.InvalidRequestError)
    assert err.http_status == 400
    assert "cannot be deleted" in (err.user_message or "")
    assert sc.v1.products.retrieve(plan.product).id == plan.product
    sc.v1.plans.delete(plan.id)
    assert sc.v1.products.delete(plan.product).deleted is True


def test_plan_lifecycle(backend: Backend) -> None:
    sc = backend.sdk
    prod = sc.v1.products.create(params={"name": "Gold"})
    other = sc.v1.products.create(params={"name": "Other"})
    yearly = sc.v1.plans.create(
        params={"amount": 9900, "currency": "usd", "interval": "year", "product": other.id}
    )
    plan = sc.v1.plans.create(
        params={
            "id": "gold-monthly",
            "amount": 1500,
            "currency": "usd",
            "interval": "month",
            "product": prod.id,
            "nickname": "Gold monthly",
        }
    )
    assert (plan.id, plan.object) == ("gold-monthly", "plan")
    assert (plan.amount, plan.currency, plan.interval, plan.interval_count) == (
        1500,
        "usd",
        "month",
        1,
    )
    assert (plan.product, plan.nickname, plan.active) == (prod.id, "Gold monthly", True)
    assert yearly.id != plan.id and yearly.interval == "year"

    got = sc.v1.plans.retrieve("gold-monthly")
    assert (got.amount, got.product) == (1500, prod.id)
    assert ids(sc.v1.plans.list(params={"product": prod.id}).data) == ["gold-monthly"]
    assert ids(sc.v1.plans.list().data) == backend.newest_first([yearly.id, plan.id])

    assert sc.v1.plans.update(plan.id, params={"nickname": "Gold"}).nickname == "Gold"

    err = error_of(
        lambda: sc.v1.plans.create(
            params={
                "id": "gold-monthly",
                "amount": 1,
                "currency": "usd",
                "interval": "month",
                "product": prod.id,
            }
        )
    )
    if backend.departs("duplicate-id"):
        assert (err.http_status, err.user_message) == (409, "Conflict")
    else:
        assert (err.http_status, err.code, err.param) == (400, "resource_already_exists", "id")

    deleted = sc.v1.plans.delete(plan.id)
    assert (deleted.id, deleted.object, deleted.deleted) == ("gold-monthly", "plan", True)
    err = error_of(lambda: sc.v1.plans.retrieve("gold-monthly"))
    assert_invalid_request(
        backend,
        err,
        status=404,
        code="resource_missing",
        param="id",
        message="No such plan: 'gold-monthly'",
        localstripe=(404, "Not Found"),
    )


def test_prices(backend: Backend) -> None:
    sc = backend.sdk
    prod = sc.v1.products.create(params={"name": "Metered"})
    params: dict[str, Any] = {
        "unit_amount": 900,
        "currency": "usd",
        "recurring": {"interval": "month"},
        "product": prod.id,
    }
    if backend.departs("no-prices"):
        err = error_of(lambda: sc.v1.prices.create(params=params))
        assert isinstance(err, stripe.APIError)
        assert err.http_status == 404
        return
    price = sc.v1.prices.create(params=params)
    assert price.id.startswith("price_")
    assert (price.object, price.type, price.unit_amount, price.active) == (
        "price",
        "recurring",
        900,
        True,
    )
    assert (price.recurring.interval, price.recurring.interval_count) == ("month", 1)
    assert sc.v1.prices.retrieve(price.id).product == prod.id
    assert ids(sc.v1.prices.list(params={"product": prod.id}).data) == [price.id]


# ---- payment methods, subscriptions, invoice items, invoices -----------------------------


def test_payment_method_attach(backend: Backend) -> None:
    sc = backend.sdk
    cus = sc.v1.customers.create(params={"email": "pay@example.com"})
    pm = sc.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    assert re.fullmatch(r"pm_[A-Za-z0-9]{14,}", pm.id)  # a new payment method, not the alias
    assert (pm.object, pm.type, pm.customer) == ("payment_method", "card", cus.id)
    assert (pm.card.brand, pm.card.last4) == ("visa", "4242")
    listed = sc.v1.payment_methods.list(params={"customer": cus.id, "type": "card"})
    assert ids(listed.data) == [pm.id]
    upd = sc.v1.customers.update(
        cus.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    assert upd.invoice_settings.default_payment_method == pm.id


def test_subscription_with_pending_item_then_cancel(backend: Backend) -> None:
    sc = backend.sdk
    plan = monthly_plan(sc, "pro-monthly", 1500)
    cus = paying_customer(sc, email="sub@example.com")
    fee = sc.v1.invoice_items.create(
        params={"customer": cus.id, "amount": 250, "currency": "usd", "description": "Setup"}
    )
    assert fee.id.startswith("ii_")
    assert (fee.object, fee.amount, fee.currency, fee.invoice) == ("invoiceitem", 250, "usd", None)
    assert ids(sc.v1.invoice_items.list(params={"customer": cus.id}).data) == [fee.id]

    sub = sc.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"plan": plan.id, "quantity": 2}]}
    )
    assert sub.id.startswith("sub_")
    assert (sub.object, sub.status, sub.customer) == ("subscription", "active", cus.id)
    [item] = sub["items"].data
    assert item.id.startswith("si_")
    assert (item.plan.id, item.plan.amount, item.quantity) == ("pro-monthly", 1500, 2)

    # the first invoice: the subscription's line and the pending item, paid with the card
    inv = sc.v1.invoices.retrieve(sub.latest_invoice)
    assert inv.id.startswith("in_")
    assert (inv.customer, inv.status, inv.currency) == (cus.id, "paid", "usd")
    assert (inv.total, inv.amount_due, inv.amount_paid) == (3250, 3250, 3250)
    assert inv.parent.subscription_details.subscription == sub.id
    lines = sc.v1.invoices.line_items.list(inv.id)
    assert all(line.id.startswith("il_") and line.object == "line_item" for line in lines.data)
    assert sorted(line.amount for line in lines.data) == [250, 3000]
    assert ids(sc.v1.invoices.list(params={"customer": cus.id}).data) == [inv.id]

    assert sc.v1.invoice_items.retrieve(fee.id).invoice == inv.id
    listed = ids(sc.v1.invoice_items.list(params={"customer": cus.id}).data)
    if backend.departs("invoiceitem-list-pending-only"):
        assert listed == []
    else:
        assert listed == [fee.id]

    assert ids(sc.v1.subscriptions.list(params={"customer": cus.id}).data) == [sub.id]
    canceled = sc.v1.subscriptions.cancel(sub.id)
    assert (canceled.id, canceled.status) == (sub.id, "canceled")
    assert isinstance(canceled.ended_at, int)
    if backend.departs("subscription-canceled-at"):
        assert canceled.canceled_at is None
    else:
        assert canceled.canceled_at == canceled.ended_at
    assert sc.v1.subscriptions.retrieve(sub.id).status == "canceled"
    # canceled subscriptions are left out unless asked for
    assert sc.v1.subscriptions.list(params={"customer": cus.id}).data == []
    for status in ("all", "canceled"):
        got = sc.v1.subscriptions.list(params={"customer": cus.id, "status": status}).data
        assert [(s.id, s.status) for s in got] == [(sub.id, "canceled")]


def test_subscriptions_list_newest_first(backend: Backend) -> None:
    sc = backend.sdk
    plan = monthly_plan(sc, "team-monthly", 500)
    cus = paying_customer(sc)
    subs = [
        sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"plan": plan.id}]}).id
        for _ in range(3)
    ]
    expected = backend.newest_first(subs)
    assert pages(sc.v1.subscriptions.list, limit=2, customer=cus.id) == [
        (expected[:2], True),
        (expected[2:], False),
    ]


def test_deleting_a_customer_cancels_its_subscriptions(backend: Backend) -> None:
    sc = backend.sdk
    plan = monthly_plan(sc, "basic-monthly", 700)
    cus = paying_customer(sc)
    sub = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"plan": plan.id}]})
    sc.v1.customers.delete(cus.id)
    status = sc.v1.subscriptions.retrieve(sub.id).status
    if backend.departs("customer-delete-keeps-subscriptions"):
        assert status == "active"
    else:
        assert status == "canceled"


def test_invoice_from_pending_items_then_pay(backend: Backend) -> None:
    sc = backend.sdk
    cus = paying_customer(sc)
    a = sc.v1.invoice_items.create(params={"customer": cus.id, "amount": 1000, "currency": "usd"})
    backend.advance(5)
    b = sc.v1.invoice_items.create(params={"customer": cus.id, "amount": 234, "currency": "usd"})
    assert ids(sc.v1.invoice_items.list(params={"customer": cus.id}).data) == [b.id, a.id]

    params = {"customer": cus.id, "pending_invoice_items_behavior": "include"}
    if backend.departs("no-standalone-invoices"):
        err = error_of(lambda: sc.v1.invoices.create(params=params))
        assert (err.http_status, err.user_message) == (404, "No upcoming invoices for customer")
        return
    inv = sc.v1.invoices.create(params=params)
    assert inv.id.startswith("in_")
    assert (inv.object, inv.status, inv.customer, inv.total) == ("invoice", "draft", cus.id, 1234)
    assert sorted(li.amount for li in sc.v1.invoices.line_items.list(inv.id).data) == [234, 1000]
    assert {sc.v1.invoice_items.retrieve(i).invoice for i in (a.id, b.id)} == {inv.id}

    paid = sc.v1.invoices.pay(inv.id)
    assert (paid.status, paid.amount_paid, paid.total) == ("paid", 1234, 1234)
    assert ids(sc.v1.invoices.list(params={"customer": cus.id}).data) == [inv.id]


def test_invoices_list_by_customer_newest_first(backend: Backend) -> None:
    sc = backend.sdk
    plan = monthly_plan(sc, "seat-monthly", 300)
    cus = paying_customer(sc)
    other = paying_customer(sc)
    made = []
    for _ in range(3):
        sub = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"plan": plan.id}]})
        made.append(sub.latest_invoice)
        backend.advance(60)
    sc.v1.subscriptions.create(params={"customer": other.id, "items": [{"plan": plan.id}]})

    # newest first (localstripe sorts invoices by date, as Stripe lists them)
    newest = list(reversed(made))
    assert pages(sc.v1.invoices.list, limit=2, customer=cus.id) == [
        (newest[:2], True),
        (newest[2:], False),
    ]
    for inv in sc.v1.invoices.list(params={"customer": cus.id}).data:
        assert (inv.customer, inv.status, inv.total) == (cus.id, "paid", 300)
        [line] = sc.v1.invoices.line_items.list(inv.id).data
        assert (line.amount, line.currency) == (300, "usd")
    assert len(sc.v1.invoices.list(params={"customer": other.id}).data) == 1


# ---- events ------------------------------------------------------------------------------


def test_events_filtered_by_created_and_type_and_paged(backend: Backend) -> None:
    sc = backend.sdk
    t0 = backend.advance(0)
    cus = sc.v1.customers.create(params={"name": "A"})
    t1 = backend.advance(10)
    sc.v1.customers.update(cus.id, params={"name": "B"})
    t2 = backend.advance(10)
    prod = sc.v1.products.create(params={"name": "P"})
    sc.v1.customers.delete(cus.id)

    everything = sc.v1.events.list(params={"limit": 100})
    assert everything.has_more is False
    order = backend.newest_first(
        ["customer.created", "customer.updated", "product.created", "customer.deleted"]
    )
    assert [e.type for e in everything.data] == order
    for e in everything.data:
        assert re.fullmatch(r"evt_[A-Za-z0-9]{14,}", e.id)
        assert (e.object, e.livemode) == ("event", False)
    by_type = {e.type: e for e in everything.data}
    assert by_type["customer.created"].data.object.id == cus.id
    assert by_type["customer.created"].data.object.name == "A"
    assert by_type["customer.updated"].data.object.name == "B"
    assert by_type["product.created"].data.object.id == prod.id
    assert abs(by_type["customer.created"].created - t0) <= 2
    assert by_type["customer.updated"].created - by_type["customer.created"].created >= 10
    assert by_type["customer.deleted"].created >= t2

    def types(**params: Any) -> list[str]:
        return [e.type for e in sc.v1.events.list(params={"limit": 100, **params}).data]

    assert types(created={"gte": t1}) == [x for x in order if x != "customer.created"]
    assert types(created={"gt": t1 + 5}) == backend.newest_first(
        ["product.created", "customer.deleted"]
    )
    assert types(created={"lt": t1}) == ["customer.created"]
    assert types(created={"lte": t1 + 5}) == backend.newest_first(
        ["customer.created", "customer.updated"]
    )
    assert types(created={"gte": t2 + 60}) == []
    assert types(type="customer.updated") == ["customer.updated"]
    assert types(type="customer.deleted", created={"gte": t2}) == ["customer.deleted"]

    # one event per page, following starting_after, as a sync follows them
    walked = pages(sc.v1.events.list, limit=1)
    assert [p[0] for p in walked] == [[e.id] for e in everything.data]
    assert [p[1] for p in walked] == [True, True, True, False]
    since_t1 = [e.id for e in everything.data if e.type != "customer.created"]
    assert pages(sc.v1.events.list, limit=2, created={"gte": t1}) == [
        (since_t1[:2], True),
        (since_t1[2:], False),
    ]

    wanted = ["customer.created", "customer.deleted"]
    if backend.departs("types-filter"):
        err = error_of(lambda: sc.v1.events.list(params={"types": wanted}))
        assert (err.http_status, err.user_message) == (400, "Unexpected types")
        got = sorted(t for w in wanted for t in types(type=w))
    else:
        got = sorted(types(types=wanted))
    assert got == wanted


def test_event_types_of_creates_updates_deletes(backend: Backend) -> None:
    sc = backend.sdk
    cus = paying_customer(sc, name="Ev")
    prod = sc.v1.products.create(params={"name": "Short-lived"})
    sc.v1.products.update(prod.id, params={"description": "soon gone"})
    plan = sc.v1.plans.create(
        params={"amount": 100, "currency": "usd", "interval": "month", "product": prod.id}
    )
    sc.v1.plans.update(plan.id, params={"nickname": "soon gone"})
    sc.v1.plans.delete(plan.id)
    sc.v1.products.delete(prod.id)
    sub_plan = monthly_plan(sc, "events-monthly", 400)
    sc.v1.invoice_items.create(params={"customer": cus.id, "amount": 50, "currency": "usd"})
    sub = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"plan": sub_plan.id}]})
    sc.v1.subscriptions.update(sub.id, params={"metadata": {"seats": "4"}})
    sc.v1.subscriptions.cancel(sub.id)
    sc.v1.customers.delete(cus.id)

    emitted = {e.type for e in sc.v1.events.list(params={"limit": 100}).data}
    expected = {
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "payment_method.attached",
        "product.created",
        "product.updated",
        "product.deleted",
        "plan.created",
        "plan.updated",
        "plan.deleted",
        "invoiceitem.created",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    }
    if backend.departs("missing-event-types"):
        assert emitted >= expected - LOCALSTRIPE_MISSING_EVENTS
        assert emitted & LOCALSTRIPE_MISSING_EVENTS == set()
    else:
        assert emitted >= expected


def test_updated_event_previous_attributes(backend: Backend) -> None:
    sc = backend.sdk
    cus = sc.v1.customers.create(params={"name": "Before", "email": "same@example.com"})
    sc.v1.customers.update(cus.id, params={"name": "After"})
    [event] = sc.v1.events.list(params={"type": "customer.updated"}).data
    assert event.data.object.id == cus.id
    assert (event.data.object.name, event.data.object.email) == ("After", "same@example.com")
    data = event.data.to_dict()
    if backend.departs("no-previous-attributes"):
        assert "previous_attributes" not in data
    else:
        assert data["previous_attributes"] == {"name": "Before"}


# ---- errors ------------------------------------------------------------------------------


def test_missing_objects_are_404_resource_missing(backend: Backend) -> None:
    sc = backend.sdk
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: sc.v1.customers.retrieve("cus_NoSuchCustomer0"), "customer 'cus_NoSuchCustomer0'"),
        (
            lambda: sc.v1.customers.update("cus_NoSuchCustomer0", params={"name": "x"}),
            "customer 'cus_NoSuchCustomer0'",
        ),
        (lambda: sc.v1.products.retrieve("prod_NoSuchProduct0"), "product 'prod_NoSuchProduct0'"),
        (
            lambda: sc.v1.subscriptions.retrieve("sub_NoSuchSubscr0"),
            "subscription 'sub_NoSuchSubscr0'",
        ),
        (lambda: sc.v1.invoices.retrieve("in_NoSuchInvoice00"), "invoice 'in_NoSuchInvoice00'"),
    ]
    for call, what in cases:
        kind, oid = what.split(" ")
        assert_invalid_request(
            backend,
            error_of(call),
            status=404,
            code="resource_missing",
            param="id",
            message=f"No such {kind}: {oid}",
            localstripe=(404, "Not Found"),
        )


def test_bad_parameters_are_400_with_param(backend: Backend) -> None:
    sc = backend.sdk
    prod = sc.v1.products.create(params={"name": "P"})
    missing = error_of(
        lambda: sc.v1.plans.create(params={"amount": 100, "currency": "usd", "product": prod.id})
    )
    assert_invalid_request(
        backend,
        missing,
        status=400,
        code="parameter_missing",
        param="interval",
        message="Missing required param: interval.",
        localstripe=(400, "Bad request"),
    )
    unknown = error_of(
        lambda: sc.v1.customers.create(params={"emial": "typo@example.com"})  # type: ignore[typeddict-unknown-key]
    )
    assert_invalid_request(
        backend,
        unknown,
        status=400,
        code="parameter_unknown",
        param="emial",
        message="Received unknown parameter: emial",
        localstripe=(400, "Unexpected emial"),
    )
    assert sc.v1.customers.list().data == []  # nothing was made by the refused requests


# ---- the list of departures itself -------------------------------------------------------


def test_every_departure_is_stepped_around_and_documented() -> None:
    source = Path(__file__).read_text()
    used = set(re.findall(r'departs\("([a-z-]+)"\)', source))
    assert used == set(DEPARTURES)
    doc = (Path(__file__).parents[2] / "docs" / "emulator-contract.md").read_text()
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", doc, flags=re.MULTILINE))
    assert documented == set(DEPARTURES)
