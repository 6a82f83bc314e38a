"""The write flows the conformance check runs, and the objects it checks.

`Flows` creates one object of every collection that has a create route through the
emulator's request path (`Emulator.handle`), with minimal valid params: the spec's
required params, references filled from the account (`customer=` the first customer),
and, for the collections where Stripe asks for one of two params or for a hash whose
fields are all optional, the params in `PARAMS`. It then updates each created object
whose update route takes `metadata`. `checked_objects` lists what it produced: the
responses, every event's `data.object`, and the stored objects; `violations` holds
each (and every top-level object embedded in it) against Stripe's types with
`catalog.nullability.check_object`. Used by tests/emulator/test_conformance.py and
tools/measure_nullability.py (`--flows`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from stripesync.catalog.nullability import (
    Finding,
    check_object,
    generic_path,
    load_nullability,
)
from stripesync.emulator.engine import Emulator, Request, Response
from stripesync.emulator.generator import generate
from stripesync.emulator.routes import CREATE, UPDATE, Route

_PLACEHOLDER = re.compile(r"^\{[a-z_.]+\}$")
AUTH = {"authorization": "Bearer sk_test_conformance"}

# Collections whose create needs params the spec does not mark required (Stripe asks
# for one of two, or for a nested hash whose fields are all optional). `{type}` names
# an object of that type from the generated account.
PARAMS: dict[str, dict[str, Any]] = {
    "/v1/account_sessions": {"account": "{account}", "components": {"payments": {"enabled": True}}},
    "/v1/application_fees/{id}/refunds": {"amount": 10},
    "/v1/billing/credit_grants": {
        "customer": "{customer}",
        "category": "paid",
        "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 1000}},
        "applicability_config": {"scope": {"price_type": "metered"}},
    },
    "/v1/billing/meter_events": {
        "event_name": "api_calls",
        "payload": {"stripe_customer_id": "{customer}", "value": "1"},
    },
    "/v1/billing_portal/configurations": {
        "features": {"customer_update": {"enabled": True, "allowed_updates": ["email"]}},
    },
    "/v1/charges": {"amount": 2000, "currency": "usd", "source": "tok_visa"},
    "/v1/climate/orders": {"product": "climsku_frontier_offtake_portfolio_2027", "amount": 2500},
    "/v1/coupons": {"percent_off": 10, "duration": "once"},
    "/v1/customer_sessions": {
        "customer": "{customer}",
        "components": {"pricing_table": {"enabled": True}},
    },
    "/v1/forwarding/requests": {
        "payment_method": "{payment_method}",
        "url": "https://example.com/forward",
        "replacements": ["card_number"],
        "request": {"body": "{}"},
    },
    "/v1/files": {"purpose": "dispute_evidence", "file": "evidence"},
    "/v1/issuing/cards": {
        "cardholder": "{issuing.cardholder}",
        "currency": "usd",
        "type": "virtual",
    },
    "/v1/issuing/disputes": {
        "transaction": "{issuing.transaction}",
        "evidence": {
            "reason": "fraudulent",
            "fraudulent": {"explanation": "Not me"},
        },
    },
    "/v1/test_helpers/issuing/authorizations": {"card": "{issuing.card}", "amount": 1000},
    "/v1/invoiceitems": {"customer": "{customer}", "amount": 500, "currency": "usd"},
    "/v1/invoices": {"customer": "{customer}"},
    "/v1/prices": {"product": "{product}", "unit_amount": 700, "currency": "usd"},
    "/v1/radar/payment_evaluations": {
        "customer_details": {"customer": "{customer}"},
        "payment_details": {
            "amount": 1000,
            "currency": "usd",
            "payment_method_details": {"payment_method": "{payment_method}"},
        },
    },
    "/v1/products/{product}/features": {"entitlement_feature": "{entitlements.feature}"},
    "/v1/subscription_schedules": {"customer": "{customer}"},
    "/v1/orders": {"currency": "usd"},
    "/v1/skus": {
        "currency": "usd",
        "price": 1000,
        "product": "{product}",
        "inventory": {"type": "infinite"},
    },
    "/v1/3d_secure": {
        "amount": 1000,
        "currency": "usd",
        "return_url": "https://example.com/return",
        "card": "{card}",
    },
    "/v1/subscription_items/{subscription_item}/usage_records": {"quantity": 3},
    "/v1/three_d_secure/authentications": {
        "channel": {"type": "browser"},
        "message_category": "payment_authentication",
        "amount": 1000,
        "currency": "usd",
        "payment_method": "{payment_method}",
    },
    "/v1/refunds": {"charge": "{charge}", "amount": 100},
    "/v1/subscription_items": {"subscription": "{subscription}", "price": "{price}"},
    "/v1/subscriptions": {"customer": "{customer}", "items": [{"price": "{price}"}]},
    "/v1/tax/registrations": {
        "country": "US",
        "active_from": "now",
        "country_options": {"us": {"type": "state_sales_tax", "state": "CA"}},
    },
    "/v1/terminal/onboarding_links": {
        "link_type": "apple_terms_and_conditions",
        "link_options": {"apple_terms_and_conditions": {"merchant_display_name": "Shop"}},
    },
}
# actions a create needs first (an issuing dispute names a transaction)
PREPARE: dict[str, tuple[str, dict[str, Any]]] = {
    "/v1/issuing/disputes": (
        "/v1/test_helpers/issuing/transactions/create_force_capture",
        {"card": "{issuing.card}", "amount": 1500, "currency": "usd"},
    ),
}
_STR = {"currency": "usd", "country": "US", "email": "ann@example.com"}


def _encode(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _encode(f"{prefix}[{k}]" if prefix else k, v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _encode(f"{prefix}[{i}]", v, out)
    elif isinstance(value, bool):
        out.append((prefix, "true" if value else "false"))
    else:
        out.append((prefix, str(value)))


class Flows:
    """The write flows, run against a small generated account."""

    def __init__(self, seed: int = 5, customers: int = 8) -> None:
        self.em = Emulator(seed=seed)
        generate(self.em, customers, seed=seed, accounts=1, checkout_sessions=1, events=True)
        self.first_event = len(self.em.store.by_type.get("event", {}))
        self.responses: list[dict[str, Any]] = []
        self.failed: dict[str, str] = {}

    def ref(self, obj_type: str) -> str | None:
        recs = self.em.store.by_type.get(obj_type)
        return next(iter(recs.values())).id if recs else None

    def _fill(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self._fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._fill(v) for v in value]
        if isinstance(value, str) and _PLACEHOLDER.match(value):
            return self.ref(value[1:-1]) or value
        return value

    def _value(self, name: str, d: dict[str, Any]) -> Any:
        t = d.get("t")
        if t == "str":
            return (
                self.ref(name)
                or _STR.get(name)
                or ("https://example.com" if "url" in name else "x")
            )
        if t == "int":
            return 1000
        if t == "float":
            return 1.0
        if t == "bool":
            return True
        if t == "enum":
            return d["values"][0]
        if t == "list":
            return [self._value(name, d["of"])]
        if t == "union":
            return self._value(name, d["of"][0])
        if t == "class":
            return self.required(d["name"])
        return {}

    def required(self, params: str | None) -> dict[str, Any]:
        spec = self.em.spec
        if params is None or params not in spec.params:
            return {}
        fields = spec.param_fields(params)
        return {n: self._value(n, d) for n, d in fields.items() if d.get("required")}

    def post(self, path: str, params: dict[str, Any], version: str | None) -> Response:
        pairs: list[tuple[str, str]] = []
        _encode("", params, pairs)
        headers = dict(AUTH)
        if version:
            headers["stripe-version"] = version
        req = Request("POST", path, body=urlencode(pairs).encode(), headers=headers)
        return self.em.handle(req)

    def run(self) -> None:
        routes = [r for r in self.em.routes if r.kind == CREATE]
        updates = {(r.template, r.verb): r for r in self.em.routes if r.kind == UPDATE}
        # a create whose params name an object no earlier create made waits a round
        for last in (False, True):
            waiting = [r for r in routes if not self.create(r, updates, last=last)]
            routes = waiting

    def create(
        self, route: Route, updates: dict[tuple[str, str], Route], *, last: bool = True
    ) -> bool:
        """Create one object through `route` (and update it); False when the params
        name an object not made yet and this is not the `last` round."""
        path = route.template
        if route.parent_param:
            parent = self.ref(route.parent_types[0]) if route.parent_types else None
            path = path.replace("{" + route.parent_param + "}", parent or "missing")
        version = None if route.serves(self.em.default_version) else _version(route)
        prep = PREPARE.get(route.template)
        prep_params = self._fill(prep[1]) if prep is not None else {}
        params = self._fill(PARAMS.get(route.template) or self.required(route.params))
        # a placeholder the preparing action makes is filled after it
        unresolved = _placeholders(prep_params) or (_placeholders(params) if prep is None else [])
        if unresolved and not last:
            return False
        if unresolved:
            self.failed[route.template] = f"no object for {unresolved}"
            return True
        if prep is not None:
            res = self.post(prep[0], prep_params, version)
            if res.status != 200:
                self.failed[prep[0]] = res.body.decode()[:300]
                return True
            self.responses.append(json.loads(res.body))
            params = self._fill(PARAMS.get(route.template) or self.required(route.params))
            if _placeholders(params):
                self.failed[route.template] = f"no object for {_placeholders(params)}"
                return True
        res = self.post(path, params, version)
        if res.status != 200:
            self.failed[route.template] = res.body.decode()[:300]
            return True
        obj = json.loads(res.body)
        self.responses.append(obj)
        oid = obj.get("id")
        upd = next(
            (
                r
                for (t, verb), r in updates.items()
                if verb == "POST"
                and t.startswith(route.template + "/{")
                and t.count("{") == route.template.count("{") + 1
            ),
            None,
        )
        if upd is None or not isinstance(oid, str) or upd.params is None:
            return True
        known = self.em.spec.params.get(upd.params)
        if known is not None and "metadata" not in known["fields"]:
            return True
        res = self.post(f"{path}/{oid}", {"metadata": {"checked": "yes"}}, version)
        if res.status == 200:
            self.responses.append(json.loads(res.body))
        else:
            self.failed[upd.template] = res.body.decode()[:300]
        return True


def _placeholders(value: Any) -> list[str]:
    """The `{type}` placeholders `Flows._fill` found no object for."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in _placeholders(v)]
    if isinstance(value, list):
        return [p for v in value for p in _placeholders(v)]
    if isinstance(value, str) and _PLACEHOLDER.match(value):
        return [value]
    return []


def _version(route: Route) -> str:
    for v in ("2024-06-20", "2022-11-15", "2020-08-27", "2019-12-03"):
        if route.serves(v):
            return v
    return route.since or "2020-08-27"


def embedded_objects(value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object with an `object` held anywhere inside `value` (not `value` itself)."""
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if isinstance(v, dict) and isinstance(v.get("object"), str) and v["object"] != "list":
                yield sub, v
            yield from embedded_objects(v, sub)
    elif isinstance(value, list):
        for v in value:
            sub = f"{path}[]"
            if isinstance(v, dict) and isinstance(v.get("object"), str):
                yield sub, v
            yield from embedded_objects(v, sub)


def typed_objects(
    em: Emulator, objects: list[tuple[str, dict[str, Any]]]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(object type, SDK class, object) for each object and each top-level object
    embedded in it, as `catalog.nullability.measure` takes them."""
    for _, obj in objects:
        for inner in [obj, *(o for _, o in embedded_objects(obj, ""))]:
            obj_type = inner.get("object")
            cls = em.shapes.type_class.get(obj_type) if isinstance(obj_type, str) else None
            if cls is not None and inner.get("deleted") is not True:
                yield str(obj_type), cls, inner


def violations(em: Emulator, objects: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """`where: type.path: violation` for every field that disagrees with the types."""
    spec, data, shapes = em.spec, load_nullability(), em.shapes
    out: set[str] = set()

    def check(where: str, obj: dict[str, Any]) -> None:
        obj_type = obj.get("object")
        cls = shapes.type_class.get(obj_type) if isinstance(obj_type, str) else None
        if cls is None:
            return
        found: list[Finding] = list(check_object(spec, data, cls, obj, classes=shapes.classes))
        for f in found:
            if f.violation:
                out.add(f"{where}: {obj_type}.{generic_path(f.path)}: {f.violation}")

    for where, obj in objects:
        check(where, obj)
        for path, inner in embedded_objects(obj, ""):
            if inner.get("deleted") is True:
                continue
            check(f"{where} {path}", inner)
    return sorted(out)


def stored_objects(em: Emulator) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for obj_type, records in sorted(em.store.by_type.items()):
        for rec in records.values():
            if rec.obj.get("deleted") is True:
                continue
            out.append((f"stored {obj_type}", rec.obj))
    return out


def checked_objects(flows: Flows) -> list[tuple[str, dict[str, Any]]]:
    """(where, object): the flows' responses, their events' objects, the stored ones."""
    em = flows.em
    events = list(em.store.by_type.get("event", {}).values())[flows.first_event :]
    out = [(f"response {o.get('object')}", o) for o in flows.responses]
    out += [(f"event {e.obj['type']}", e.obj["data"]["object"]) for e in events]
    return out + stored_objects(em)
