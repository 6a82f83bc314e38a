"""Payments: charges, refunds, disputes and payment intents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.behaviours.common import (
    balance_txn,
    card_payment_details,
    check_minimum_charge,
    make_card,
    require_ref,
)
from stripesync.emulator.errors import StripeError
from stripesync.emulator.registry import behaviour

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call
    from stripesync.emulator.store import Record

charge = behaviour(
    "charge",
    consumes={"source", "capture", "application_fee", "application_fee_amount", "destination"},
)


@charge.on_create
def _charge_create(call: Call, obj: dict[str, Any]) -> None:
    em = call.em
    check_minimum_charge(int(obj.get("amount") or 0), obj.get("currency"))
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
        obj["payment_method_details"] = card_payment_details(em, card, amount)
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
    check_minimum_charge(int(obj.get("amount") or 0), obj.get("currency"))
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
