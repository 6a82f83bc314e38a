"""Payments: charges, refunds, disputes and payment intents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.behaviours.common import (
    Decline,
    balance_txn,
    card_payment_details,
    check_minimum_charge,
    decline_of,
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
    _fill_charge(call, obj, card, call.param("capture", True), decline_of(card))


def _fill_charge(
    call: Call,
    obj: dict[str, Any],
    card: dict[str, Any] | None,
    capture: bool,
    decline: Decline | None = None,
) -> None:
    """A charge's fields once the card answered: succeeded (with its balance transaction
    when captured), or failed as `decline` says (no balance transaction)."""
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
    if decline is not None:
        _fail_charge(obj, decline)
    elif capture:
        obj["balance_transaction"] = balance_txn(
            em, amount, obj.get("currency", "usd"), "charge", obj["id"]
        )


def _fail_charge(obj: dict[str, Any], decline: Decline) -> None:
    obj.update(
        status="failed",
        paid=False,
        captured=False,
        amount_captured=0,
        failure_code=decline.code,
        failure_message=decline.message,
        balance_transaction=None,
    )
    obj["outcome"].update(
        network_status="declined_by_network",
        reason=decline.decline_code,
        type="issuer_declined",
        risk_level="normal",
        seller_message="The bank did not return any further details with this decline.",
    )


# the parameter Stripe names in a card error, by its code
_DECLINE_PARAM = {"incorrect_cvc": "cvc", "expired_card": "exp_month"}


def card_error(decline: Decline, charge_id: str, **extra: Any) -> StripeError:
    """Stripe's 402 for a declined card: `type: card_error`, `code`, `decline_code`, and
    the failed charge's id (a PaymentIntent's error also carries the intent)."""
    return StripeError(
        402,
        decline.message,
        type="card_error",
        code=decline.code,
        param=_DECLINE_PARAM.get(decline.code),
        extra={"decline_code": decline.decline_code, "charge": charge_id, **extra},
    )


@charge.after_create
def _charge_created(call: Call, rec: Record) -> None:
    em = call.em
    if rec.obj.get("status") == "failed":
        em.emit_for(call, rec, "failed")
        decline = decline_of(rec.obj.get("source")) or Decline(
            "card_declined", "generic_decline", "Your card was declined."
        )
        raise card_error(decline, rec.id)
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
    if obj.get("payment_method"):
        obj["payment_method"] = _payment_method_id(call, obj["payment_method"])
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
        _confirm_or_raise(call, rec)


def _payment_method_id(call: Call, pm_id: str) -> str:
    """The stored payment method `pm_id` names (a test id such as `pm_card_visa` makes a
    new one, as on Stripe); a card source's id (`card_…`) is kept as given."""
    from stripesync.emulator.behaviours.customers import payment_method_ref

    if pm_id.startswith(("card_", "src_")):
        require_ref(call, "card" if pm_id.startswith("card_") else "source", pm_id,
                    "payment_method")
        return pm_id
    return payment_method_ref(call, pm_id, "payment_method").id


def _card_of(call: Call, pm_id: str) -> tuple[dict[str, Any] | None, bool]:
    """The card a payment method (or a legacy card source) charges, and whether it is a
    PaymentMethod (a source is also the charge's `source`)."""
    rec = call.em.find(pm_id, ["payment_method", "card", "source"])
    if rec is None:
        return None, False
    if rec.type == "payment_method":
        return dict(rec.obj.get("card") or {}, id=rec.id, object="card"), True
    return rec.copy(), False


def confirm_intent(call: Call, rec: Record) -> tuple[Record, Decline | None]:
    """Charge PaymentIntent `rec`'s payment method: a charge (with its balance
    transaction) and the intent succeeded, or a failed charge and the intent back to
    `requires_payment_method` with `last_payment_error`. Events as Stripe sends them;
    an invoice the intent pays is then paid."""
    em = call.em
    before = rec.copy()
    pm_id = str(rec.obj.get("payment_method") or "")
    card, is_pm = _card_of(call, pm_id)
    decline = decline_of(card)
    ch = em.new_object(
        "charge",
        amount=rec.obj["amount"],
        currency=rec.obj["currency"],
        customer=rec.obj.get("customer"),
        payment_intent=rec.id,
        description=rec.obj.get("description"),
    )
    _fill_charge(call, ch, card or make_card(em, "tok_visa"), True, decline)
    ch["payment_method"] = pm_id
    if is_pm:
        ch["source"] = None
    crec = em.insert("charge", ch)
    if decline is not None:
        em.emit_for(call, crec, "failed")
        err = em.shapes.new("PaymentIntent.LastPaymentError")
        pm = em.get("payment_method", pm_id)
        err.update(
            type="card_error",
            code=decline.code,
            decline_code=decline.decline_code,
            message=decline.message,
            charge=crec.id,
            doc_url=f"https://stripe.com/docs/error-codes/{decline.code.replace('_', '-')}",
            payment_method=pm.copy() if pm is not None else None,
            payment_method_type="card",
        )
        rec.obj.update(
            status="requires_payment_method",
            last_payment_error=err,
            latest_charge=crec.id,
            payment_method=None,
        )
        em.changed(call, rec, before, event=None)
        em.emit_for(call, rec, "payment_failed")
        return crec, decline
    em.emit_for(call, crec, "succeeded")
    rec.obj.update(
        status="succeeded",
        amount_received=rec.obj["amount"],
        latest_charge=crec.id,
        last_payment_error=None,
    )
    em.changed(call, rec, before, event=None)
    em.emit_for(call, rec, "succeeded")
    from stripesync.emulator.behaviours.invoices import paid_by_intent

    paid_by_intent(call, rec)
    return crec, None


def _confirm_or_raise(call: Call, rec: Record) -> Record:
    crec, decline = confirm_intent(call, rec)
    if decline is not None:
        raise card_error(decline, crec.id, payment_intent=rec.copy())
    return rec


@payment_intent.action("confirm")
def _pi_confirm(call: Call, rec: Record) -> Any:
    if rec.obj.get("status") not in ("requires_payment_method", "requires_confirmation"):
        raise StripeError.invalid(
            "You cannot confirm this PaymentIntent because it has a status of "
            f"{rec.obj.get('status')}.",
            code="payment_intent_unexpected_state",
        )
    if call.param("payment_method"):
        rec.obj["payment_method"] = _payment_method_id(call, call.param("payment_method"))
    if not rec.obj.get("payment_method"):
        raise StripeError.invalid(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            code="payment_intent_unexpected_state",
        )
    return _confirm_or_raise(call, rec)
