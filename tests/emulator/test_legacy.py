"""Legacy collections and endpoints, served by Stripe-Version."""

from __future__ import annotations

import httpx

OLD = "2020-08-27"
PRE_BASIL = "2024-06-20"


def _h(version: str | None = None) -> dict[str, str]:
    h = {"Authorization": "Bearer sk_test_x"}
    if version:
        h["Stripe-Version"] = version
    return h


def test_orders_skus_and_returns_for_old_versions(emulator):
    url = emulator.url
    prod = httpx.post(f"{url}/v1/products", data={"name": "Tee"}, headers=_h()).json()
    sku = httpx.post(
        f"{url}/v1/skus",
        data={
            "product": prod["id"],
            "price": 1500,
            "currency": "usd",
            "inventory[type]": "infinite",
        },
        headers=_h(OLD),
    )
    assert sku.status_code == 200, sku.text
    sku_id = sku.json()["id"]
    assert sku_id.startswith("sku_") and sku.json()["inventory"]["type"] == "infinite"
    order = httpx.post(
        f"{url}/v1/orders",
        data={"currency": "usd", "items[0][parent]": sku_id, "items[0][quantity]": 2},
        headers=_h(OLD),
    ).json()
    assert order["object"] == "order" and order["amount"] == 3000
    paid = httpx.post(f"{url}/v1/orders/{order['id']}/pay", headers=_h(OLD)).json()
    assert paid["status"] == "paid" and paid["charge"].startswith("ch_")
    ret = httpx.post(f"{url}/v1/orders/{order['id']}/returns", headers=_h(OLD)).json()
    assert ret["object"] == "order_return" and ret["order"] == order["id"]
    listed = httpx.get(f"{url}/v1/order_returns", headers=_h(OLD)).json()
    assert [r["id"] for r in listed["data"]] == [ret["id"]]
    assert httpx.get(f"{url}/v1/orders", headers=_h(OLD)).json()["data"][0]["status"] == "returned"
    # current versions no longer have them
    r = httpx.get(f"{url}/v1/orders", headers=_h())
    assert r.status_code == 404 and "Unrecognized request URL" in r.json()["error"]["message"]
    assert httpx.get(f"{url}/v1/skus/{sku_id}", headers=_h()).status_code == 404
    events = httpx.get(f"{url}/v1/events", headers=_h()).json()["data"]
    assert "order.payment_succeeded" in {e["type"] for e in events}


def test_three_d_secure_for_old_versions(emulator):
    url = emulator.url
    r = httpx.post(
        f"{url}/v1/3d_secure",
        data={"amount": 1000, "currency": "eur", "return_url": "https://x.io"},
        headers=_h(OLD),
    )
    assert r.status_code == 200, r.text
    tds = r.json()
    assert tds["object"] == "three_d_secure" and tds["id"].startswith("tdsrc_")
    assert httpx.get(f"{url}/v1/3d_secure/{tds['id']}", headers=_h(OLD)).json() == tds
    assert httpx.get(f"{url}/v1/3d_secure/{tds['id']}", headers=_h()).status_code == 404


def _subscription(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(params={"source": "tok_visa"})  # an active subscription
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "metered"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price.id}]}
    )
    return cus, sub


def test_usage_records_before_basil(emulator):
    _, sub = _subscription(emulator)
    si = sub["items"].data[0].id
    url = emulator.url
    for q in (3, 4):
        r = httpx.post(
            f"{url}/v1/subscription_items/{si}/usage_records",
            data={"quantity": q, "timestamp": "now"},
            headers=_h(PRE_BASIL),
        )
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "usage_record"
    s = httpx.get(f"{url}/v1/subscription_items/{si}/usage_record_summaries", headers=_h(PRE_BASIL))
    assert s.json()["data"][0]["total_usage"] == 7
    r = httpx.post(
        f"{url}/v1/subscription_items/{si}/usage_records", data={"quantity": 1}, headers=_h()
    )
    assert r.status_code == 404


def test_upcoming_invoice_before_basil_only(emulator):
    cus, _ = _subscription(emulator)
    _, _ = cus, None
    client = emulator.stripe()
    sub2 = client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [
                {
                    "price": client.v1.prices.create(
                        params={
                            "currency": "usd",
                            "unit_amount": 100,
                            "recurring": {"interval": "month"},
                            "product_data": {"name": "b"},
                        }
                    ).id
                }
            ],
        }
    )
    url = emulator.url
    r = httpx.get(f"{url}/v1/invoices/upcoming", params={"customer": cus.id}, headers=_h(PRE_BASIL))
    assert r.status_code == 200, r.text
    up = r.json()
    assert up["object"] == "invoice" and up["amount_due"] == 1000  # both subscriptions
    lines = httpx.get(
        f"{url}/v1/invoices/upcoming/lines", params={"customer": cus.id}, headers=_h(PRE_BASIL)
    ).json()
    assert len(lines["data"]) == 2
    assert (
        httpx.get(
            f"{url}/v1/invoices/upcoming", params={"customer": cus.id}, headers=_h()
        ).status_code
        == 404
    )
    assert sub2.id
