"""Per-collection semantics the generic engine cannot derive from the SDK's types.

One section per collection, each registering its hooks in `registry`: what a create
fills in, what an update or delete sets off (a subscription makes items and an
invoice with lines; deleting a customer cancels its subscriptions; a refund moves its
charge's `amount_refunded`), which events fire, and the list filters that are not a
plain field comparison.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.catalog.spec import load_spec
from stripesync.emulator.errors import StripeError
from stripesync.emulator.registry import behaviour, endpoint, get

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call, Emulator
    from stripesync.emulator.store import Record

EVENT_TYPES: frozenset[str] = frozenset(
    v
    for v in load_spec().param_fields("WebhookEndpointCreateParams")["enabled_events"]["of"][
        "values"
    ]
    if v != "*"
)

CARDS: dict[str, tuple[str, str, str]] = {
    "tok_visa": ("Visa", "4242", "credit"),
    "tok_visa_debit": ("Visa", "5556", "debit"),
    "tok_mastercard": ("MasterCard", "4444", "credit"),
    "tok_amex": ("American Express", "8431", "credit"),
    "tok_discover": ("Discover", "1117", "credit"),
    "tok_chargeDeclined": ("Visa", "0002", "credit"),
}
INTERVAL_SECONDS = {"day": 86400, "week": 7 * 86400, "month": 30 * 86400, "year": 365 * 86400}


# ---- helpers -----------------------------------------------------------------------------


def require_ref(call: Call, obj_type: str, oid: Any, param: str) -> Record:
    if not isinstance(oid, str) or not oid:
        raise StripeError.invalid(f"Missing required param: {param}.", param=param)
    rec = call.em.get(obj_type, oid)
    if rec is None:
        raise StripeError.missing(obj_type, oid, param=param)
    return rec


def listobject(data: list[dict[str, Any]], url: str, total: int | None = None) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data[:10],
        "has_more": len(data) > 10,
        "total_count": len(data) if total is None else total,
        "url": url,
    }


def embedded_list(em: Emulator, path: str, ascending: bool = False) -> dict[str, Any]:
    ix = em.store.path_index.get(path)
    recs = list(ix.records()) if ix is not None else []
    if ascending and ix is not None and ix.newest_first:
        recs.reverse()
    return listobject([r.copy() for r in recs], path, len(recs))


def make_card(em: Emulator, token: str, **values: Any) -> dict[str, Any]:
    brand, last4, funding = CARDS.get(token, ("Visa", "4242", "credit"))
    card = em.new_object(
        "card",
        brand=brand,
        last4=last4,
        funding=funding,
        exp_month=12,
        exp_year=2034,
        country="US",
        cvc_check="pass",
        fingerprint=em.ids.token(16),
    )
    card.update(values)
    return card


def make_bank_account(em: Emulator, **values: Any) -> dict[str, Any]:
    ba = em.new_object(
        "bank_account",
        bank_name="STRIPE TEST BANK",
        country="US",
        currency="usd",
        last4="6789",
        routing_number="110000000",
        status="new",
        account_holder_type="individual",
        fingerprint=em.ids.token(16),
    )
    ba.update(values)
    return ba


def price_copy(call: Call, price_id: str, param: str = "price") -> dict[str, Any]:
    """A copy of price `price_id`. A plan's id is accepted too: on Stripe a plan made with
    the Plans API is a price, usable wherever a price or a plan is asked for."""
    if isinstance(price_id, str) and price_id and call.em.get("price", price_id) is None:
        plan = call.em.get("plan", price_id)
        if plan is not None:
            return price_from_plan(call.em, plan.obj)
        if param.endswith("plan]") or param == "plan":
            raise StripeError.missing("plan", price_id, param=param)
    return require_ref(call, "price", price_id, param).copy()


def price_from_plan(em: Emulator, plan: dict[str, Any]) -> dict[str, Any]:
    """The price a plan is, in the Prices API's shape."""
    price = em.shapes.new("Price")
    recurring = em.shapes.new("Price.Recurring")
    recurring.update(
        interval=plan.get("interval", "month"),
        interval_count=plan.get("interval_count") or 1,
        usage_type=plan.get("usage_type") or "licensed",
        meter=plan.get("meter"),
        trial_period_days=plan.get("trial_period_days"),
    )
    price.update(
        id=plan["id"],
        active=plan.get("active", True),
        billing_scheme=plan.get("billing_scheme") or "per_unit",
        created=plan.get("created", 0),
        currency=plan.get("currency", "usd"),
        livemode=plan.get("livemode", False),
        metadata=dict(plan.get("metadata") or {}),
        nickname=plan.get("nickname"),
        product=plan.get("product"),
        recurring=recurring,
        tiers=plan.get("tiers"),
        tiers_mode=plan.get("tiers_mode"),
        transform_quantity=plan.get("transform_usage"),
        type="recurring",
        unit_amount=plan.get("amount"),
        unit_amount_decimal=plan.get("amount_decimal"),
        tax_behavior="unspecified",
    )
    return price


def plan_from_price(em: Emulator, price: dict[str, Any]) -> dict[str, Any] | None:
    rec = price.get("recurring") or None
    if not rec:
        return None
    plan = em.shapes.new("Plan")
    plan.update(
        id=price["id"],
        active=price.get("active", True),
        amount=price.get("unit_amount"),
        amount_decimal=price.get("unit_amount_decimal"),
        billing_scheme=price.get("billing_scheme", "per_unit"),
        created=price.get("created", 0),
        currency=price.get("currency", "usd"),
        interval=rec.get("interval", "month"),
        interval_count=rec.get("interval_count", 1),
        usage_type=rec.get("usage_type", "licensed"),
        metadata=dict(price.get("metadata") or {}),
        nickname=price.get("nickname"),
        product=price.get("product"),
    )
    return plan


def price_from_data(
    call: Call, data: dict[str, Any], currency: str | None = None
) -> dict[str, Any]:
    """An inline `price_data` hash becomes a real (inactive) price, as on Stripe."""
    em = call.em
    obj = em.new_object("price", active=False)
    em.apply_params("Price", obj, {k: v for k, v in data.items() if k != "product"})
    if data.get("product"):
        obj["product"] = data["product"]
    if not obj.get("currency"):
        obj["currency"] = currency or "usd"
    _price_defaults(obj)
    em.insert("price", obj)
    return obj


def _price_defaults(obj: dict[str, Any]) -> None:
    obj["type"] = "recurring" if obj.get("recurring") else "one_time"
    rec = obj.get("recurring")
    if isinstance(rec, dict):
        rec.setdefault("interval_count", 1)
        if rec.get("interval_count") in (None, 0):
            rec["interval_count"] = 1
        if rec.get("usage_type") in (None, ""):
            rec["usage_type"] = "licensed"
    if obj.get("unit_amount") is not None and obj.get("unit_amount_decimal") is None:
        obj["unit_amount_decimal"] = str(obj["unit_amount"])
    if obj.get("tax_behavior") is None:
        obj["tax_behavior"] = "unspecified"


def balance_txn(em: Emulator, amount: int, currency: str, type_: str, source: str) -> str:
    fee = max(0, round(amount * 0.029) + 30) if type_ == "charge" else 0
    txn = em.new_object(
        "balance_transaction",
        amount=amount,
        currency=currency,
        fee=fee,
        net=amount - fee,
        type=type_,
        source=source,
        status="available",
        available_on=em.clock.now(),
        reporting_category=type_,
        exchange_rate=None,
        fee_details=[
            {
                "amount": fee,
                "currency": currency,
                "description": "Stripe processing fees",
                "type": "stripe_fee",
                "application": None,
            }
        ]
        if fee
        else [],
    )
    em.insert("balance_transaction", txn)
    return str(txn["id"])


# ---- customers ---------------------------------------------------------------------------

customer = behaviour(
    "customer",
    retrieve_deleted=True,
    consumes={"source", "payment_method", "tax_id_data", "cash_balance", "tax", "validate"},
    defaults={
        "balance": 0,
        "delinquent": False,
        "preferred_locales": [],
        "tax_exempt": "none",
        "next_invoice_sequence": 1,
        "invoice_credit_balance": {},
    },
)


@customer.on_create
def _customer_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    if obj.get("invoice_settings") is None:
        obj["invoice_settings"] = em.shapes.new("Customer.InvoiceSettings")
    if not obj.get("invoice_prefix"):
        obj["invoice_prefix"] = em.ids.token(8).upper()
    for datum in call.param("tax_id_data") or []:
        tax = em.new_object("tax_id", customer=obj["id"])
        em.apply_params("TaxId", tax, datum)
        _tax_id_fill(call, tax)
        rec = em.insert("tax_id", tax)
        em.emit_for(call, rec, "created")
    src = call.param("source")
    if isinstance(src, str) and src:
        card = _attach_source(call, obj["id"], src)
        obj["default_source"] = card["id"]
    pm = call.param("payment_method")
    if isinstance(pm, str) and pm:
        attach_payment_method(call, payment_method_ref(call, pm, "payment_method"), obj["id"])


@customer.on_update
def _customer_update(call: Call, rec: Record, before: dict[str, Any]) -> None:
    src = call.param("source")
    if isinstance(src, str) and src:
        card = _attach_source(call, rec.id, src)
        rec.obj["default_source"] = card["id"]


@customer.on_delete
def _customer_delete(call: Call, rec: Record) -> None:
    em = call.em
    ix = em.store.path_index.get(f"/v1/subscriptions?customer={rec.id}")
    for sub in list(ix.records()) if ix is not None else []:
        if sub.obj.get("status") not in ("canceled", "incomplete_expired"):
            _cancel_subscription(call, sub, reason="cancellation_requested")
    for path in (f"/v1/customers/{rec.id}/sources", f"/v1/customers/{rec.id}/tax_ids"):
        ix = em.store.path_index.get(path)
        for child in list(ix.records()) if ix is not None else []:
            em.store.remove(child)


def _attach_source(call: Call, customer_id: str, token: str) -> dict[str, Any]:
    em = call.em
    if token.startswith("src_"):
        src = require_ref(call, "source", token, "source")
        before = src.copy()
        src.obj["customer"] = customer_id
        src.obj["status"] = "chargeable"
        em.changed(call, src, before, event=None)
        em.emit_for(call, src, "created")
        return src.obj
    if token.startswith("btok_"):
        obj = make_bank_account(em, customer=customer_id)
        rec = em.insert("bank_account", obj)
    else:
        obj = make_card(em, token, customer=customer_id)
        rec = em.insert("card", obj)
    em.emit_for(call, rec, "created")
    return obj


def _source_prefix(obj: dict[str, Any]) -> str | None:
    if obj.get("customer"):
        return "customer.source"
    if obj.get("account"):
        return "account.external_account"
    return None


behaviour("card", event_prefix=_source_prefix)
behaviour("bank_account", event_prefix=_source_prefix)
behaviour("source", event_prefix=lambda o: "customer.source" if o.get("customer") else "source")


@endpoint("POST", "/v1/customers/{customer}/sources")
def _create_customer_source(call: Call) -> Any:
    em = call.em
    cus = require_ref(call, "customer", call.pp("customer"), "customer")
    obj = _attach_source(call, cus.id, call.param("source"))
    rec = em.find(obj["id"], ["card", "bank_account", "source"])
    assert rec is not None
    if call.param("metadata"):
        before = rec.copy()
        em.apply_params(em.cls_of(rec.type), rec.obj, {"metadata": call.param("metadata")})
        em.changed(call, rec, before, event=None)
    if not cus.obj.get("default_source"):
        before = cus.copy()
        cus.obj["default_source"] = rec.id
        em.changed(call, cus, before)
    return rec


@endpoint("DELETE", "/v1/customers/{customer}/sources/{id}")
def _delete_customer_source(call: Call) -> Any:
    em = call.em
    rec = em.require(call, em.lookup(call))
    cus = em.get("customer", call.pp("customer"))
    if rec.type == "source":
        before = rec.copy()
        rec.obj["status"] = "consumed"
        em.changed(call, rec, before, event=None)
        em.emit_for(call, rec, "deleted")
        em.store.remove_from_list(f"/v1/customers/{call.pp('customer')}/sources", rec)
        out: Any = rec
    else:
        out = em.remove(call, rec)
    if cus is not None and cus.obj.get("default_source") == rec.id:
        before = cus.copy()
        ix = em.store.path_index.get(f"/v1/customers/{cus.id}/sources")
        nxt = next(iter(ix.records()), None) if ix is not None else None
        cus.obj["default_source"] = nxt.id if nxt is not None else None
        em.changed(call, cus, before)
    return out


@endpoint("POST", "/v1/customers/{customer}/sources/{id}/verify")
def _verify_bank_account(call: Call) -> Any:
    em = call.em
    rec = em.require(call, em.lookup(call))
    before = rec.copy()
    rec.obj["status"] = "verified" if rec.type == "bank_account" else rec.obj.get("status")
    em.changed(call, rec, before)
    return rec


@endpoint("POST", "/v1/accounts/{account}/external_accounts")
def _create_external_account(call: Call) -> Any:
    em = call.em
    acct = require_ref(call, "account", call.pp("account"), "account")
    ext = call.param("external_account")
    if isinstance(ext, dict):
        if ext.get("object") == "card":
            obj = make_card(em, "tok_visa", account=acct.id)
            obj_type = "card"
        else:
            obj = make_bank_account(em, account=acct.id)
            for k in ("country", "currency", "account_holder_name", "account_holder_type"):
                if ext.get(k):
                    obj[k] = ext[k]
            if ext.get("account_number"):
                obj["last4"] = str(ext["account_number"])[-4:]
            if ext.get("routing_number"):
                obj["routing_number"] = ext["routing_number"]
            obj_type = "bank_account"
    elif isinstance(ext, str) and ext.startswith("tok_"):
        obj, obj_type = make_card(em, ext, account=acct.id), "card"
    else:
        obj, obj_type = make_bank_account(em, account=acct.id), "bank_account"
    path = f"/v1/accounts/{acct.id}/external_accounts"
    ix = em.store.path_index.get(path)
    obj["default_for_currency"] = bool(call.param("default_for_currency")) or not (ix and len(ix))
    if call.param("metadata"):
        obj["metadata"] = dict(call.param("metadata"))
    rec = em.insert(obj_type, obj)
    em.emit_for(call, rec, "created")
    return rec


# ---- payment methods ---------------------------------------------------------------------

PM_BRANDS = {"Visa": "visa", "MasterCard": "mastercard", "American Express": "amex"}


def payment_method_ref(call: Call, pm_id: Any, param: str) -> Record:
    """Payment method `pm_id`; a test-mode id (`pm_card_visa`, `pm_card_mastercard`, …)
    stands, as on Stripe, for a new card payment method made each time it is used."""
    em = call.em
    test_card = isinstance(pm_id, str) and pm_id.startswith("pm_card_")
    if test_card and em.get("payment_method", pm_id) is None:
        token = "tok_" + pm_id.removeprefix("pm_card_")
        if token in CARDS:
            brand, last4, funding = CARDS[token]
            card = em.shapes.new("PaymentMethod.Card")
            card.update(
                brand=PM_BRANDS.get(brand, brand.lower()),
                display_brand=PM_BRANDS.get(brand, brand.lower()),
                last4=last4,
                funding=funding,
                exp_month=12,
                exp_year=2034,
                country="US",
                fingerprint=em.ids.token(16),
            )
            pm = em.new_object("payment_method", type="card", card=card)
            return em.insert("payment_method", pm)
    return require_ref(call, "payment_method", pm_id, param)


def attach_payment_method(call: Call, pm: Record, customer_id: str) -> Record:
    before = pm.copy()
    pm.obj["customer"] = customer_id
    call.em.changed(call, pm, before, event=None)
    call.em.emit_for(call, pm, "attached")
    return pm


@endpoint("POST", "/v1/payment_methods/{payment_method}/attach")
def _attach_payment_method(call: Call) -> Any:
    cus = require_ref(call, "customer", call.param("customer"), "customer")
    pm = payment_method_ref(call, call.pp("payment_method"), "payment_method")
    return attach_payment_method(call, pm, cus.id)


# ---- tax ids -----------------------------------------------------------------------------


def _tax_id_fill(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    owner = obj.get("owner") or em.shapes.new("TaxId.Owner")
    if obj.get("customer"):
        owner.update(type="customer", customer=obj["customer"])
    elif not owner.get("type"):
        owner["type"] = "self"
    obj["owner"] = owner
    code = str(obj.get("type") or "")
    value = str(obj.get("value") or "")
    country = code.split("_", 1)[0].upper() if code else None
    if code == "eu_vat" and len(value) >= 2:
        country = value[:2].upper()
    obj["country"] = country
    obj["verification"] = {"status": "pending", "verified_address": None, "verified_name": None}


tax_id = behaviour(
    "tax_id",
    event_prefix=lambda o: "customer.tax_id" if o.get("customer") else None,
)


@tax_id.on_create
def _tax_id_create(call: Call, obj: dict[str, Any]) -> None:
    owner = call.param("owner")
    if isinstance(owner, dict) and owner.get("type") == "customer":
        require_ref(call, "customer", owner.get("customer"), "owner[customer]")
        obj["customer"] = owner["customer"]
    _tax_id_fill(call, obj)


def _tax_id_default_filter(call: Call, params: dict[str, Any]) -> Any:
    if call.route is None or call.route.parent_param or "owner" in params:
        return None
    return lambda o: (o.get("owner") or {}).get("type", "self") == "self"


tax_id.default_filter = _tax_id_default_filter


# ---- customer balance --------------------------------------------------------------------

cbt = behaviour("customer_balance_transaction")


@cbt.on_create
def _cbt_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    cus = require_ref(call, "customer", obj.get("customer"), "customer")
    before = cus.copy()
    balance = int(cus.obj.get("balance") or 0) + int(obj.get("amount") or 0)
    obj.update(type="adjustment", ending_balance=balance)
    cus.obj["balance"] = balance
    if not cus.obj.get("currency"):
        cus.obj["currency"] = obj.get("currency")
    em.changed(call, cus, before)


# ---- catalog: products, prices, plans, coupons -------------------------------------------

product = behaviour(
    "product",
    custom_id=True,
    consumes={"default_price_data"},
    defaults={"active": True, "images": [], "marketing_features": [], "type": "service"},
)


@product.on_create
def _product_create(call: Call, obj: dict[str, Any]) -> None:
    obj["updated"] = obj.get("created", call.now)
    data = call.param("default_price_data")
    if isinstance(data, dict):
        price = price_from_data(call, {**data, "product": obj["id"]})
        rec = call.em.get("price", price["id"])
        if rec is not None:
            rec.obj["active"] = True
            rec.touch()
            call.em.emit_for(call, rec, "created")
        obj["default_price"] = price["id"]


@product.on_delete
def _product_delete(call: Call, rec: Record) -> None:
    em = call.em
    # a plan made with the Plans API is a price too
    for p in (*em.store.objects("price").values(), *em.store.objects("plan").values()):
        if p.obj.get("product") == rec.id:
            raise StripeError.invalid(
                "This product cannot be deleted because it has one or more user-created prices."
            )


price = behaviour("price", consumes={"product_data"}, defaults={"active": True})


@price.on_create
def _price_create(call: Call, obj: dict[str, Any]) -> None:
    data = call.param("product_data")
    if isinstance(data, dict):
        prod = call.em.new_object("product")
        call.em.apply_params("Product", prod, data)
        prod["updated"] = prod["created"]
        rec = call.em.insert("product", prod)
        call.em.emit_for(call, rec, "created")
        obj["product"] = prod["id"]
    elif obj.get("product"):
        require_ref(call, "product", obj["product"], "product")
    else:
        raise StripeError.invalid(
            "You must specify either `product` or `product_data` when creating a price.",
            param="product",
        )
    _price_defaults(obj)


@price.list_filter("type")
def _price_type(call: Call, v: Any) -> Any:
    return lambda o: o.get("type") == v


plan = behaviour("plan", custom_id=True, consumes={"product"}, defaults={"active": True})


@plan.on_create
def _plan_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    prod = call.param("product")
    if isinstance(prod, dict):
        p = em.new_object("product")
        em.apply_params("Product", p, prod)
        p["updated"] = p["created"]
        rec = em.insert("product", p)
        em.emit_for(call, rec, "created")
        obj["product"] = p["id"]
    elif isinstance(prod, str):
        require_ref(call, "product", prod, "product")
        obj["product"] = prod
    if not obj.get("interval_count"):
        obj["interval_count"] = 1
    if obj.get("amount") is not None and obj.get("amount_decimal") is None:
        obj["amount_decimal"] = str(obj["amount"])


coupon = behaviour(
    "coupon",
    custom_id=True,
    defaults={"valid": True, "times_redeemed": 0, "duration": "once"},
)


@coupon.on_create
def _coupon_create(call: Call, obj: dict[str, Any]) -> None:
    if obj.get("percent_off") is None and obj.get("amount_off") is None:
        raise StripeError.invalid("Must provide either `amount_off` or `percent_off`.")


behaviour("promotion_code", defaults={"active": True, "times_redeemed": 0})


@behaviour("promotion_code").on_create
def _promo_create(call: Call, obj: dict[str, Any]) -> None:
    if not obj.get("code"):
        obj["code"] = call.em.ids.token(8).upper()


# ---- subscriptions -----------------------------------------------------------------------

subscription = behaviour(
    "subscription",
    event_prefix="customer.subscription",
    consumes={"items", "default_tax_rates", "discounts", "add_invoice_items", "trial_end"},
    defaults={"cancel_at_period_end": False, "discounts": [], "billing_schedules": []},
)


def _items_path(sub_id: str) -> str:
    return f"/v1/subscription_items?subscription={sub_id}"


def _item_fields(call: Call, sub: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    em = call.em
    if spec.get("price"):
        price_obj = price_copy(call, spec["price"], "items[0][price]")
    elif spec.get("plan"):
        price_obj = price_copy(call, spec["plan"], "items[0][plan]")
    elif isinstance(spec.get("price_data"), dict):
        price_obj = price_from_data(call, spec["price_data"], sub.get("currency"))
    else:
        raise StripeError.invalid(
            "Missing required param: items[0][price].", param="items[0][price]"
        )
    interval = (price_obj.get("recurring") or {}).get("interval", "month")
    count = (price_obj.get("recurring") or {}).get("interval_count", 1) or 1
    start = sub.get("billing_cycle_anchor") or call.now
    fields: dict[str, Any] = {
        "subscription": sub["id"],
        "price": price_obj,
        "plan": plan_from_price(em, price_obj),
        "quantity": spec.get("quantity", 1),
        "current_period_start": start,
        "current_period_end": start + INTERVAL_SECONDS.get(interval, 30 * 86400) * count,
        "discounts": [],
    }
    if spec.get("metadata"):
        fields["metadata"] = {k: v for k, v in spec["metadata"].items() if v}
    return fields


def _make_item(call: Call, sub: dict[str, Any], spec: dict[str, Any]) -> Record:
    em = call.em
    item = em.new_object("subscription_item", **_item_fields(call, sub, spec))
    return em.insert("subscription_item", item, lists=(_items_path(sub["id"]),))


def _refresh_items(em: Emulator, sub: dict[str, Any]) -> None:
    sub["items"] = embedded_list(em, _items_path(sub["id"]), ascending=True)
    sub["items"]["url"] = _items_path(sub["id"])


@subscription.on_create
def _subscription_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    cus = require_ref(call, "customer", obj.get("customer"), "customer")
    now = call.now
    obj["billing_cycle_anchor"] = call.param("billing_cycle_anchor") or now
    obj["start_date"] = call.param("backdate_start_date") or now
    items = call.param("items") or []
    if not items:
        raise StripeError.invalid("Missing required param: items.", param="items")
    made = [_make_item(call, obj, it) for it in items]
    first_price = made[0].obj["price"]
    obj["currency"] = obj.get("currency") or first_price.get("currency", "usd")
    trial_end = call.param("trial_end")
    days = call.param("trial_period_days")
    if isinstance(trial_end, int) and trial_end > now:
        obj.update(trial_start=now, trial_end=trial_end, status="trialing")
    elif days:
        obj.update(trial_start=now, trial_end=now + int(days) * 86400, status="trialing")
    else:
        obj["status"] = "active"
    if obj.get("invoice_settings") is None:
        obj["invoice_settings"] = em.shapes.new("Subscription.InvoiceSettings")
    rates = call.param("default_tax_rates")
    if isinstance(rates, list):
        obj["default_tax_rates"] = [
            require_ref(call, "tax_rate", r, "default_tax_rates").copy() for r in rates
        ]
    _refresh_items(em, obj)
    inv = _subscription_invoice(call, obj, cus, "subscription_create")
    obj["latest_invoice"] = inv.id


def _subscription_invoice(call: Call, sub: dict[str, Any], cus: Record, reason: str) -> Record:
    """The invoice a subscription period produces: one line per item."""
    em = call.em
    inv = _new_invoice(call, cus.obj, sub.get("collection_method") or "charge_automatically")
    inv["billing_reason"] = reason
    inv["currency"] = sub.get("currency") or "usd"
    parent = em.shapes.new("Invoice.Parent")
    parent["type"] = "subscription_details"
    parent["subscription_details"] = {
        "metadata": dict(sub.get("metadata") or {}),
        "subscription": sub["id"],
        "subscription_proration_date": None,
    }
    inv["parent"] = parent
    rec = em.insert("invoice", inv)
    trialing = sub.get("status") == "trialing"
    ix = em.store.path_index.get(_items_path(sub["id"]))
    items = list(ix.records()) if ix is not None else []
    items.reverse()
    for it in items:
        p = it.obj["price"]
        qty = it.obj.get("quantity") or 1
        amount = 0 if trialing else int(p.get("unit_amount") or 0) * qty
        line = _new_line(call, rec.id, amount, inv["currency"], qty, p)
        line["description"] = (
            f"Trial period for {p.get('nickname') or p.get('product')}"
            if trialing
            else f"{qty} \u00d7 {p.get('nickname') or p.get('product')}"
        )
        lp = em.shapes.new("InvoiceLineItem.Parent")
        lp["type"] = "subscription_item_details"
        lp["subscription_item_details"] = {
            "invoice_item": None,
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": sub["id"],
            "subscription_item": it.id,
        }
        line["parent"] = lp
        line["subscription"] = sub["id"]
        line["period"] = {
            "start": it.obj["current_period_start"],
            "end": it.obj["current_period_end"],
        }
        em.insert("line_item", line)
    # an invoice item made without an invoice goes on the customer's next invoice, and so
    # on a new subscription's first one (how a setup fee was added before add_invoice_items)
    _pull_pending_items(call, rec, sub["id"])
    _recompute_invoice(em, rec.obj)
    rec.touch()
    em.emit_for(call, rec, "created")
    _finalize(call, rec)
    if inv["collection_method"] == "charge_automatically" or inv["amount_due"] == 0:
        _pay(call, rec)
    return rec


@subscription.on_update
def _subscription_update(call: Call, rec: Record, before: dict[str, Any]) -> None:
    em = call.em
    items = call.param("items")
    if isinstance(items, list):
        for spec in items:
            iid = spec.get("id")
            if iid:
                item = em.get("subscription_item", iid)
                if item is None or item.obj.get("subscription") != rec.id:
                    raise StripeError.missing("subscription_item", iid, param="items")
                if spec.get("deleted"):
                    em.store.remove(item)
                    continue
                ib = item.copy()
                if spec.get("price"):
                    item.obj["price"] = price_copy(call, spec["price"])
                    item.obj["plan"] = plan_from_price(em, item.obj["price"])
                if "quantity" in spec:
                    item.obj["quantity"] = spec["quantity"]
                if isinstance(spec.get("metadata"), dict):
                    em.apply_params("SubscriptionItem", item.obj, {"metadata": spec["metadata"]})
                em.changed(call, item, ib, event=None)
            else:
                _make_item(call, rec.obj, spec)
        _refresh_items(em, rec.obj)
    trial_end = call.param("trial_end")
    if trial_end == "now" and rec.obj.get("status") == "trialing":
        rec.obj.update(trial_end=call.now, status="active")
    if call.param("cancel_at_period_end") is True:
        ends = [i["current_period_end"] for i in rec.obj["items"]["data"]]
        rec.obj["cancel_at"] = min(ends) if ends else None
    elif call.param("cancel_at_period_end") is False:
        rec.obj["cancel_at"] = None


def _cancel_subscription(call: Call, rec: Record, reason: str = "cancellation_requested") -> Record:
    em = call.em
    if rec.obj.get("status") == "canceled":
        return rec
    before = rec.copy()
    now = call.now
    details = em.shapes.new("Subscription.CancellationDetails")
    details["reason"] = reason
    cd = call.param("cancellation_details")
    if isinstance(cd, dict):
        details.update({k: (None if v == "" else v) for k, v in cd.items()})
    rec.obj.update(status="canceled", canceled_at=now, ended_at=now, cancellation_details=details)
    em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "deleted")
    return rec


@subscription.action("cancel")
def _subscription_cancel(call: Call, rec: Record) -> Any:
    return _cancel_subscription(call, rec)


@subscription.action("resume")
def _subscription_resume(call: Call, rec: Record) -> Any:
    em = call.em
    before = rec.copy()
    rec.obj["status"] = "active"
    rec.obj["pause_collection"] = None
    prev = em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "resumed")
    if prev:
        em.emit_for(call, rec, "updated", previous=prev)
    return rec


def _subscription_default_filter(call: Call, params: dict[str, Any]) -> Any:
    if "status" in params:
        return None
    return lambda o: o.get("status") != "canceled"


subscription.default_filter = _subscription_default_filter


@subscription.list_filter("status")
def _sub_status(call: Call, v: Any) -> Any:
    if v == "all":
        return lambda o: True
    if v == "ended":
        return lambda o: o.get("status") in ("canceled", "incomplete_expired")
    return lambda o: o.get("status") == v


def _item_ref(field: str, v: Any) -> Any:
    def pred(o: dict[str, Any]) -> bool:
        for it in (o.get("items") or {}).get("data") or []:
            ref = it.get(field)
            if (ref.get("id") if isinstance(ref, dict) else ref) == v:
                return True
        return False

    return pred


subscription.filters["price"] = lambda call, v: _item_ref("price", v)
subscription.filters["plan"] = lambda call, v: _item_ref("plan", v)


def _sub_period(field: str) -> Any:
    def factory(call: Call, v: Any) -> Any:
        from stripesync.emulator.lists import created_range

        low, high = created_range(v, field)

        def pred(o: dict[str, Any]) -> bool:
            vals = [
                it.get(field)
                for it in (o.get("items") or {}).get("data") or []
                if isinstance(it.get(field), int)
            ]
            x = vals[0] if vals else o.get(field)
            if not isinstance(x, int):
                return False
            return (low is None or x >= low) and (high is None or x <= high)

        return pred

    return factory


subscription.filters["current_period_end"] = _sub_period("current_period_end")
subscription.filters["current_period_start"] = _sub_period("current_period_start")

sub_item = behaviour("subscription_item", consumes={"price", "plan", "price_data"})


@sub_item.on_create
def _sub_item_create(call: Call, obj: dict[str, Any]) -> None:
    sub = require_ref(call, "subscription", obj.get("subscription"), "subscription")
    spec = {k: call.param(k) for k in ("price", "plan", "price_data", "quantity") if call.param(k)}
    spec["metadata"] = call.param("metadata") or {}
    obj.update(_item_fields(call, sub.obj, spec))


@sub_item.after_create
def _sub_item_created(call: Call, rec: Record) -> None:
    em = call.em
    em.store.add_to_list(_items_path(rec.obj["subscription"]), rec)
    _touch_subscription(call, rec.obj["subscription"])


def _touch_subscription(call: Call, sub_id: str) -> None:
    em = call.em
    sub = em.get("subscription", sub_id)
    if sub is None:
        return
    before = sub.copy()
    _refresh_items(em, sub.obj)
    em.changed(call, sub, before)


@sub_item.on_update
def _sub_item_update(call: Call, rec: Record, before: dict[str, Any]) -> None:
    if call.param("price"):
        rec.obj["price"] = price_copy(call, call.param("price"))
        rec.obj["plan"] = plan_from_price(call.em, rec.obj["price"])
    rec.touch()
    _touch_subscription(call, rec.obj["subscription"])


@sub_item.on_delete
def _sub_item_delete(call: Call, rec: Record) -> None:
    call.em.store.remove_from_list(_items_path(rec.obj["subscription"]), rec)
    _touch_subscription(call, rec.obj["subscription"])


# ---- invoices ----------------------------------------------------------------------------


def _new_invoice(call: Call, cus: dict[str, Any], collection_method: str) -> dict[str, Any]:
    em = call.em
    now = call.now
    inv = em.new_object(
        "invoice",
        customer=cus["id"],
        customer_email=cus.get("email"),
        customer_name=cus.get("name"),
        customer_phone=cus.get("phone"),
        customer_address=cus.get("address"),
        customer_shipping=cus.get("shipping"),
        customer_tax_exempt=cus.get("tax_exempt"),
        collection_method=collection_method,
        status="draft",
        auto_advance=True,
        period_start=now,
        period_end=now,
        account_country="US",
        account_name="Stripe Emulator",
        default_tax_rates=[],
        discounts=[],
        starting_balance=int(cus.get("balance") or 0),
        payment_settings=em.shapes.new("Invoice.PaymentSettings"),
    )
    inv["issuer"] = {"type": "self"}
    inv["lines"] = listobject([], f"/v1/invoices/{inv['id']}/lines")
    if collection_method == "send_invoice":
        inv["due_date"] = now + 30 * 86400
    return inv


def _new_line(
    call: Call,
    invoice_id: str,
    amount: int,
    currency: str,
    quantity: int,
    price_obj: dict[str, Any] | None,
) -> dict[str, Any]:
    em = call.em
    line = em.new_object(
        "line_item",
        invoice=invoice_id,
        amount=amount,
        subtotal=amount,
        currency=currency,
        quantity=quantity,
        discountable=True,
        discounts=[],
        discount_amounts=[],
        pretax_credit_amounts=[],
        taxes=[],
    )
    now = call.now
    line["period"] = {"start": now, "end": now}
    if price_obj is not None:
        pricing = em.shapes.new("InvoiceLineItem.Pricing")
        pricing["price_details"] = {"price": price_obj["id"], "product": price_obj.get("product")}
        pricing["unit_amount_decimal"] = price_obj.get("unit_amount_decimal")
        line["pricing"] = pricing
    return line


def _recompute_invoice(em: Emulator, inv: dict[str, Any]) -> None:
    path = f"/v1/invoices/{inv['id']}/lines"
    ix = em.store.path_index.get(path)
    lines = [r.obj for r in ix.records()] if ix is not None else []
    subtotal = sum(int(x.get("amount") or 0) for x in lines)
    inv["lines"] = embedded_list(em, path)
    inv["subtotal"] = inv["subtotal_excluding_tax"] = subtotal
    inv["total"] = inv["total_excluding_tax"] = subtotal
    if inv.get("status") in (None, "draft", "open"):
        inv["amount_due"] = max(0, subtotal)
        inv["amount_remaining"] = max(0, subtotal - int(inv.get("amount_paid") or 0))


def refresh_invoice(call: Call, invoice_id: str | None, *, event: bool = True) -> None:
    em = call.em
    if not invoice_id:
        return
    rec = em.get("invoice", invoice_id)
    if rec is None:
        return
    before = rec.copy()
    _recompute_invoice(em, rec.obj)
    em.changed(call, rec, before, event="updated" if event else None)


def _finalize(call: Call, rec: Record, updated: bool = False) -> None:
    em = call.em
    inv = rec.obj
    if inv.get("status") != "draft":
        raise StripeError.invalid(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
        )
    before = rec.copy()
    now = call.now
    cus = em.get("customer", str(inv.get("customer") or ""))
    prefix = (cus.obj.get("invoice_prefix") if cus else None) or "EMUL0000"
    seq = 1
    if cus is not None:
        seq = int(cus.obj.get("next_invoice_sequence") or 1)
        cus.obj["next_invoice_sequence"] = seq + 1
        cus.touch()
    inv["number"] = f"{prefix}-{seq:04d}"
    inv["status"] = "open"
    inv["effective_at"] = now
    inv["auto_advance"] = inv.get("collection_method") == "charge_automatically"
    st = inv.get("status_transitions") or em.shapes.new("Invoice.StatusTransitions")
    st["finalized_at"] = now
    inv["status_transitions"] = st
    inv["hosted_invoice_url"] = f"https://invoice.stripe.com/i/{inv['id']}"
    inv["invoice_pdf"] = f"https://pay.stripe.com/invoice/{inv['id']}/pdf"
    _recompute_invoice(em, inv)
    prev = em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "finalized")
    if prev and updated:
        em.emit_for(call, rec, "updated", previous=prev)


def _pay(call: Call, rec: Record, updated: bool = False) -> None:
    em = call.em
    inv = rec.obj
    if inv.get("status") == "draft":
        _finalize(call, rec, updated)
    if inv.get("status") != "open":
        raise StripeError.invalid(
            "Invoice is already paid."
            if inv.get("status") == "paid"
            else f"You cannot pay an invoice with status {inv.get('status')}."
        )
    before = rec.copy()
    now = call.now
    inv["amount_paid"] = inv.get("amount_due", 0)
    inv["amount_remaining"] = 0
    inv["attempted"] = True
    inv["attempt_count"] = 1 if inv.get("amount_due") else 0
    inv["status"] = "paid"
    inv["status_transitions"]["paid_at"] = now
    inv["auto_advance"] = False
    prev = em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "paid")
    em.emit_for(call, rec, "payment_succeeded")
    if prev and updated:
        em.emit_for(call, rec, "updated", previous=prev)


invoice = behaviour(
    "invoice",
    consumes={"pending_invoice_items_behavior", "subscription", "default_tax_rates", "discounts"},
)


@invoice.on_create
def _invoice_create(call: Call, obj: dict[str, Any]) -> None:
    cus = require_ref(call, "customer", call.param("customer"), "customer")
    base = _new_invoice(call, cus.obj, call.param("collection_method") or "charge_automatically")
    base["id"] = obj["id"]
    base["lines"]["url"] = f"/v1/invoices/{obj['id']}/lines"
    for k, v in obj.items():
        if v not in (None, [], {}) and k not in ("lines",):
            base.setdefault(k, v)
            if base[k] in (None, [], {}):
                base[k] = v
    for k in ("description", "footer", "metadata", "auto_advance", "days_until_due", "due_date"):
        if call.param(k) is not None:
            base[k] = obj.get(k)
    if call.param("days_until_due") and base["collection_method"] == "send_invoice":
        base["due_date"] = call.now + int(call.param("days_until_due")) * 86400
    base["automatically_finalizes_at"] = call.now + 3600 if base.get("auto_advance") else None
    base["currency"] = call.param("currency") or cus.obj.get("currency") or "usd"
    obj.clear()
    obj.update(base)


@invoice.after_create
def _invoice_created(call: Call, rec: Record) -> None:
    if call.param("pending_invoice_items_behavior") != "include":
        return
    if _pull_pending_items(call, rec):
        refresh_invoice(call, rec.id, event=False)


def _pull_pending_items(call: Call, rec: Record, subscription: str | None = None) -> bool:
    """Move the customer's pending invoice items onto invoice `rec`, one line each; for a
    subscription's invoice, those made for another subscription stay pending."""
    em = call.em
    moved = False
    for ii in list(em.store.index("invoiceitem").records()):
        if ii.obj.get("customer") != rec.obj.get("customer") or ii.obj.get("invoice"):
            continue
        details = (ii.obj.get("parent") or {}).get("subscription_details") or {}
        if subscription is not None and details.get("subscription") not in (None, subscription):
            continue
        before = ii.copy()
        ii.obj["invoice"] = rec.id
        em.changed(call, ii, before, event=None)
        _line_for_item(call, ii)
        moved = True
    return moved


@invoice.action("finalize_invoice")
def _invoice_finalize(call: Call, rec: Record) -> Any:
    _finalize(call, rec, updated=True)
    if call.param("auto_advance") is not None:
        rec.obj["auto_advance"] = call.param("auto_advance")
        rec.touch()
    if rec.obj.get("amount_due") == 0:
        _pay(call, rec, updated=True)
    return rec


@invoice.action("pay")
def _invoice_pay(call: Call, rec: Record) -> Any:
    _pay(call, rec, updated=True)
    return rec


def _transition(call: Call, rec: Record, status: str, stamp: str, event: str) -> Any:
    em = call.em
    if rec.obj.get("status") != "open":
        raise StripeError.invalid(
            f"You can only {event.rstrip('ed').replace('_', ' ')} an open invoice; this invoice "
            f"is {rec.obj.get('status')}."
        )
    before = rec.copy()
    rec.obj["status"] = status
    rec.obj["status_transitions"][stamp] = call.now
    rec.obj["amount_remaining"] = rec.obj["amount_remaining"] if status != "void" else 0
    prev = em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, event)
    if prev:
        em.emit_for(call, rec, "updated", previous=prev)
    return rec


invoice.actions["void_invoice"] = lambda call, rec: _transition(
    call, rec, "void", "voided_at", "voided"
)
invoice.actions["mark_uncollectible"] = lambda call, rec: _transition(
    call, rec, "uncollectible", "marked_uncollectible_at", "marked_uncollectible"
)


@invoice.action("send_invoice")
def _invoice_send(call: Call, rec: Record) -> Any:
    if rec.obj.get("status") == "draft":
        _finalize(call, rec, updated=True)
    call.em.emit_for(call, rec, "sent")
    return rec


@invoice.on_delete
def _invoice_delete(call: Call, rec: Record) -> None:
    if rec.obj.get("status") != "draft":
        raise StripeError.invalid("You can only delete draft invoices.")
    em = call.em
    ix = em.store.path_index.get(f"/v1/invoices/{rec.id}/lines")
    for line in list(ix.records()) if ix is not None else []:
        em.store.remove(line)


def _draft(rec: Record) -> None:
    if rec.obj.get("status") != "draft":
        raise StripeError.invalid("You can only modify lines of draft invoices.")


@invoice.action("add_lines")
def _invoice_add_lines(call: Call, rec: Record) -> Any:
    em = call.em
    _draft(rec)
    for spec in call.param("lines") or []:
        if spec.get("invoice_item"):
            ii = require_ref(call, "invoiceitem", spec["invoice_item"], "lines[0][invoice_item]")
            before = ii.copy()
            ii.obj["invoice"] = rec.id
            em.changed(call, ii, before, event=None)
        else:
            ii_obj = em.new_object("invoiceitem", customer=rec.obj.get("customer"), invoice=rec.id)
            _fill_invoiceitem(call, ii_obj, spec, rec.obj.get("currency"))
            ii = em.insert("invoiceitem", ii_obj)
            em.emit_for(call, ii, "created")
        _line_for_item(call, ii)
    refresh_invoice(call, rec.id)
    return rec


@invoice.action("remove_lines")
def _invoice_remove_lines(call: Call, rec: Record) -> Any:
    em = call.em
    _draft(rec)
    for spec in call.param("lines") or []:
        line = em.get("line_item", spec["id"])
        if line is None or line.obj.get("invoice") != rec.id:
            raise StripeError.missing("line_item", spec["id"], param="lines")
        ii_id = ((line.obj.get("parent") or {}).get("invoice_item_details") or {}).get(
            "invoice_item"
        )
        em.store.remove(line)
        ii = em.get("invoiceitem", ii_id) if ii_id else None
        if ii is not None:
            if spec.get("behavior") == "delete":
                em.remove(call, ii)
            else:
                before = ii.copy()
                ii.obj["invoice"] = None
                em.changed(call, ii, before, event=None)
    refresh_invoice(call, rec.id)
    return rec


@invoice.action("update_lines")
def _invoice_update_lines(call: Call, rec: Record) -> Any:
    em = call.em
    _draft(rec)
    for spec in call.param("lines") or []:
        line = em.get("line_item", spec.get("id", ""))
        if line is None or line.obj.get("invoice") != rec.id:
            raise StripeError.missing("line_item", spec.get("id", ""), param="lines")
        before = line.copy()
        em.apply_params("InvoiceLineItem", line.obj, spec)
        if "amount" in spec:
            line.obj["subtotal"] = spec["amount"]
        em.changed(call, line, before, event=None)
    refresh_invoice(call, rec.id)
    return rec


invoice.filters["subscription"] = lambda call, v: (
    lambda o: (
        ((o.get("parent") or {}).get("subscription_details") or {}).get("subscription") == v
        or o.get("subscription") == v
    )
)

line_item = behaviour("line_item")


@line_item.on_update
def _line_update(call: Call, rec: Record, before: dict[str, Any]) -> None:
    inv = call.em.get("invoice", str(rec.obj.get("invoice") or ""))
    if inv is not None:
        _draft(inv)
    if call.param("amount") is not None:
        rec.obj["subtotal"] = call.param("amount")
    rec.touch()
    refresh_invoice(call, rec.obj.get("invoice"))


# ---- invoice items -----------------------------------------------------------------------

invoiceitem = behaviour(
    "invoiceitem",
    consumes={
        "pricing",
        "price_data",
        "period",
        "invoice",
        "subscription",
        "tax_rates",
        "discounts",
    },
    defaults={"discountable": True, "proration": False, "quantity": 1},
)


def _fill_invoiceitem(
    call: Call, obj: dict[str, Any], spec: dict[str, Any], currency: str | None
) -> None:
    em = call.em
    price_obj: dict[str, Any] | None = None
    pricing = spec.get("pricing")
    if isinstance(pricing, dict) and pricing.get("price"):
        price_obj = price_copy(call, pricing["price"], "pricing[price]")
    elif spec.get("price"):
        price_obj = price_copy(call, spec["price"])
    elif isinstance(spec.get("price_data"), dict):
        price_obj = price_from_data(call, spec["price_data"], currency)
    qty = int(spec.get("quantity") or 1)
    obj["quantity"] = qty
    if spec.get("description"):
        obj["description"] = spec["description"]
    if isinstance(spec.get("metadata"), dict):
        obj["metadata"] = {k: v for k, v in spec["metadata"].items() if v}
    if price_obj is not None:
        obj["amount"] = int(price_obj.get("unit_amount") or 0) * qty
        obj["currency"] = price_obj.get("currency", "usd")
        p = em.shapes.new("InvoiceItem.Pricing")
        p["price_details"] = {"price": price_obj["id"], "product": price_obj.get("product")}
        p["unit_amount_decimal"] = price_obj.get("unit_amount_decimal")
        obj["pricing"] = p
    elif spec.get("amount") is not None:
        obj["amount"] = int(spec["amount"])
        obj["currency"] = spec.get("currency") or obj.get("currency") or currency or "usd"
    else:
        raise StripeError.invalid(
            "You must specify either `amount`, `pricing`, or `price_data`.", param="amount"
        )
    now = call.now
    period = spec.get("period") if isinstance(spec.get("period"), dict) else {}
    obj["period"] = {"start": period.get("start", now), "end": period.get("end", now)}
    obj["date"] = now
    obj["net_amount"] = obj["amount"]
    obj["quantity_decimal"] = str(qty)


@invoiceitem.on_create
def _invoiceitem_create(call: Call, obj: dict[str, Any]) -> None:
    cus = require_ref(call, "customer", obj.get("customer"), "customer")
    _fill_invoiceitem(call, obj, call.params, cus.obj.get("currency"))
    inv_id = call.param("invoice")
    if inv_id:
        inv = require_ref(call, "invoice", inv_id, "invoice")
        _draft(inv)
        obj["invoice"] = inv_id


@invoiceitem.after_create
def _invoiceitem_created(call: Call, rec: Record) -> None:
    if rec.obj.get("invoice"):
        _line_for_item(call, rec)
        refresh_invoice(call, rec.obj["invoice"])


def _line_for_item(call: Call, ii: Record) -> Record:
    em = call.em
    o = ii.obj
    pricing = o.get("pricing") or {}
    price_id = (pricing.get("price_details") or {}).get("price")
    price_obj = em.get("price", price_id).copy() if price_id and em.get("price", price_id) else None
    line = _new_line(
        call,
        o["invoice"],
        int(o.get("amount") or 0),
        o.get("currency", "usd"),
        int(o.get("quantity") or 1),
        price_obj,
    )
    line["description"] = o.get("description")
    line["period"] = dict(o.get("period") or line["period"])
    line["metadata"] = dict(o.get("metadata") or {})
    lp = em.shapes.new("InvoiceLineItem.Parent")
    lp["type"] = "invoice_item_details"
    lp["invoice_item_details"] = {
        "invoice_item": ii.id,
        "proration": False,
        "proration_details": {"credited_items": None},
        "subscription": None,
    }
    line["parent"] = lp
    return em.insert("line_item", line)


def _lines_of_item(em: Emulator, ii: Record) -> list[Record]:
    path = f"/v1/invoices/{ii.obj.get('invoice')}/lines"
    ix = em.store.path_index.get(path)
    out = []
    for line in ix.records() if ix is not None else []:
        det = (line.obj.get("parent") or {}).get("invoice_item_details") or {}
        if det.get("invoice_item") == ii.id:
            out.append(line)
    return out


@invoiceitem.on_update
def _invoiceitem_update(call: Call, rec: Record, before: dict[str, Any]) -> None:
    em = call.em
    if call.param("amount") is not None or call.param("quantity") is not None:
        if call.param("amount") is None and rec.obj.get("pricing"):
            pid = rec.obj["pricing"]["price_details"]["price"]
            p = em.get("price", pid)
            unit = int(p.obj.get("unit_amount") or 0) if p else 0
            rec.obj["amount"] = unit * int(rec.obj.get("quantity") or 1)
        rec.obj["net_amount"] = rec.obj["amount"]
    if rec.obj.get("invoice"):
        for line in _lines_of_item(em, rec):
            lb = line.copy()
            line.obj.update(
                amount=rec.obj["amount"],
                subtotal=rec.obj["amount"],
                description=rec.obj.get("description"),
                quantity=rec.obj.get("quantity"),
                metadata=dict(rec.obj.get("metadata") or {}),
            )
            em.changed(call, line, lb, event=None)
        rec.touch()
        refresh_invoice(call, rec.obj["invoice"])


@invoiceitem.on_delete
def _invoiceitem_delete(call: Call, rec: Record) -> None:
    em = call.em
    inv_id = rec.obj.get("invoice")
    if inv_id:
        inv = em.get("invoice", inv_id)
        if inv is not None and inv.obj.get("status") != "draft":
            raise StripeError.invalid(
                "Invoice items attached to a finalized invoice cannot be deleted."
            )
        for line in _lines_of_item(em, rec):
            em.store.remove(line)
        refresh_invoice(call, inv_id)


invoiceitem.filters["pending"] = lambda call, v: lambda o: (not o.get("invoice")) == v


# ---- upcoming invoices -------------------------------------------------------------------


def preview_invoice(call: Call, *, all_subscriptions: bool) -> dict[str, Any]:
    """The invoice a customer (or one subscription) would get next, without keeping it."""
    em = call.em
    sub_id = call.param("subscription")
    cus_id = call.param("customer")
    subs: list[Record] = []
    if sub_id:
        subs = [require_ref(call, "subscription", sub_id, "subscription")]
        cus_id = cus_id or subs[0].obj.get("customer")
        if subs[0].obj.get("status") in ("canceled", "incomplete_expired"):
            raise _no_upcoming(cus_id)  # an ended subscription bills nothing more
    if not cus_id:
        raise StripeError.invalid("Missing required param: customer.", param="customer")
    cus = require_ref(call, "customer", cus_id, "customer")
    if not sub_id and all_subscriptions:
        ix = em.store.path_index.get(f"/v1/subscriptions?customer={cus.id}")
        subs = [
            s
            for s in (ix.records() if ix is not None else [])
            if s.obj.get("status") in ("active", "trialing", "past_due")
        ]
    inv = _new_invoice(call, cus.obj, "charge_automatically")
    inv["id"] = f"upcoming_{inv['id']}"
    lines: list[dict[str, Any]] = []
    next_start = None
    for s in subs:
        for it in s.obj["items"]["data"]:
            p = it["price"]
            qty = it.get("quantity") or 1
            amount = int(p.get("unit_amount") or 0) * qty
            line = _new_line(call, inv["id"], amount, p.get("currency", "usd"), qty, p)
            start = it.get("current_period_end") or call.now
            length = start - (it.get("current_period_start") or start)
            line["period"] = {"start": start, "end": start + length}
            line["subscription"] = s.id
            line["description"] = f"{qty} \u00d7 {p.get('nickname') or p.get('product')}"
            next_start = start if next_start is None else min(next_start, start)
            lines.append(line)
    for ii in em.store.index("invoiceitem").records():
        if ii.obj.get("customer") == cus.id and not ii.obj.get("invoice"):
            o = ii.obj
            line = _new_line(
                call,
                inv["id"],
                int(o.get("amount") or 0),
                o.get("currency", "usd"),
                int(o.get("quantity") or 1),
                None,
            )
            line["description"] = o.get("description")
            lines.append(line)
    if not lines:  # no subscription to renew and no pending invoice item
        raise _no_upcoming(cus.id)
    inv["lines"] = listobject(lines, f"/v1/invoices/{inv['id']}/lines")
    total = sum(x["amount"] for x in lines)
    inv.update(
        subtotal=total,
        subtotal_excluding_tax=total,
        total=total,
        total_excluding_tax=total,
        amount_due=total,
        amount_remaining=total,
    )
    if subs:
        inv["currency"] = subs[0].obj.get("currency") or "usd"
        parent = em.shapes.new("Invoice.Parent")
        parent["type"] = "subscription_details"
        parent["subscription_details"] = {
            "metadata": dict(subs[0].obj.get("metadata") or {}),
            "subscription": subs[0].id,
            "subscription_proration_date": None,
        }
        inv["parent"] = parent
        inv["billing_reason"] = "subscription_cycle"
    if next_start is not None:
        inv["period_start"] = next_start
        inv["period_end"] = next_start
        inv["next_payment_attempt"] = next_start + 3600
        inv["created"] = next_start
    inv["automatically_finalizes_at"] = None
    return inv


def _no_upcoming(cus_id: Any) -> StripeError:
    """Stripe's answer when there is nothing to preview."""
    return StripeError(
        404, f"No upcoming invoices for customer: {cus_id}", code="invoice_upcoming_none"
    )


@endpoint("POST", "/v1/invoices/create_preview")
def _create_preview(call: Call) -> Any:
    return preview_invoice(call, all_subscriptions=False)


# ---- payments: charges, refunds, disputes, payment intents -------------------------------

charge = behaviour(
    "charge",
    consumes={"source", "capture", "application_fee", "application_fee_amount", "destination"},
)


@charge.on_create
def _charge_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    amount = int(obj.get("amount") or 0)
    if amount < 50:
        raise StripeError.invalid(
            "Amount must be at least $0.50 usd", param="amount", code="amount_too_small"
        )
    src = call.param("source")
    card: dict[str, Any] | None = None
    if obj.get("customer"):
        cus = require_ref(call, "customer", obj["customer"], "customer")
        sid = src or cus.obj.get("default_source")
        rec = em.find(sid, ["card", "bank_account", "source"]) if sid else None
        card = rec.copy() if rec is not None else None
    elif isinstance(src, str) and src:
        card = make_card(em, src)
    if card is None and not obj.get("customer"):
        raise StripeError.invalid(
            "Must provide source or customer.", param="source", code="parameter_missing"
        )
    _fill_charge(call, obj, card, call.param("capture", True))
    if isinstance(src, str) and src == "tok_chargeDeclined":
        obj.update(
            status="failed",
            paid=False,
            captured=False,
            amount_captured=0,
            failure_code="card_declined",
            failure_message="Your card was declined.",
            balance_transaction=None,
        )
        obj["outcome"].update(
            network_status="declined_by_network",
            type="issuer_declined",
            seller_message="The bank did not return any further details.",
        )


def _fill_charge(
    call: Call, obj: dict[str, Any], card: dict[str, Any] | None, capture: bool
) -> None:
    em = call.em
    amount = int(obj.get("amount") or 0)
    obj.update(
        status="succeeded",
        paid=True,
        captured=bool(capture),
        amount_captured=amount if capture else 0,
        amount_refunded=0,
        refunded=False,
        disputed=False,
        calculated_statement_descriptor="STRIPE EMULATOR",
        receipt_url=f"https://pay.stripe.com/receipts/{obj['id']}",
    )
    if obj.get("billing_details") is None:
        obj["billing_details"] = em.shapes.new("Charge.BillingDetails")
    obj["outcome"] = {
        "advice_code": None,
        "network_advice_code": None,
        "network_decline_code": None,
        "network_status": "approved_by_network",
        "reason": None,
        "risk_level": "normal",
        "risk_score": 32,
        "seller_message": "Payment complete.",
        "type": "authorized",
    }
    if card is not None:
        obj["source"] = card
        obj["payment_method"] = card.get("id")
        obj["payment_method_details"] = {
            "type": card.get("object", "card"),
            card.get("object", "card"): {
                k: card.get(k)
                for k in (
                    "brand",
                    "country",
                    "exp_month",
                    "exp_year",
                    "fingerprint",
                    "funding",
                    "last4",
                )
            },
        }
    if capture:
        obj["balance_transaction"] = balance_txn(
            em, amount, obj.get("currency", "usd"), "charge", obj["id"]
        )


@charge.after_create
def _charge_created(call: Call, rec: Record) -> None:
    em = call.em
    if rec.obj.get("status") == "failed":
        em.emit_for(call, rec, "failed")
        raise StripeError(
            402,
            "Your card was declined.",
            type="card_error",
            code="card_declined",
            param=None,
        )
    em.emit_for(call, rec, "succeeded")


@charge.action("capture")
def _charge_capture(call: Call, rec: Record) -> Any:
    em = call.em
    if rec.obj.get("captured"):
        raise StripeError.invalid(
            f"Charge {rec.id} has already been captured.", code="charge_already_captured"
        )
    before = rec.copy()
    amount = int(call.param("amount") or rec.obj["amount"])
    rec.obj.update(captured=True, amount_captured=amount)
    rec.obj["balance_transaction"] = balance_txn(em, amount, rec.obj["currency"], "charge", rec.id)
    prev = em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "captured")
    if prev:
        em.emit_for(call, rec, "updated", previous=prev)
    return rec


refund = behaviour("refund", consumes={"refund_application_fee", "reverse_transfer", "origin"})


@refund.on_create
def _refund_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    ch: Record | None = None
    if obj.get("charge"):
        ch = require_ref(call, "charge", obj["charge"], "charge")
    elif obj.get("payment_intent"):
        pi = require_ref(call, "payment_intent", obj["payment_intent"], "payment_intent")
        latest = pi.obj.get("latest_charge")
        ch = em.get("charge", latest) if isinstance(latest, str) else None
        if ch is None:
            raise StripeError.invalid(
                "This PaymentIntent does not have a successful charge to refund.",
                param="payment_intent",
            )
    else:
        raise StripeError.invalid(
            "One of the following params should be provided for this request: "
            "payment_intent or charge.",
        )
    remaining = int(ch.obj.get("amount_captured") or ch.obj["amount"]) - int(
        ch.obj.get("amount_refunded") or 0
    )
    amount = int(obj.get("amount") or remaining)
    if amount > remaining or remaining <= 0:
        raise StripeError.invalid(
            f"Refund amount (${amount / 100:.2f}) is greater than unrefunded amount on charge "
            f"(${max(remaining, 0) / 100:.2f})",
            param="amount",
        )
    obj.update(
        charge=ch.id,
        amount=amount,
        currency=ch.obj.get("currency", "usd"),
        payment_intent=ch.obj.get("payment_intent"),
        status="succeeded",
    )
    obj["balance_transaction"] = balance_txn(em, -amount, obj["currency"], "refund", obj["id"])


@refund.after_create
def _refund_created(call: Call, rec: Record) -> None:
    em = call.em
    ch = em.get("charge", rec.obj["charge"])
    if ch is None:
        return
    before = ch.copy()
    ch.obj["amount_refunded"] = int(ch.obj.get("amount_refunded") or 0) + rec.obj["amount"]
    ch.obj["refunded"] = ch.obj["amount_refunded"] >= int(
        ch.obj.get("amount_captured") or ch.obj["amount"]
    )
    em.changed(call, ch, before, event="refunded")


dispute = behaviour("dispute", event_prefix="charge.dispute")


@dispute.action("close")
def _dispute_close(call: Call, rec: Record) -> Any:
    em = call.em
    before = rec.copy()
    rec.obj["status"] = "lost"
    rec.obj["is_charge_refundable"] = False
    prev = em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "closed")
    if prev:
        em.emit_for(call, rec, "updated", previous=prev)
    return rec


payment_intent = behaviour(
    "payment_intent",
    consumes={"confirm", "payment_method_data", "off_session", "error_on_requires_action"},
)


@payment_intent.on_create
def _pi_create(call: Call, obj: dict[str, Any]) -> None:
    obj["client_secret"] = f"{obj['id']}_secret_{call.em.ids.token(24)}"
    obj["status"] = (
        "requires_confirmation" if obj.get("payment_method") else "requires_payment_method"
    )
    obj["amount_capturable"] = 0
    obj["amount_received"] = 0
    if obj.get("payment_method_types") in (None, []):
        obj["payment_method_types"] = ["card"]


@payment_intent.after_create
def _pi_created(call: Call, rec: Record) -> None:
    if call.param("confirm") and rec.obj.get("payment_method"):
        _pi_succeed(call, rec)


def _pi_succeed(call: Call, rec: Record) -> Record:
    em = call.em
    before = rec.copy()
    ch = em.new_object(
        "charge",
        amount=rec.obj["amount"],
        currency=rec.obj["currency"],
        customer=rec.obj.get("customer"),
        payment_intent=rec.id,
        description=rec.obj.get("description"),
    )
    _fill_charge(call, ch, make_card(em, "tok_visa"), True)
    ch["payment_method"] = rec.obj.get("payment_method")
    crec = em.insert("charge", ch)
    em.emit_for(call, crec, "succeeded")
    rec.obj.update(status="succeeded", amount_received=rec.obj["amount"], latest_charge=crec.id)
    em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "succeeded")
    return rec


@payment_intent.action("confirm")
def _pi_confirm(call: Call, rec: Record) -> Any:
    if call.param("payment_method"):
        rec.obj["payment_method"] = call.param("payment_method")
    if not rec.obj.get("payment_method"):
        raise StripeError.invalid(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            code="payment_intent_unexpected_state",
        )
    return _pi_succeed(call, rec)


# ---- connect: accounts, persons, application fees ----------------------------------------

account = behaviour(
    "account",
    consumes={"external_account", "tos_acceptance", "bank_account", "documents"},
    defaults={
        "charges_enabled": False,
        "payouts_enabled": False,
        "details_submitted": False,
        "default_currency": "usd",
        "country": "US",
    },
)


@account.on_create
def _account_create(call: Call, obj: dict[str, Any]) -> None:
    if not obj.get("type"):
        obj["type"] = "custom" if call.param("controller") is None else "none"
    ext = call.param("external_account")
    if ext:
        ba = make_bank_account(call.em, account=obj["id"], default_for_currency=True)
        call.em.insert("bank_account", ba)


fee = behaviour("application_fee")
fee_refund = behaviour("fee_refund", event_prefix="application_fee.refund")


@fee_refund.on_create
def _fee_refund_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    f = require_ref(call, "application_fee", obj.get("fee"), "id")
    remaining = int(f.obj.get("amount") or 0) - int(f.obj.get("amount_refunded") or 0)
    amount = int(call.param("amount") or remaining)
    if amount > remaining or remaining <= 0:
        raise StripeError.invalid(
            "Refund amount is greater than the unrefunded amount of the application fee.",
            param="amount",
        )
    obj.update(amount=amount, currency=f.obj.get("currency", "usd"))
    obj["balance_transaction"] = balance_txn(
        em, -amount, obj["currency"], "application_fee_refund", obj["id"]
    )


@fee_refund.after_create
def _fee_refund_created(call: Call, rec: Record) -> None:
    em = call.em
    f = em.get("application_fee", rec.obj["fee"])
    if f is None:
        return
    before = f.copy()
    f.obj["amount_refunded"] = int(f.obj.get("amount_refunded") or 0) + rec.obj["amount"]
    f.obj["refunded"] = f.obj["amount_refunded"] >= int(f.obj.get("amount") or 0)
    f.obj["refunds"] = embedded_list(em, f"/v1/application_fees/{f.id}/refunds")
    em.changed(call, f, before, event="refunded")


transfer_reversal = behaviour("transfer_reversal")


@transfer_reversal.on_create
def _reversal_create(call: Call, obj: dict[str, Any]) -> None:
    t = require_ref(call, "transfer", obj.get("transfer"), "id")
    remaining = int(t.obj.get("amount") or 0) - int(t.obj.get("amount_reversed") or 0)
    obj["amount"] = int(call.param("amount") or remaining)
    obj["currency"] = t.obj.get("currency", "usd")


@transfer_reversal.after_create
def _reversal_created(call: Call, rec: Record) -> None:
    em = call.em
    t = em.get("transfer", rec.obj["transfer"])
    if t is None:
        return
    before = t.copy()
    t.obj["amount_reversed"] = int(t.obj.get("amount_reversed") or 0) + rec.obj["amount"]
    t.obj["reversed"] = t.obj["amount_reversed"] >= int(t.obj.get("amount") or 0)
    t.obj["reversals"] = embedded_list(em, f"/v1/transfers/{t.id}/reversals")
    em.changed(call, t, before, event="reversed")


@behaviour("transfer").on_create
def _transfer_create(call: Call, obj: dict[str, Any]) -> None:
    obj["reversals"] = listobject([], f"/v1/transfers/{obj['id']}/reversals")
    obj["amount_reversed"] = 0


@behaviour(
    "payout",
    defaults={
        "status": "pending",
        "method": "standard",
        "type": "bank_account",
        "automatic": False,
    },
).on_create
def _payout_create(call: Call, obj: dict[str, Any]) -> None:
    obj["arrival_date"] = call.now + 2 * 86400
    obj["balance_transaction"] = balance_txn(
        call.em, -int(obj.get("amount") or 0), obj.get("currency", "usd"), "payout", obj["id"]
    )


# ---- checkout ----------------------------------------------------------------------------

checkout = behaviour("checkout.session", consumes={"line_items"})


@checkout.on_create
def _checkout_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    now = call.now
    obj.update(
        status="open",
        payment_status="unpaid",
        mode=obj.get("mode") or "payment",
        expires_at=obj.get("expires_at") or now + 86400,
        url=f"https://checkout.stripe.com/c/pay/{obj['id']}",
    )
    total = 0
    path = f"/v1/checkout/sessions/{obj['id']}/line_items"
    for spec in call.param("line_items") or []:
        if spec.get("price"):
            p = price_copy(call, spec["price"], "line_items[0][price]")
        elif isinstance(spec.get("price_data"), dict):
            p = price_from_data(call, spec["price_data"], obj.get("currency"))
        else:
            raise StripeError.invalid(
                "Missing required param: line_items[0][price].", param="line_items[0][price]"
            )
        qty = int(spec.get("quantity") or 1)
        amount = int(p.get("unit_amount") or 0) * qty
        total += amount
        prod = em.get("product", str(p.get("product") or ""))
        item = em.new_object(
            "item",
            amount_discount=0,
            amount_subtotal=amount,
            amount_tax=0,
            amount_total=amount,
            currency=p.get("currency", "usd"),
            description=prod.obj.get("name") if prod else None,
            price=p,
            quantity=qty,
        )
        em.insert("item", item, lists=(path,))
        obj["currency"] = obj.get("currency") or p.get("currency", "usd")
    obj["amount_subtotal"] = total
    obj["amount_total"] = total


@checkout.action("expire")
def _checkout_expire(call: Call, rec: Record) -> Any:
    em = call.em
    if rec.obj.get("status") != "open":
        raise StripeError.invalid(
            'Only Checkout Sessions with a status in ["open"] can be expired.'
        )
    before = rec.copy()
    rec.obj["status"] = "expired"
    em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "expired")
    return rec


# ---- singletons and the rest -------------------------------------------------------------


@behaviour("balance").on_create
def _balance_default(call: Call, obj: dict[str, Any]) -> None:
    amount = 0
    for txn in call.em.store.objects("balance_transaction").values():
        amount += int(txn.obj.get("net") or 0)
    obj["available"] = [{"amount": amount, "currency": "usd", "source_types": {"card": amount}}]
    obj["pending"] = [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}]


@endpoint("GET", "/v1/balance")
def _balance(call: Call) -> Any:
    loaded = call.em.store.singletons.get("/v1/balance")
    if loaded is not None:
        return loaded.obj  # POST /_emulator/load serves what it was given
    obj = call.em.shapes.new("Balance")
    _balance_default(call, obj)
    return obj


webhook = behaviour("webhook_endpoint", defaults={"status": "enabled"})


@webhook.on_create
def _webhook_create(call: Call, obj: dict[str, Any]) -> None:
    obj["secret"] = "whsec_" + call.em.ids.token(32)
    obj["api_version"] = call.param("api_version")
    obj["application"] = None


@webhook.on_update
def _webhook_update(call: Call, rec: Record, before: dict[str, Any]) -> None:
    disabled = call.param("disabled")
    if isinstance(disabled, bool):  # webhooks.py delivers to `enabled` endpoints only
        rec.obj["status"] = "disabled" if disabled else "enabled"


event = behaviour("event")


@event.list_filter("type")
def _event_type(call: Call, v: Any) -> Any:
    if isinstance(v, str) and "*" in v:
        import fnmatch

        rx = fnmatch.translate(v)
        import re

        m = re.compile(rx).match
        return lambda o: bool(m(o.get("type", "")))
    return lambda o: o.get("type") == v


@event.list_filter("types")
def _event_types(call: Call, v: Any) -> Any:
    wanted = set(v or [])
    return lambda o: o.get("type") in wanted


@event.list_filter("delivery_success")
def _event_delivery(call: Call, v: Any) -> Any:
    return lambda o: True


def _event_retrieve_guard(call: Call) -> Any:
    em = call.em
    rec = em.lookup(call)
    if (
        isinstance(rec, dict)
        or rec.created < em.clock.now() - em.config.event_retention_days * 86400
    ):
        raise StripeError.missing("event", call.pp("id"))
    return rec


endpoint("GET", "/v1/events/{id}")(_event_retrieve_guard)


def registered_types() -> list[str]:
    from stripesync.emulator.registry import BEHAVIOURS

    return sorted(BEHAVIOURS)


__all__ = ["EVENT_TYPES", "get", "preview_invoice", "refresh_invoice", "registered_types"]
