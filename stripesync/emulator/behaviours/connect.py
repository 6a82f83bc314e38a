"""Connect: accounts, persons, application fees and their refunds, transfers, payouts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.behaviours.common import (
    balance_txn,
    embedded_list,
    listobject,
    make_bank_account,
    require_ref,
)
from stripesync.emulator.errors import StripeError
from stripesync.emulator.registry import behaviour

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call
    from stripesync.emulator.store import Record

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
