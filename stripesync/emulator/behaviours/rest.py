"""The balance singleton, webhook endpoints and the events list's filters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripesync.emulator.errors import StripeError
from stripesync.emulator.registry import behaviour, endpoint

if TYPE_CHECKING:
    from stripesync.emulator.engine import Call
    from stripesync.emulator.store import Record

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
