"""Realistic, linked test data: customers with card sources and tax ids, products with
prices, subscriptions with items and paid invoices with lines, charges with balance
transactions, refunds and disputes, invoice items, coupons, connected accounts with
persons and external accounts, application fees with refunds, checkout sessions with
line items, and the events of their creation (optional).

Customers and their cards take a fast path (JSON rendered from a template, no dict per
object) so that a million of them load in seconds; the other collections are built
as dicts, at ratios of the customer count.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

from stripesync.emulator.store import Record, dumps

if TYPE_CHECKING:
    from stripesync.emulator.engine import Emulator

FIRST = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Barbara",
    "Ken",
    "Margaret",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Donald",
    "Hedy",
    "John",
    "Katherine",
    "Guido",
    "Anita",
    "Tim",
]
LAST = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Knuth",
    "Lamarr",
    "Backus",
    "Johnson",
]
PRODUCTS = [
    "Starter",
    "Team",
    "Business",
    "Enterprise",
    "Add-on seats",
    "Storage pack",
    "Support plan",
    "Analytics",
    "API calls",
    "Onboarding",
]
TAX_TYPES = [
    ("eu_vat", "DE123456789"),
    ("gb_vat", "GB123456789"),
    ("us_ein", "12-3456789"),
    ("au_abn", "12345678912"),
]
BRANDS = [
    ("Visa", "4242"),
    ("MasterCard", "4444"),
    ("American Express", "8431"),
    ("Discover", "1117"),
]


def _template(obj: dict[str, Any], holes: list[str]) -> tuple[list[bytes], list[int]]:
    """Split the compact JSON of `obj` at the values of the fields in `holes`: the parts
    between them, and the order in which the holes appear."""
    marked = dict(obj)
    for i, h in enumerate(holes):
        marked[h] = f"\x00{i}\x00"
    text = dumps(marked)
    found = sorted((text.index(f'"\\u0000{i}\\u0000"'.encode()), i) for i in range(len(holes)))
    parts: list[bytes] = []
    pos = 0
    for at, i in found:
        parts.append(text[pos:at])
        pos = at + len(f'"\\u0000{i}\\u0000"')
    parts.append(text[pos:])
    return parts, [i for _, i in found]


def _fill(template: tuple[list[bytes], list[int]], values: list[bytes]) -> bytes:
    parts, order = template
    out = [parts[0]]
    for i, p in zip(order, parts[1:], strict=True):
        out.append(values[i])
        out.append(p)
    return b"".join(out)


def _q(s: str) -> bytes:
    return b'"' + s.encode() + b'"'


def generate(
    em: Emulator,
    customers: int = 100,
    *,
    seed: int = 0,
    days: int = 365,
    card_ratio: float = 0.6,
    tax_id_ratio: float = 0.1,
    products: int | None = None,
    subscriptions: int | None = None,
    charges: int | None = None,
    refund_ratio: float = 0.1,
    dispute_ratio: float = 0.02,
    invoiceitems: int | None = None,
    accounts: int | None = None,
    checkout_sessions: int | None = None,
    events: bool = False,
) -> dict[str, Any]:
    """Fill the account; returns the counts per collection that were added."""
    rng = random.Random(seed)
    now = em.clock.now()
    start = now - days * 86400
    before = em.store.counts()
    call = em.internal_call()
    cus_ids = _customers(em, rng, customers, start, now, card_ratio, tax_id_ratio)
    n_products = products if products is not None else max(3, min(1000, customers // 200))
    n_subs = subscriptions if subscriptions is not None else min(customers, 20_000, customers // 3)
    n_charges = charges if charges is not None else min(customers, 20_000, customers // 2)
    n_items = invoiceitems if invoiceitems is not None else min(5_000, customers // 20)
    n_accounts = accounts if accounts is not None else min(100, max(1, customers // 1000))
    n_sessions = checkout_sessions if checkout_sessions is not None else min(2_000, customers // 50)
    prices = _catalog(em, rng, n_products, start)
    if cus_ids and prices:
        _subscriptions(em, rng, call, cus_ids, prices, n_subs, start, now)
        _invoiceitems(em, rng, cus_ids, prices, n_items, start, now)
        _checkout_sessions(em, rng, cus_ids, prices, n_sessions, start, now)
    if cus_ids:
        _charges(em, rng, cus_ids, n_charges, start, now, refund_ratio, dispute_ratio)
    _connect(em, rng, n_accounts, start, now)
    if events:
        _events(em, call, before)
    after = em.store.counts()
    return {
        "added": {t: n - before.get(t, 0) for t, n in after.items() if n != before.get(t, 0)},
    }


# ---- customers (fast path) ---------------------------------------------------------------


def _customers(
    em: Emulator,
    rng: random.Random,
    n: int,
    start: int,
    now: int,
    card_ratio: float,
    tax_ratio: float,
) -> list[str]:
    if n <= 0:
        return []
    base = em.new_object("customer")
    base.update(currency="usd", address=None)
    holes = ["id", "created", "email", "name", "invoice_prefix", "default_source", "metadata"]
    parts = _template(base, holes)
    card = em.new_object("card")
    card.update(exp_month=12, exp_year=2031, funding="credit", country="US", cvc_check="pass")
    card_holes = ["id", "brand", "last4", "customer", "fingerprint"]
    card_parts = _template(card, card_holes)
    store = em.store
    objs = store.objects("customer")
    index = store.index("customer")
    cards = store.objects("card")
    card_index = store.index("card")
    span = max(1, now - start)
    ids: list[str] = []
    token = em.ids.token
    choice = rng.choice
    rand = rng.random
    for i in range(n):
        created = start + (span * i) // n
        cid = "cus_" + token(14)
        first, last = choice(FIRST), choice(LAST)
        default_source = b"null"
        if rand() < card_ratio:
            card_id = "card_" + token(24)
            brand, last4 = choice(BRANDS)
            raw_card = _fill(
                card_parts, [_q(card_id), _q(brand), _q(last4), _q(cid), _q(token(16))]
            )
            crec = Record("card", card_id, created, store.next_seq(), None, raw_card)
            cards[card_id] = crec
            card_index.add(crec)
            store.add_to_list(f"/v1/customers/{cid}/sources", crec)
            default_source = _q(card_id)
        raw = _fill(
            parts,
            [
                _q(cid),
                str(created).encode(),
                _q(f"{first.lower()}.{last.lower()}{i}@example.com"),
                _q(f"{first} {last}"),
                _q(token(8).upper()),
                default_source,
                b'{"segment":"' + (b"smb" if i % 3 else b"enterprise") + b'"}',
            ],
        )
        rec = Record("customer", cid, created, store.next_seq(), None, raw)
        objs[cid] = rec
        index.add(rec)
        ids.append(cid)
        if rand() < tax_ratio:
            code, value = choice(TAX_TYPES)
            tax = em.new_object(
                "tax_id",
                customer=cid,
                type=code,
                value=value,
                created=created,
                country=value[:2] if code.endswith("vat") else code[:2].upper(),
            )
            tax["owner"] = {**em.shapes.new("TaxId.Owner"), "type": "customer", "customer": cid}
            tax["verification"] = {
                "status": "verified",
                "verified_address": None,
                "verified_name": f"{first} {last}",
            }
            em.insert("tax_id", tax)
    return ids


# ---- catalog -----------------------------------------------------------------------------


def _catalog(em: Emulator, rng: random.Random, n: int, start: int) -> list[dict[str, Any]]:
    prices: list[dict[str, Any]] = []
    for i in range(n):
        created = start + i
        name = PRODUCTS[i % len(PRODUCTS)] + ("" if i < len(PRODUCTS) else f" {i}")
        prod = em.new_object(
            "product", name=name, created=created, updated=created, description=f"{name} plan"
        )
        em.insert("product", prod)
        base = rng.choice([500, 900, 1500, 2900, 4900, 9900])
        for interval, mult in (("month", 1), ("year", 10)):
            p = em.new_object(
                "price",
                product=prod["id"],
                currency="usd",
                unit_amount=base * mult,
                unit_amount_decimal=str(base * mult),
                type="recurring",
                created=created,
                tax_behavior="unspecified",
                nickname=f"{name} {interval}ly",
            )
            rec = em.shapes.new("Price.Recurring")
            rec.update(interval=interval, interval_count=1, usage_type="licensed")
            p["recurring"] = rec
            em.insert("price", p)
            prices.append(p)
        if i == 0:
            prod["default_price"] = prices[-2]["id"]
    for i in range(max(1, n // 5)):
        c = em.new_object(
            "coupon",
            percent_off=rng.choice([10, 20, 25, 50]),
            duration=rng.choice(["once", "forever", "repeating"]),
            name=f"PROMO{i}",
            created=start + i,
        )
        if c["duration"] == "repeating":
            c["duration_in_months"] = 3
        em.insert("coupon", c)
        t = em.new_object(
            "tax_rate",
            display_name="VAT",
            percentage=rng.choice([7.0, 19.0, 20.0]),
            inclusive=False,
            active=True,
            created=start + i,
            country=rng.choice(["DE", "FR", "GB"]),
        )
        em.insert("tax_rate", t)
    return prices


# ---- billing -----------------------------------------------------------------------------


def _subscriptions(
    em: Emulator,
    rng: random.Random,
    call: Any,
    cus_ids: list[str],
    prices: list[dict[str, Any]],
    n: int,
    start: int,
    now: int,
) -> None:
    from stripesync.emulator.behaviours import embedded_list, plan_from_price

    chosen = rng.sample(cus_ids, min(n, len(cus_ids)))
    chosen.sort()
    for k, cid in enumerate(chosen):
        cus = em.get("customer", cid)
        assert cus is not None
        created = max(cus.created, start + (now - start) * k // max(1, len(chosen)))
        status = rng.choices(["active", "trialing", "canceled", "past_due"], [70, 10, 15, 5])[0]
        sub = em.new_object(
            "subscription",
            customer=cid,
            created=created,
            start_date=created,
            billing_cycle_anchor=created,
            currency="usd",
            status=status,
            collection_method="charge_automatically",
        )
        sub["invoice_settings"] = em.shapes.new("Subscription.InvoiceSettings")
        if status == "canceled":
            sub.update(
                canceled_at=min(now, created + 86400 * 40), ended_at=min(now, created + 86400 * 40)
            )
            cd = em.shapes.new("Subscription.CancellationDetails")
            cd["reason"] = "cancellation_requested"
            sub["cancellation_details"] = cd
        if status == "trialing":
            sub.update(trial_start=created, trial_end=created + 14 * 86400)
        path = f"/v1/subscription_items?subscription={sub['id']}"
        n_items = rng.choice([1, 1, 1, 2])
        items = []
        for price in rng.sample(prices, n_items):
            interval = price["recurring"]["interval"]
            length = 30 * 86400 if interval == "month" else 365 * 86400
            periods = max(0, (now - created) // length)
            pstart = created + periods * length
            it = em.new_object(
                "subscription_item",
                subscription=sub["id"],
                created=created,
                price=dict(price),
                plan=plan_from_price(em, price),
                quantity=rng.choice([1, 1, 2, 5]),
                current_period_start=pstart,
                current_period_end=pstart + length,
                discounts=[],
            )
            items.append(em.insert("subscription_item", it, lists=(path,)))
        sub["items"] = embedded_list(em, path, ascending=True)
        inv = _paid_invoice(em, cus.obj, sub, items, created)
        sub["latest_invoice"] = inv
        em.insert("subscription", sub)


def _paid_invoice(
    em: Emulator, cus: dict[str, Any], sub: dict[str, Any], items: list[Record], created: int
) -> str:
    from stripesync.emulator.behaviours import (
        embedded_list,
        line_pricing,
        set_invoice_totals,
        subscription_invoice_parent,
        subscription_line_parent,
    )

    inv = em.new_object(
        "invoice",
        customer=cus["id"],
        created=created,
        currency="usd",
        status="paid",
        collection_method="charge_automatically",
        billing_reason="subscription_create",
        customer_email=cus.get("email"),
        customer_name=cus.get("name"),
        period_start=created,
        period_end=created,
        number=f"{cus.get('invoice_prefix')}-0001",
        attempted=True,
        attempt_count=1,
        effective_at=created,
        account_country="US",
        account_name="Stripe Emulator",
        default_tax_rates=[],
        discounts=[],
        auto_advance=False,
    )
    inv["issuer"] = {"type": "self"}
    inv["payment_settings"] = em.shapes.new("Invoice.PaymentSettings")
    st = em.shapes.new("Invoice.StatusTransitions")
    st.update(finalized_at=created, paid_at=created)
    inv["status_transitions"] = st
    inv["parent"] = subscription_invoice_parent(em, sub)
    total = 0
    for it in items:
        o = it.obj
        amount = int(o["price"].get("unit_amount") or 0) * int(o.get("quantity") or 1)
        if sub.get("status") == "trialing":
            amount = 0
        total += amount
        line = em.new_object(
            "line_item",
            invoice=inv["id"],
            amount=amount,
            subtotal=amount,
            currency="usd",
            quantity=o.get("quantity"),
            description=f"{o.get('quantity')} \u00d7 {o['price'].get('nickname')}",
            discountable=True,
            discounts=[],
            subscription=sub["id"],
        )
        line["period"] = {"start": o["current_period_start"], "end": o["current_period_end"]}
        line["parent"] = subscription_line_parent(em, sub["id"], it.id)
        line["pricing"] = line_pricing(em, o["price"])
        em.insert("line_item", line)
    set_invoice_totals(inv, total, paid=total)
    inv["lines"] = embedded_list(em, f"/v1/invoices/{inv['id']}/lines")
    em.insert("invoice", inv)
    return str(inv["id"])


def _invoiceitems(
    em: Emulator,
    rng: random.Random,
    cus_ids: list[str],
    prices: list[dict[str, Any]],
    n: int,
    start: int,
    now: int,
) -> None:
    for k in range(n):
        cid = rng.choice(cus_ids)
        created = start + (now - start) * k // max(1, n)
        amount = rng.choice([100, 250, 1000, 4200])
        ii = em.new_object(
            "invoiceitem",
            customer=cid,
            amount=amount,
            currency="usd",
            description="One-time setup fee",
            date=created,
            net_amount=amount,
            quantity=1,
            quantity_decimal="1",
            discountable=True,
            proration=False,
        )
        ii["period"] = {"start": created, "end": created}
        em.insert("invoiceitem", ii)


def _checkout_sessions(
    em: Emulator,
    rng: random.Random,
    cus_ids: list[str],
    prices: list[dict[str, Any]],
    n: int,
    start: int,
    now: int,
) -> None:
    for k in range(n):
        created = start + (now - start) * k // max(1, n)
        price = rng.choice(prices)
        qty = rng.choice([1, 2, 3])
        amount = int(price.get("unit_amount") or 0) * qty
        status = rng.choice(["complete", "complete", "expired", "open"])
        cs = em.new_object(
            "checkout.session",
            customer=rng.choice(cus_ids),
            created=created,
            currency="usd",
            mode="subscription",
            status=status,
            payment_status="paid" if status == "complete" else "unpaid",
            amount_subtotal=amount,
            amount_total=amount,
            expires_at=created + 86400,
        )
        path = f"/v1/checkout/sessions/{cs['id']}/line_items"
        item = em.new_object(
            "item",
            amount_subtotal=amount,
            amount_total=amount,
            amount_discount=0,
            amount_tax=0,
            currency="usd",
            description=price.get("nickname"),
            price=dict(price),
            quantity=qty,
        )
        em.insert("checkout.session", cs)
        em.insert("item", item, lists=(path,))


# ---- payments ----------------------------------------------------------------------------


def _charges(
    em: Emulator,
    rng: random.Random,
    cus_ids: list[str],
    n: int,
    start: int,
    now: int,
    refund_ratio: float,
    dispute_ratio: float,
) -> None:
    for k in range(n):
        cid = rng.choice(cus_ids)
        created = start + (now - start) * k // max(1, n)
        amount = rng.choice([500, 1500, 2900, 9900, 25000])
        brand, last4 = rng.choice(BRANDS)
        card = {"object": "card", "brand": brand, "last4": last4, "exp_month": 12,
                "exp_year": 2031, "country": "US", "funding": "credit",
                "fingerprint": em.ids.token(16)}  # fmt: skip
        ch = _paid_charge(em, amount, created, card, rng.randint(5, 60),
                          customer=cid, description="Subscription payment")  # fmt: skip
        fee = round(amount * 0.029) + 30
        txn = em.new_object(
            "balance_transaction",
            amount=amount,
            currency="usd",
            fee=fee,
            net=amount - fee,
            type="charge",
            source=ch["id"],
            created=created,
            status="available",
            available_on=created + 2 * 86400,
            reporting_category="charge",
        )
        em.insert("balance_transaction", txn)
        ch["balance_transaction"] = txn["id"]
        if rng.random() < refund_ratio:
            r_amount = rng.choice([amount, amount // 2])
            ref = em.new_object(
                "refund",
                amount=r_amount,
                charge=ch["id"],
                currency="usd",
                created=min(now, created + 3600),
                status="succeeded",
                reason="requested_by_customer",
            )
            rtxn = em.new_object(
                "balance_transaction",
                amount=-r_amount,
                currency="usd",
                fee=0,
                net=-r_amount,
                type="refund",
                source=ref["id"],
                created=ref["created"],
                status="available",
                available_on=ref["created"],
                reporting_category="refund",
            )
            em.insert("balance_transaction", rtxn)
            ref["balance_transaction"] = rtxn["id"]
            em.insert("refund", ref)
            ch.update(amount_refunded=r_amount, refunded=r_amount == amount)
        if rng.random() < dispute_ratio:
            dp = em.new_object(
                "dispute",
                amount=amount,
                charge=ch["id"],
                currency="usd",
                created=min(now, created + 7200),
                reason="fraudulent",
                status=rng.choice(["needs_response", "won", "lost"]),
                is_charge_refundable=False,
            )
            em.insert("dispute", dp)
            ch["disputed"] = True
        em.insert("charge", ch)


# ---- connect -----------------------------------------------------------------------------


def _connect(em: Emulator, rng: random.Random, n: int, start: int, now: int) -> None:
    from stripesync.emulator.behaviours import embedded_list, make_bank_account

    application: dict[str, Any] | None = None
    for k in range(n):
        created = start + (now - start) * k // max(1, n)
        acct = em.new_object(
            "account",
            type="custom",
            country="US",
            email=f"seller{k}@example.com",
            created=created,
            charges_enabled=True,
            payouts_enabled=True,
            details_submitted=True,
            business_type="individual",
        )
        em.insert("account", acct)
        ba = make_bank_account(em, account=acct["id"], created=created, default_for_currency=True)
        em.insert("bank_account", ba)
        person = em.new_object(
            "person",
            account=acct["id"],
            first_name=rng.choice(FIRST),
            last_name=rng.choice(LAST),
            created=created,
        )
        em.insert("person", person)
        fee_amount = rng.choice([100, 250, 500])
        if application is None:
            application = em.new_object("application", name="Emulator Platform")
            em.insert("application", application)
        charge = _fee_charge(em, fee_amount * 10, fee_amount, acct["id"], created)
        fee = em.new_object(
            "application_fee",
            account=acct["id"],
            application=application["id"],
            charge=charge["id"],
            amount=fee_amount,
            amount_refunded=0,
            currency="usd",
            created=created,
            refunded=False,
        )
        em.insert("application_fee", fee)
        if rng.random() < 0.3:
            fr = em.new_object(
                "fee_refund",
                amount=fee_amount,
                currency="usd",
                fee=fee["id"],
                created=min(now, created + 60),
            )
            em.insert("fee_refund", fr)
            fee.update(amount_refunded=fee_amount, refunded=True)
        fee["refunds"] = embedded_list(em, f"/v1/application_fees/{fee['id']}/refunds")
        rec = em.get("application_fee", fee["id"])
        if rec is not None:
            rec.touch()
        ch = em.get("charge", charge["id"])
        if ch is not None:
            ch.obj["application_fee"] = fee["id"]
            ch.touch()


def _fee_charge(
    em: Emulator, amount: int, fee_amount: int, account: str, created: int
) -> dict[str, Any]:
    """The charge an application fee is taken from: a card payment the platform made on
    behalf of the connected `account`, its funds transferred there."""
    from stripesync.emulator.behaviours import make_card

    card = make_card(em, "tok_visa")
    ch = _paid_charge(em, amount, created, card, 20, description="Marketplace payment",
                      application_fee_amount=fee_amount, on_behalf_of=account,
                      source=card)  # fmt: skip
    ch["transfer_data"] = {**em.shapes.new("Charge.TransferData"), "destination": account}
    em.insert("charge", ch)
    return ch


def _paid_charge(
    em: Emulator, amount: int, created: int, card: dict[str, Any], risk_score: int, **fields: Any
) -> dict[str, Any]:
    """A captured card charge as generated data has it (not stored yet)."""
    from stripesync.emulator.behaviours import card_payment_details

    ch = em.new_object(
        "charge",
        amount=amount,
        amount_captured=amount,
        currency="usd",
        created=created,
        status="succeeded",
        paid=True,
        captured=True,
        calculated_statement_descriptor="STRIPE EMULATOR",
        billing_details=em.shapes.new("Charge.BillingDetails"),
        payment_method_details=card_payment_details(em, card, amount),
        **fields,
    )
    ch["outcome"] = {
        **em.shapes.new("Charge.Outcome"),
        "network_status": "approved_by_network",
        "risk_level": "normal",
        "risk_score": risk_score,
        "seller_message": "Payment complete.",
        "type": "authorized",
    }
    return ch


def _events(em: Emulator, call: Any, before: dict[str, int]) -> None:
    """A `*.created` event per generated object, at the object's creation time."""
    for t, objs in list(em.store.by_type.items()):
        if t == "event":
            continue
        recs = list(objs.values())[before.get(t, 0) :]
        for rec in recs:
            em.emit_for(call, rec, "created", at=rec.created or None)


def to_json(objs: list[dict[str, Any]]) -> str:
    return json.dumps(objs)
