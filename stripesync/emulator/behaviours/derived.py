"""Fields Stripe always fills on collections the generic engine otherwise serves alone.

Stripe's types say these are always sent and never null (ts_nullability.json), and no
create param sets them: Stripe derives them. A credit note is for its invoice's
customer; a portal session uses the account's default portal configuration; a climate
order's tonnage and amounts follow from each other at the product's price; a treasury
outbound payment or transfer moves money through a treasury transaction. A forced
capture on an issuing card makes a transaction Stripe keeps (and a dispute can name).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from stripesync.emulator.behaviours.common import require_ref
from stripesync.emulator.registry import behaviour, endpoint

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call
    from stripesync.emulator.store import Record

# cents per metric ton when a climate product's price is not known (Frontier's
# portfolio sells at about $500 a ton)
CLIMATE_CENTS_PER_TON = 50_000


@behaviour("credit_note").on_create
def _credit_note_create(call: Call, obj: dict[str, Any]) -> None:
    if obj.get("invoice") and not obj.get("customer"):
        inv = require_ref(call, "invoice", obj["invoice"], "invoice")
        obj["customer"] = inv.obj.get("customer")
        obj["currency"] = inv.obj.get("currency") or obj.get("currency")


@behaviour("billing_portal.session").on_create
def _portal_session_create(call: Call, obj: dict[str, Any]) -> None:
    if obj.get("configuration"):
        return
    em = call.em
    for rec in em.store.objects("billing_portal.configuration").values():
        if rec.obj.get("is_default"):
            obj["configuration"] = rec.id
            return
    conf = em.new_object("billing_portal.configuration", active=True, is_default=True)
    conf["updated"] = conf["created"]
    conf["features"]["invoice_history"]["enabled"] = True
    conf["features"]["payment_method_update"]["enabled"] = True
    obj["configuration"] = em.insert("billing_portal.configuration", conf).id


@behaviour("climate.order").on_create
def _climate_order_create(call: Call, obj: dict[str, Any]) -> None:
    tons = call.param("metric_tons")
    amount = call.param("amount")
    if tons is None and amount is not None:
        tons = Decimal(int(amount)) / CLIMATE_CENTS_PER_TON
    tons = Decimal(str(tons if tons is not None else "1"))
    subtotal = int(amount) if amount is not None else int(tons * CLIMATE_CENTS_PER_TON)
    fees = round(subtotal * 0.05)
    obj.update(
        metric_tons=str(tons.normalize()),
        amount_subtotal=subtotal,
        amount_fees=fees,
        amount_total=subtotal + fees,
        expected_delivery_year=time.gmtime(call.em.clock.now()).tm_year + 2,
    )


def _treasury_transaction(call: Call, obj: dict[str, Any], flow_type: str) -> None:
    em = call.em
    amount = int(obj.get("amount") or 0)
    txn = em.new_object(
        "treasury.transaction",
        amount=-amount,
        currency=obj.get("currency") or "usd",
        description=obj.get("description") or flow_type.replace("_", " ").capitalize(),
        financial_account=obj.get("financial_account") or "",
        flow=obj["id"],
        flow_type=flow_type,
        status="open",
    )
    txn["balance_impact"].update(cash=-amount, outbound_pending=amount)
    obj["transaction"] = em.insert("treasury.transaction", txn).id


@behaviour("treasury.outbound_payment").on_create
def _outbound_payment_create(call: Call, obj: dict[str, Any]) -> None:
    _treasury_transaction(call, obj, "outbound_payment")


@behaviour("treasury.outbound_transfer").on_create
def _outbound_transfer_create(call: Call, obj: dict[str, Any]) -> None:
    _treasury_transaction(call, obj, "outbound_transfer")


@endpoint("POST", "/v1/test_helpers/issuing/transactions/create_force_capture")
def _issuing_force_capture(call: Call) -> Record:
    em = call.em
    card = require_ref(call, "issuing.card", call.param("card"), "card")
    amount = int(call.param("amount") or 0)
    currency = str(call.param("currency") or card.obj.get("currency") or "usd")
    cardholder = card.obj.get("cardholder")
    txn = em.new_object(
        "issuing.transaction",
        amount=-amount,
        currency=currency,
        card=card.id,
        cardholder=cardholder.get("id") if isinstance(cardholder, dict) else cardholder,
        merchant_amount=-amount,
        merchant_currency=currency,
        type="capture",
    )
    merchant = txn["merchant_data"]
    merchant.update(
        category="computer_software_stores",
        category_code="5734",
        name="Rocket Rides",
        network_id="1234567890",
        country="US",
    )
    data = call.param("merchant_data")
    if isinstance(data, dict):
        em.apply_params("IssuingTransaction.MerchantData", merchant, data)
    rec = em.insert("issuing.transaction", txn)
    em.emit_for(call, rec, "created")
    return rec


@behaviour("issuing.dispute").on_create
def _issuing_dispute_create(call: Call, obj: dict[str, Any]) -> None:
    tid = call.param("transaction")
    if isinstance(tid, str) and tid:
        txn = require_ref(call, "issuing.transaction", tid, "transaction")
        obj["amount"] = abs(int(txn.obj.get("amount") or 0))
        obj["currency"] = txn.obj.get("currency") or obj.get("currency")
