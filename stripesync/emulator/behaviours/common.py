"""Helpers the behaviours share: references, list objects, cards and bank accounts,
prices and plans, balance transactions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stripesync.catalog.spec import load_spec
from stripesync.emulator.errors import StripeError

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
    "tok_chargeDeclinedInsufficientFunds": ("Visa", "9995", "credit"),
    "tok_chargeDeclinedLostCard": ("Visa", "9987", "credit"),
    "tok_chargeDeclinedStolenCard": ("Visa", "9979", "credit"),
    "tok_chargeDeclinedExpiredCard": ("Visa", "0069", "credit"),
    "tok_chargeDeclinedIncorrectCvc": ("Visa", "0127", "credit"),
    "tok_chargeDeclinedProcessingError": ("Visa", "0119", "credit"),
    "tok_chargeCustomerFail": ("Visa", "0341", "credit"),
}


@dataclass(frozen=True)
class Decline:
    """How Stripe's test card declines a charge: the error's `code`, its `decline_code`
    and message (Stripe's testing docs, "Declined payments")."""

    code: str
    decline_code: str
    message: str


_DECLINED = "Your card was declined."
# Stripe's declining test cards, by the last four digits of their numbers
DECLINES: dict[str, Decline] = {
    "0002": Decline("card_declined", "generic_decline", _DECLINED),
    "0341": Decline("card_declined", "generic_decline", _DECLINED),
    "9995": Decline("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    "9987": Decline("card_declined", "lost_card", _DECLINED),
    "9979": Decline("card_declined", "stolen_card", _DECLINED),
    "0069": Decline("expired_card", "expired_card", "Your card has expired."),
    "0127": Decline("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
    "0119": Decline(
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
}


def decline_of(card: dict[str, Any] | None) -> Decline | None:
    """The decline a card (a card source, or a payment method's `card` hash) makes."""
    if not isinstance(card, dict):
        return None
    return DECLINES.get(str(card.get("last4") or ""))
INTERVAL_SECONDS = {"day": 86400, "week": 7 * 86400, "month": 30 * 86400, "year": 365 * 86400}


# The smallest amount a payment may charge, in the currency's minor unit: $0.50 (Stripe's
# API reference: "The minimum amount is $0.50 US or equivalent in charge currency"),
# £0.30 for gbp; other currencies are held to 50 minor units, without conversion.
MINIMUM_CHARGE: dict[str, int] = {"usd": 50, "gbp": 30}


def check_minimum_charge(amount: int, currency: Any, param: str = "amount") -> None:
    """400 `amount_too_small` for a payment below its currency's minimum."""
    cur = str(currency or "usd").lower()
    minimum = MINIMUM_CHARGE.get(cur, 50)
    if amount < minimum:
        shown = f"${minimum / 100:.2f}" if cur == "usd" else f"{minimum / 100:.2f}"
        raise StripeError.invalid(
            f"Amount must be at least {shown} {cur}", param=param, code="amount_too_small"
        )


def require_ref(call: Call, obj_type: str, oid: Any, param: str) -> Record:
    if not isinstance(oid, str) or not oid:
        raise StripeError.missing_param(param)
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


# the card networks `payment_method_details.card.network` names, by the card's brand
_NETWORKS = {
    "visa": "visa",
    "mastercard": "mastercard",
    "american express": "amex",
    "amex": "amex",
    "discover": "discover",
}


def card_payment_details(em: Emulator, card: dict[str, Any], amount: int) -> dict[str, Any]:
    """A charge's `payment_method_details` for a card (a `card` object or a payment
    method's `card` hash): the SDK class's default object (every field the types say
    is always sent), with the card's own fields and what an approved payment reports
    (`checks`, `network`, `amount_authorized`, an authorization code)."""
    kind = "card"
    details = em.shapes.new("Charge.PaymentMethodDetails.Card")
    for k in ("country", "exp_month", "exp_year", "fingerprint", "funding", "last4"):
        if card.get(k) is not None:
            details[k] = card[k]
    brand = str(card.get("brand") or "visa").lower()
    network = _NETWORKS.get(brand, brand.replace(" ", "_"))
    details["brand"] = "amex" if network == "amex" else network
    checks = em.shapes.new("Charge.PaymentMethodDetails.Card.Checks")
    checks["cvc_check"] = card.get("cvc_check") or "pass"
    for k in ("address_line1_check", "address_postal_code_check"):
        if card.get(k) is not None:
            checks[k] = card[k]
    details.update(
        checks=checks,
        network=network,
        amount_authorized=amount,
        authorization_code=str(em.ids.rng.randrange(100000, 1000000)),
        network_transaction_id=em.ids.token(15),
        regulated_status="unregulated",
    )
    out = em.shapes.new("Charge.PaymentMethodDetails")
    out.update(type=kind, card=details)
    return out


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


def subscription_invoice_parent(em: Emulator, sub: dict[str, Any]) -> dict[str, Any]:
    """An invoice's `parent` when subscription `sub` made it."""
    parent = em.shapes.new("Invoice.Parent")
    parent["type"] = "subscription_details"
    parent["subscription_details"] = {
        "metadata": dict(sub.get("metadata") or {}),
        "subscription": sub["id"],
        "subscription_proration_date": None,
    }
    return parent


def subscription_line_parent(em: Emulator, sub_id: str, item_id: str) -> dict[str, Any]:
    """An invoice line's `parent` when subscription item `item_id` bills it."""
    parent = em.shapes.new("InvoiceLineItem.Parent")
    parent["type"] = "subscription_item_details"
    parent["subscription_item_details"] = {
        "invoice_item": None,
        "proration": False,
        "proration_details": {"credited_items": None},
        "subscription": sub_id,
        "subscription_item": item_id,
    }
    return parent


def line_pricing(em: Emulator, price: dict[str, Any]) -> dict[str, Any]:
    """An invoice line's `pricing` when `price` bills it."""
    pricing = em.shapes.new("InvoiceLineItem.Pricing")
    pricing["price_details"] = {"price": price["id"], "product": price.get("product")}
    pricing["unit_amount_decimal"] = price.get("unit_amount_decimal")
    return pricing


def set_invoice_totals(inv: dict[str, Any], total: int, *, paid: int = 0) -> None:
    """An invoice's amounts for lines summing to `total` (no tax, no discount)."""
    inv.update(
        subtotal=total,
        subtotal_excluding_tax=total,
        total=total,
        total_excluding_tax=total,
        amount_due=total,
        amount_paid=paid,
        amount_remaining=total - paid,
    )
