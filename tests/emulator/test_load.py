"""POST /_emulator/load: objects served back exactly as given."""

from __future__ import annotations

import json

import httpx

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
