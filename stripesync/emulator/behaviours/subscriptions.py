"""Subscriptions and their items: a subscription makes items and its first invoice."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from stripesync.emulator.behaviours.common import (
    INTERVAL_SECONDS,
    embedded_list,
    plan_from_price,
    price_copy,
    price_from_data,
    require_ref,
    subscription_invoice_parent,
    subscription_line_parent,
)
from stripesync.emulator.behaviours.invoices import (
    _finalize,
    _new_invoice,
    _new_line,
    _pay,
    _pull_pending_items,
    _recompute_invoice,
)
from stripesync.emulator.errors import StripeError
from stripesync.emulator.registry import behaviour

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call, Emulator
    from stripesync.emulator.store import Record

subscription = behaviour(
    "subscription",
    event_prefix="customer.subscription",
    consumes={"items", "default_tax_rates", "discounts", "add_invoice_items", "trial_end"},
    defaults={"cancel_at_period_end": False, "discounts": [], "billing_schedules": []},
)


def _items_path(sub_id: str) -> str:
    return f"/v1/subscription_items?subscription={sub_id}"


def _item_fields(
    call: Call, sub: dict[str, Any], spec: dict[str, Any], prefix: str = "items[0]"
) -> dict[str, Any]:
    """The fields of a subscription item made from `spec`; `prefix` names the item's
    parameters in errors (`items[1]`, or "" for the item's own endpoint)."""
    em = call.em

    def param(name: str) -> str:
        return f"{prefix}[{name}]" if prefix else name

    if spec.get("price"):
        price_obj = price_copy(call, spec["price"], param("price"))
    elif spec.get("plan"):
        price_obj = price_copy(call, spec["plan"], param("plan"))
    elif isinstance(spec.get("price_data"), dict):
        price_obj = price_from_data(call, spec["price_data"], sub.get("currency"))
    else:
        raise StripeError.missing_param(param("price"))
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


def _make_item(call: Call, sub: dict[str, Any], spec: dict[str, Any], index: int = 0) -> Record:
    em = call.em
    item = em.new_object("subscription_item", **_item_fields(call, sub, spec, f"items[{index}]"))
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
        raise StripeError.missing_param("items")
    made = [_make_item(call, obj, it, i) for i, it in enumerate(items)]
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
    inv, outcome = _subscription_invoice(call, obj, cus, "subscription_create")
    obj["latest_invoice"] = inv.id
    if outcome != "paid" and obj["status"] == "active":
        # the first invoice is not paid (no payment method, or a declined card): Stripe's
        # `allow_incomplete` leaves the subscription incomplete, its invoice open
        obj["status"] = "incomplete"


def _subscription_invoice(
    call: Call,
    sub: dict[str, Any],
    cus: Record,
    reason: str,
    *,
    item_lines: bool = True,
) -> tuple[Record, str]:
    """The invoice a subscription period produces: one line per item (none with
    `item_lines` false: an invoice of pending prorations), and the subscription's
    pending invoice items; paid when charged automatically. Answers the invoice and how
    its payment went (`_pay`'s outcome, "open" when not charged)."""
    em = call.em
    inv = _new_invoice(call, cus.obj, sub.get("collection_method") or "charge_automatically")
    inv["billing_reason"] = reason
    inv["currency"] = sub.get("currency") or "usd"
    inv["parent"] = subscription_invoice_parent(em, sub)
    rec = em.insert("invoice", inv)
    trialing = sub.get("status") == "trialing"
    ix = em.store.path_index.get(_items_path(sub["id"]))
    items = list(ix.records()) if ix is not None and item_lines else []
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
        line["parent"] = subscription_line_parent(em, sub["id"], it.id)
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
        return rec, _pay(call, rec, sub=sub)
    return rec, "open"


@subscription.on_update
def _subscription_update(call: Call, rec: Record, before: dict[str, Any]) -> None:
    em = call.em
    items = call.param("items")
    prorated = False
    if isinstance(items, list):
        for i, spec in enumerate(items):
            iid = spec.get("id")
            if iid:
                item = em.get("subscription_item", iid)
                if item is None or item.obj.get("subscription") != rec.id:
                    raise StripeError.missing("subscription_item", iid, param="items")
                if spec.get("deleted"):
                    prorated |= _prorate(call, rec.obj, item.obj, None)
                    em.store.remove(item)
                    continue
                ib = item.copy()
                if spec.get("price"):
                    item.obj["price"] = price_copy(call, spec["price"], f"items[{i}][price]")
                    item.obj["plan"] = plan_from_price(em, item.obj["price"])
                if "quantity" in spec:
                    item.obj["quantity"] = spec["quantity"]
                if isinstance(spec.get("metadata"), dict):
                    em.apply_params("SubscriptionItem", item.obj, {"metadata": spec["metadata"]})
                em.changed(call, item, ib, event=None)
                prorated |= _prorate(call, rec.obj, ib, item.obj)
            else:
                made = _make_item(call, rec.obj, spec, i)
                prorated |= _prorate(call, rec.obj, None, made.obj)
        _refresh_items(em, rec.obj)
    if prorated:
        _invoice_prorations(call, rec.obj)
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
    obj.update(_item_fields(call, sub.obj, spec, ""))


@sub_item.after_create
def _sub_item_created(call: Call, rec: Record) -> None:
    em = call.em
    em.store.add_to_list(_items_path(rec.obj["subscription"]), rec)
    sub = em.get("subscription", rec.obj["subscription"])
    if sub is not None and _prorate(call, sub.obj, None, rec.obj):
        _invoice_prorations(call, sub.obj)
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
    sub = call.em.get("subscription", rec.obj["subscription"])
    if sub is not None and _prorate(call, sub.obj, before, rec.obj):
        _invoice_prorations(call, sub.obj)
    _touch_subscription(call, rec.obj["subscription"])


@sub_item.on_delete
def _sub_item_delete(call: Call, rec: Record) -> None:
    em = call.em
    sub = em.get("subscription", rec.obj["subscription"])
    if sub is not None and _prorate(call, sub.obj, rec.obj, None):
        _invoice_prorations(call, sub.obj)
    em.store.remove_from_list(_items_path(rec.obj["subscription"]), rec)
    _touch_subscription(call, rec.obj["subscription"])


# ---- prorations --------------------------------------------------------------------------


def _proration_behavior(call: Call) -> str:
    value = call.param("proration_behavior")
    return value if isinstance(value, str) and value else "create_prorations"


def _prorate(
    call: Call,
    sub: dict[str, Any],
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
) -> bool:
    """Proration invoice items for an item changing from `old` to `new` (None: the item
    is added, or removed), as `proration_behavior` says: a credit for the unused time of
    the old price and quantity, a charge for the new, each prorated by the seconds left
    in the current period (from `proration_date`, else now). True when items were made."""
    if _proration_behavior(call) == "none" or sub.get("status") in (
        "trialing",
        "canceled",
        "incomplete_expired",
    ):
        return False
    if old is not None and new is not None and (
        (old.get("price") or {}).get("id") == (new.get("price") or {}).get("id")
        and (old.get("quantity") or 1) == (new.get("quantity") or 1)
    ):
        return False  # metadata only: nothing to prorate
    ref = old or new
    assert ref is not None
    start, end = int(ref["current_period_start"]), int(ref["current_period_end"])
    date = call.param("proration_date")
    at = date if isinstance(date, int) else call.now
    if end <= start or not start <= at < end:
        return False
    made = False
    for side, sign, words in ((old, -1, "Unused time on"), (new, 1, "Remaining time on")):
        if side is None:
            continue
        made |= _proration_item(call, sub, side, sign, words, at, start, end)
    return made


def _proration_item(
    call: Call,
    sub: dict[str, Any],
    item: dict[str, Any],
    sign: int,
    words: str,
    at: int,
    start: int,
    end: int,
) -> bool:
    em = call.em
    price = item.get("price") or {}
    qty = int(item.get("quantity") or 1)
    full = int(price.get("unit_amount") or 0) * qty
    amount = sign * round(full * (end - at) / (end - start))
    if full == 0:
        return False
    product = em.get("product", str(price.get("product") or ""))
    name = price.get("nickname") or (product.obj.get("name") if product else price.get("product"))
    day = time.strftime("%d %b %Y", time.gmtime(at))
    ii = em.new_object(
        "invoiceitem",
        customer=sub.get("customer"),
        amount=amount,
        net_amount=amount,
        currency=price.get("currency") or sub.get("currency") or "usd",
        description=f"{words} {qty} \u00d7 {name} after {day}",
        proration=True,
        quantity=qty,
        quantity_decimal=str(qty),
        date=call.now,
        period={"start": at, "end": end},
        discountable=False,
    )
    pricing = em.shapes.new("InvoiceItem.Pricing")
    pricing["price_details"] = {"price": price.get("id"), "product": price.get("product")}
    pricing["unit_amount_decimal"] = price.get("unit_amount_decimal")
    ii["pricing"] = pricing
    parent = em.shapes.new("InvoiceItem.Parent")
    parent["type"] = "subscription_details"
    parent["subscription_details"] = {"subscription": sub["id"], "subscription_item": item["id"]}
    ii["parent"] = parent
    rec = em.insert("invoiceitem", ii)
    em.emit_for(call, rec, "created")
    return True


def _invoice_prorations(call: Call, sub: dict[str, Any]) -> None:
    """`proration_behavior=always_invoice`: the prorations just made are invoiced at
    once, and that invoice paid like the others (a failed payment: `past_due`)."""
    if _proration_behavior(call) != "always_invoice":
        return
    em = call.em
    cus = em.get("customer", str(sub.get("customer") or ""))
    if cus is None:
        return
    inv, outcome = _subscription_invoice(
        call, sub, cus, "subscription_update", item_lines=False
    )
    sub["latest_invoice"] = inv.id
    if outcome in ("failed", "no_payment_method") and sub.get("status") == "active":
        sub["status"] = "past_due"
