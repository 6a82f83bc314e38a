"""POST /_emulator/load: objects served back exactly as given."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from stripesync.emulator import Emulator
from stripesync.emulator.engine import PLATFORM_ACCOUNT
from stripesync.emulator.generator import generate
from stripesync.emulator.routes import LIST, RETRIEVE, SINGLETON_GET, Route

AUTH = {"Authorization": "Bearer sk_test_x"}

# an invoice as an older API version rendered it (`subscription`, `paid` at top level)
INVOICE = {
    "id": "in_legacy1",
    "object": "invoice",
    "amount_due": 1500,
    "created": 1600000000,
    "customer": "cus_loaded1",
    "paid": True,
    "subscription": "sub_old",
    "lines": {
        "object": "list",
        "data": [
            {"id": "il_1", "object": "line_item", "amount": 1000, "invoice": "in_legacy1"},
            {"id": "il_2", "object": "line_item", "amount": 500, "invoice": "in_legacy1"},
        ],
        "has_more": False,
        "total_count": 2,
        "url": "/v1/invoices/in_legacy1/lines",
    },
    "x_unknown_field": {"kept": [1, 2, 3]},
}
CUSTOMERS = [
    {
        "id": f"cus_loaded{i}",
        "object": "customer",
        "created": 1600000000 + i,
        "email": f"l{i}@x.io",
        "sources": {
            "object": "list",
            "data": [
                {
                    "id": f"card_l{i}",
                    "object": "card",
                    "customer": f"cus_loaded{i}",
                    "last4": "4242",
                }
            ],
            "has_more": False,
            "url": f"/v1/customers/cus_loaded{i}/sources",
        },
    }
    for i in range(1, 4)
]


def _get(emulator, path, **params):
    r = httpx.get(f"{emulator.url}{path}", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def test_round_trip_is_exact(emulator):
    out = emulator.load([*CUSTOMERS, INVOICE])
    assert out["loaded"] >= 4
    assert _get(emulator, "/v1/invoices/in_legacy1") == INVOICE
    assert _get(emulator, "/v1/customers/cus_loaded2") == CUSTOMERS[1]
    page = _get(emulator, "/v1/customers", limit=2)
    assert page["data"] == [CUSTOMERS[2], CUSTOMERS[1]]
    assert page["has_more"] is True
    # exact bytes too, not just equal JSON
    raw = httpx.get(f"{emulator.url}/v1/invoices/in_legacy1", headers=AUTH).content
    assert json.loads(raw) == INVOICE


def test_embedded_lists_reachable_at_their_paths(emulator):
    emulator.load([*CUSTOMERS, INVOICE])
    lines = _get(emulator, "/v1/invoices/in_legacy1/lines")
    assert [x["id"] for x in lines["data"]] == ["il_1", "il_2"]
    assert lines["url"] == "/v1/invoices/in_legacy1/lines"
    page = _get(emulator, "/v1/invoices/in_legacy1/lines", limit=1, starting_after="il_1")
    assert [x["id"] for x in page["data"]] == ["il_2"]
    src = _get(emulator, "/v1/customers/cus_loaded1/sources")
    assert [x["id"] for x in src["data"]] == ["card_l1"]
    assert _get(emulator, "/v1/customers/cus_loaded1/sources/card_l1")["last4"] == "4242"


def test_load_with_events(emulator):
    emulator.load(CUSTOMERS, events=True)
    client = emulator.stripe()
    # older than 30 days of the emulator clock: gone, as on Stripe
    assert client.v1.events.list().data == []
    now = emulator.controls.now()
    fresh = [{**c, "created": now - 10 + i} for i, c in enumerate(CUSTOMERS)]
    emulator.controls.reset()
    emulator.load(fresh, events=True)
    evs = client.v1.events.list().data
    assert [e.type for e in evs] == ["customer.created"] * 3
    assert evs[0].data.object.id == "cus_loaded3"


def test_loaded_objects_can_be_updated_and_deleted(emulator):
    emulator.load(CUSTOMERS)
    client = emulator.stripe()
    out = client.v1.customers.update("cus_loaded1", params={"metadata": {"k": "v"}})
    assert out.metadata.to_dict() == {"k": "v"}
    assert out.email == "l1@x.io"
    client.v1.customers.delete("cus_loaded1")
    assert client.v1.customers.retrieve("cus_loaded1").deleted is True


def test_load_refuses_garbage(emulator):
    r = httpx.post(f"{emulator.url}/_emulator/load", json={"not": "a list"})
    assert r.status_code == 400
    r = httpx.post(f"{emulator.url}/_emulator/load", json=[{"id": "x"}])
    assert r.status_code == 400


# ---- every collection the emulator lists or retrieves, loaded and read back ---------------
#
# The set of collections comes from the emulator's own routes: every GET route that lists,
# retrieves or reads a singleton, with the object types it serves (legacy ones included,
# each read at an API version that still has it). A sample object per collection is one
# the generator made (`generate`), else the emulator's shape maker (`new_object`), with a
# few values altered and an unknown field added, so that an object re-derived,
# regenerated or re-shaped on read would show.
#
# Fields Stripe computes on read: none are excepted. Every field of a loaded object,
# including the derived `usage_record_summary.total_usage` and `period`, comes back as
# loaded.
#
# Routes left out, as they serve no stored object: the previews
# `/v1/invoices/upcoming/lines` and `/v1/credit_notes/preview/lines` compute lines for an
# invoice or credit note that does not exist yet.

_PREVIEWS = {"/v1/invoices/upcoming/lines", "/v1/credit_notes/preview/lines"}
_PARENT = "parent_loaded_1"


def _scratch() -> Emulator:
    em = Emulator(seed=7)
    generate(em, customers=60, seed=7, accounts=2)
    return em


_EM = _scratch()
_VERSIONS = [_EM.default_version, "2024-06-20", "2020-08-27"]


def _version(route: Route) -> str:
    return next(v for v in _VERSIONS if route.serves(v))


def _read_routes() -> list[tuple[str, Route]]:
    out: list[tuple[str, Route]] = []
    for r in _EM.routes:
        if r.verb != "GET" or r.kind not in (LIST, RETRIEVE, SINGLETON_GET):
            continue
        if r.template in _PREVIEWS:
            continue
        for t in r.target_types if r.kind == RETRIEVE else r.types:
            out.append((t, r))
    return out


READ_ROUTES = _read_routes()
READ_TYPES = sorted({t for t, _ in READ_ROUTES})


def _sample(obj_type: str) -> dict[str, Any]:
    recs = _EM.store.by_type.get(obj_type)
    obj = next(iter(recs.values())).copy() if recs else _EM.new_object(obj_type)
    fields = _EM.shapes.fields(_EM.cls_of(obj_type))
    changed = 0
    for name in sorted(fields):
        d = fields[name]
        if name in ("id", "object") or name not in obj or changed >= 3:
            continue
        if d.get("t") == "str":
            obj[name] = f"loaded {name}"
            changed += 1
        elif d.get("t") == "int" and name not in ("created", "date"):
            obj[name] = 4242 + changed
            changed += 1
    if "metadata" in obj:
        obj["metadata"] = {"loaded": "as given"}
    obj["x_loaded_marker"] = {"kept": [1, 2, 3]}
    if obj_type == "usage_record_summary":
        obj["period"] = {"start": 1700000000, "end": 1702592000}
        obj["total_usage"] = 42
    if obj_type == "subscription":
        obj["status"] = "active"  # the list leaves out canceled ones unless asked
    if obj_type == "event":
        obj["created"] = _EM.clock.now() - 60  # the list keeps 30 days of events
    return obj


def _setup(obj_type: str, route: Route) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """The objects to load, the one to read back, and the path to read it at."""
    obj = _sample(obj_type)
    params: dict[str, str] = {}
    loads: list[dict[str, Any]] = []
    if route.kind == SINGLETON_GET:
        obj.pop("id", None)
        if route.template == "/v1/account":
            obj["id"] = PLATFORM_ACCOUNT
    if route.parent_param:
        ptype = route.parent_types[0]
        parent = _EM.new_object(ptype)
        parent["id"] = _PARENT
        params[route.parent_param] = _PARENT
        fld = _EM.parent_field_by_type(obj_type, ptype)
        if route.list_template:
            fld = _EM.parent_field(obj_type, route.list_template) or fld
        if fld is not None:
            obj[fld] = _PARENT
        elif route.kind == SINGLETON_GET:  # kept in its parent, as Stripe embeds it
            parent[route.segments[-1]] = obj
        elif route.list_template:
            url = route.fill(route.list_template, params)
            parent[url.rsplit("/", 1)[-1]] = {
                "object": "list",
                "data": [obj],
                "has_more": False,
                "url": url,
            }
        loads.append(parent)
    if obj_type == "tax_id" and not route.parent_param:
        obj["owner"] = {"type": "self", "account": None, "application": None, "customer": None}
    if route.target_param:
        params[route.target_param] = str(obj["id"])
    for name, d in _EM.checker.fields(route.params).items():
        # the list's required filters, matching the object
        if not d.get("required"):
            continue
        if d.get("t") == "enum":
            obj[name] = d["values"][0]
        elif d.get("t") == "str" and not (obj.get(name) and isinstance(obj[name], str | dict)):
            obj[name] = f"loaded_{name}"
        elif name == "scope":
            obj[name] = {"type": "account", "user": None}
    if not any(o is obj or obj in _embedded(o) or obj in o.values() for o in loads):
        loads.append(obj)
    return loads, obj, route.fill(route.template, params)


def _query(route: Route, obj: dict[str, Any]) -> dict[str, Any]:
    """`limit=100` and the route's required parameters, matching `obj`."""
    fields = _EM.checker.fields(route.params)
    q: dict[str, Any] = {"limit": 100} if "limit" in fields else {}
    for name, d in fields.items():
        if not d.get("required"):
            continue
        v = obj.get(name)
        if isinstance(v, dict) and isinstance(v.get("id"), str):
            q[name] = v["id"]
        elif isinstance(v, dict):
            q.update({f"{name}[{k}]": x for k, x in v.items() if x is not None})
        elif v is not None:
            q[name] = v
        elif name == "filter":  # billing.credit_balance_summary: which credits to sum
            q.update({"filter[type]": "credit_grant", "filter[credit_grant]": "credgr_loaded"})
        else:
            q[name] = f"loaded_{name}"
    return q


def _embedded(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [x for v in obj.values() if isinstance(v, dict) for x in v.get("data") or []]


@pytest.mark.parametrize(
    ("obj_type", "route"),
    READ_ROUTES,
    ids=[f"{t}:{r.template}" for t, r in READ_ROUTES],
)
def test_every_collection_is_served_as_loaded(emulator, obj_type: str, route: Route) -> None:
    loads, obj, path = _setup(obj_type, route)
    emulator.load(loads)
    headers = {**AUTH, "Stripe-Version": _version(route)}
    query = _query(route, obj)
    if route.kind == LIST:
        r = httpx.get(f"{emulator.url}{path}", params=query, headers=headers)
        assert r.status_code == 200, r.text
        got = [x for x in r.json()["data"] if x.get("id") == obj.get("id")]
        assert got == [obj]
    else:
        r = httpx.get(f"{emulator.url}{path}", params=query, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == obj


def test_the_table_covers_derived_and_legacy_collections() -> None:
    for t in ("usage_record_summary", "line_item", "order", "order_return", "sku"):
        assert t in READ_TYPES
    assert "three_d_secure" in READ_TYPES


# collections with routes but no GET (usage records are only ever created): kept as given
_WRITE_ONLY_ALL = sorted(
    {t for r in _EM.routes for t in r.types if r.verb != "GET" and t in _EM.shapes.type_class}
    - set(READ_TYPES)
)
WRITE_ONLY = [t for t in _WRITE_ONLY_ALL if "id" in _sample(t)]
# objects without an id (Stripe never keeps them: a login link, a discount's ...): a load
# of one is refused with a reason
ID_LESS = [t for t in _WRITE_ONLY_ALL if "id" not in _sample(t)]


@pytest.mark.parametrize("obj_type", WRITE_ONLY)
def test_write_only_collections_are_kept_as_loaded(emulator, obj_type: str) -> None:
    obj = _sample(obj_type)
    emulator.load([obj])
    rec = emulator.state.store.get(obj_type, obj["id"])
    assert rec is not None and rec.obj == obj


@pytest.mark.parametrize("obj_type", ID_LESS)
def test_objects_without_an_id_are_refused_with_the_reason(emulator, obj_type: str) -> None:
    with pytest.raises(RuntimeError, match="id"):
        emulator.load([_sample(obj_type)])


def test_generated_usage_summary_period_starts_before_it_ends(emulator) -> None:
    si = _sample("subscription_item")
    si.update(id="si_loaded", current_period_start=1702592000, current_period_end=1700000000)
    emulator.load([si])
    r = httpx.get(
        f"{emulator.url}/v1/subscription_items/si_loaded/usage_record_summaries",
        headers={**AUTH, "Stripe-Version": "2024-06-20"},
    )
    period = r.json()["data"][0]["period"]
    assert period == {"start": 1700000000, "end": 1702592000}
