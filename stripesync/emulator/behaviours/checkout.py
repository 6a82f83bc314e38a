"""Checkout sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.behaviours.common import price_copy, price_from_data
from stripesync.emulator.errors import StripeError
from stripesync.emulator.registry import behaviour

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call
    from stripesync.emulator.store import Record

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
    for i, spec in enumerate(call.param("line_items") or []):
        if spec.get("price"):
            p = price_copy(call, spec["price"], f"line_items[{i}][price]")
        elif isinstance(spec.get("price_data"), dict):
            p = price_from_data(call, spec["price_data"], obj.get("currency"))
        else:
            raise StripeError.missing_param(f"line_items[{i}][price]")
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
