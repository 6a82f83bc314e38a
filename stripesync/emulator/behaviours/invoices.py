"""Invoices, their lines, invoice items, and the upcoming invoice (preview)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.behaviours.common import (
    embedded_list,
    line_pricing,
    listobject,
    price_copy,
    price_from_data,
    require_ref,
    set_invoice_totals,
    subscription_invoice_parent,
)
from stripesync.emulator.errors import StripeError
from stripesync.emulator.registry import behaviour, endpoint

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call, Emulator
    from stripesync.emulator.store import Record


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
        line["pricing"] = line_pricing(em, price_obj)
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


def _pay(
    call: Call,
    rec: Record,
    updated: bool = False,
    *,
    sub: dict[str, Any] | None = None,
    payment_method: str | None = None,
    out_of_band: bool = False,
) -> str:
    """Pay open (or draft) invoice `rec`: nothing to charge, or paid out of band, marks
    it paid; otherwise its PaymentIntent charges the payment method (the one given, else
    the invoice's, the subscription's `sub`, the customer's default). Answers "paid",
    "no_payment_method" (the invoice stays open, its intent waiting for one) or
    "failed" (a declined charge: `invoice.payment_failed`); `_pay_error` tells why."""
    inv = rec.obj
    if inv.get("status") == "draft":
        _finalize(call, rec, updated)
    if inv.get("status") != "open":
        raise StripeError.invalid(
            "Invoice is already paid."
            if inv.get("status") == "paid"
            else f"You cannot pay an invoice with status {inv.get('status')}."
        )
    if out_of_band or int(inv.get("amount_remaining") or 0) <= 0:
        _mark_paid(call, rec, updated, out_of_band=out_of_band)
        return "paid"
    em = call.em
    pi = _invoice_intent(call, rec)
    pm = payment_method or _payment_method_for(em, inv, sub)
    if pm is None:
        return "no_payment_method"
    from stripesync.emulator.behaviours.payments import _payment_method_id, confirm_intent

    before = pi.copy()
    pi.obj["payment_method"] = _payment_method_id(call, pm)
    pi.obj["status"] = "requires_confirmation"
    em.changed(call, pi, before, event=None)
    _charge, decline = confirm_intent(call, pi)  # paid_by_intent marks the invoice paid
    if decline is None:
        return "paid"
    before = rec.copy()
    inv["attempted"] = True
    inv["attempt_count"] = int(inv.get("attempt_count") or 0) + 1
    prev = em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "payment_failed")
    if prev:
        em.emit_for(call, rec, "updated", previous=prev)
    return "failed"


def _pay_error(call: Call, rec: Record, outcome: str) -> StripeError | None:
    """The error `POST /v1/invoices/{id}/pay` answers for an unpaid outcome of `_pay`."""
    if outcome == "no_payment_method":
        return StripeError.invalid(
            "This customer has no attached payment source or default payment method. Please "
            "consider adding a default payment method. For more information, visit "
            "https://stripe.com/docs/billing/subscriptions/payment-methods-setting"
            "#payment-method-priority."
        )
    if outcome == "failed":
        from stripesync.emulator.behaviours.common import decline_of
        from stripesync.emulator.behaviours.payments import card_error

        pi = _open_intent(call.em, rec.id)
        err = (pi.obj.get("last_payment_error") or {}) if pi is not None else {}
        charge = call.em.get("charge", str(err.get("charge") or ""))
        card = (err.get("payment_method") or {}).get("card")
        decline = decline_of(card) or decline_of((charge.obj if charge else {}).get("source"))
        if decline is not None and charge is not None:
            return card_error(decline, charge.id)
    return None


def _payment_method_for(
    em: Emulator, inv: dict[str, Any], sub: dict[str, Any] | None
) -> str | None:
    """The payment method an invoice charges, in Stripe's order: the invoice's own, the
    subscription's, then the customer's `invoice_settings.default_payment_method` and
    `default_source`."""
    if sub is None:
        sub_id = ((inv.get("parent") or {}).get("subscription_details") or {}).get(
            "subscription"
        )
        found = em.get("subscription", sub_id) if sub_id else None
        sub = found.obj if found is not None else None
    cus_rec = em.get("customer", str(inv.get("customer") or ""))
    cus = cus_rec.obj if cus_rec is not None else {}
    for value in (
        inv.get("default_payment_method"),
        inv.get("default_source"),
        (sub or {}).get("default_payment_method"),
        (sub or {}).get("default_source"),
        (cus.get("invoice_settings") or {}).get("default_payment_method"),
        cus.get("default_source"),
    ):
        if isinstance(value, dict):
            value = value.get("id")
        if isinstance(value, str) and value:
            return value
    return None


def _payments_path(invoice_id: str) -> str:
    return f"/v1/invoice_payments?invoice={invoice_id}"


def _open_intent(em: Emulator, invoice_id: str) -> Record | None:
    """The PaymentIntent of an invoice's open invoice payment, if it has one."""
    ix = em.store.path_index.get(_payments_path(invoice_id))
    for ip in ix.records() if ix is not None else []:
        if ip.obj.get("status") == "open":
            pid = (ip.obj.get("payment") or {}).get("payment_intent")
            return em.get("payment_intent", str(pid or ""))
    return None


def _invoice_intent(call: Call, rec: Record) -> Record:
    """Invoice `rec`'s PaymentIntent for what it still owes, made on first need with
    the `invoice_payment` that links the two (Stripe's invoice `payments`)."""
    em = call.em
    found = _open_intent(em, rec.id)
    if found is not None:
        return found
    inv = rec.obj
    amount = int(inv.get("amount_remaining") or 0)
    reason = inv.get("billing_reason")
    pi = em.new_object(
        "payment_intent",
        amount=amount,
        currency=inv.get("currency") or "usd",
        customer=inv.get("customer"),
        description={
            "subscription_create": "Subscription creation",
            "subscription_update": "Subscription update",
            "subscription_cycle": "Subscription update",
        }.get(str(reason)),
        status="requires_payment_method",
        payment_method_types=["card"],
        capture_method="automatic",
        confirmation_method="automatic",
        amount_capturable=0,
        amount_received=0,
    )
    pi["client_secret"] = f"{pi['id']}_secret_{em.ids.token(24)}"
    pi_rec = em.insert("payment_intent", pi)
    em.emit_for(call, pi_rec, "created")
    ip = em.new_object(
        "invoice_payment",
        invoice=rec.id,
        amount_requested=amount,
        amount_paid=None,
        currency=pi["currency"],
        is_default=True,
        status="open",
        payment={"type": "payment_intent", "payment_intent": pi_rec.id},
        status_transitions={"canceled_at": None, "paid_at": None},
    )
    em.insert("invoice_payment", ip)
    return pi_rec


def paid_by_intent(call: Call, pi: Record) -> None:
    """PaymentIntent `pi` succeeded: the invoice it pays (if any) is paid, and a
    subscription waiting on that invoice (`incomplete`, `past_due`) becomes active."""
    em = call.em
    for ip in list(em.store.index("invoice_payment").records()):
        if (ip.obj.get("payment") or {}).get("payment_intent") != pi.id:
            continue
        if ip.obj.get("status") != "open":
            return
        inv = em.get("invoice", str(ip.obj.get("invoice") or ""))
        before = ip.copy()
        ip.obj["status"] = "paid"
        ip.obj["amount_paid"] = pi.obj.get("amount_received")
        ip.obj["status_transitions"] = {"canceled_at": None, "paid_at": call.now}
        em.changed(call, ip, before, event=None)
        if inv is None or inv.obj.get("status") != "open":
            return
        _mark_paid(call, inv, True)
        em.emit_for(call, ip, "paid")
        details = (inv.obj.get("parent") or {}).get("subscription_details") or {}
        sub = em.get("subscription", str(details.get("subscription") or ""))
        if sub is not None and sub.obj.get("status") in ("incomplete", "past_due"):
            sb = sub.copy()
            sub.obj["status"] = "active"
            em.changed(call, sub, sb)
        return


def _mark_paid(
    call: Call, rec: Record, updated: bool = False, *, out_of_band: bool = False
) -> None:
    em = call.em
    inv = rec.obj
    before = rec.copy()
    now = call.now
    remaining = int(inv.get("amount_remaining") or 0)
    if out_of_band:
        inv["amount_paid_off_stripe"] = int(inv.get("amount_paid_off_stripe") or 0) + remaining
    inv["amount_paid"] = int(inv.get("amount_paid") or 0) + remaining
    inv["amount_remaining"] = 0
    inv["attempted"] = True
    if remaining and not out_of_band:
        inv["attempt_count"] = int(inv.get("attempt_count") or 0) + 1
    inv["status"] = "paid"
    inv["status_transitions"]["paid_at"] = now
    inv["auto_advance"] = False
    inv["next_payment_attempt"] = None
    prev = em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "paid")
    if not out_of_band:
        em.emit_for(call, rec, "payment_succeeded")
    if prev and updated:
        em.emit_for(call, rec, "updated", previous=prev)


invoice = behaviour(
    "invoice",
    consumes={"pending_invoice_items_behavior", "subscription", "default_tax_rates", "discounts"},
    # Stripe's invoice.created shows the lines of the pending items the invoice took on
    created_event_after_hook=True,
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
    pm = call.param("payment_method") or call.param("source")
    outcome = _pay(
        call,
        rec,
        updated=True,
        payment_method=pm if isinstance(pm, str) and pm else None,
        out_of_band=call.param("paid_out_of_band") is True,
    )
    err = _pay_error(call, rec, outcome)
    if err is not None:
        raise err
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
    inv = em.get("invoice", str(rec.obj.get("invoice") or ""))
    if inv is not None and inv.obj.get("status") != "draft":
        rec.obj.clear()  # refused: the item stays as it was
        rec.obj.update(before)
        rec.touch()
        raise StripeError.invalid(
            "Invoice items attached to a finalized invoice cannot be updated."
        )
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
        raise StripeError.missing_param("customer")
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
    set_invoice_totals(inv, sum(x["amount"] for x in lines))
    if subs:
        inv["currency"] = subs[0].obj.get("currency") or "usd"
        inv["parent"] = subscription_invoice_parent(em, subs[0].obj)
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
