"""The emulator through the official SDK over real HTTP: the basics."""

from __future__ import annotations

import stripe


def test_customer_crud_through_the_sdk(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(params={"email": "ann@example.com", "name": "Ann"})
    assert cus.id.startswith("cus_")
    assert cus.object == "customer"
    assert cus.livemode is False
    assert cus.metadata.to_dict() == {}
    got = client.v1.customers.retrieve(cus.id)
    assert got.email == "ann@example.com"
    upd = client.v1.customers.update(cus.id, params={"metadata": {"plan": "pro"}})
    assert upd.metadata.to_dict() == {"plan": "pro"}
    deleted = client.v1.customers.delete(cus.id)
    assert deleted.deleted is True
    again = client.v1.customers.retrieve(cus.id)
    assert again.deleted is True


def test_global_api_base(emulator, monkeypatch):
    monkeypatch.setattr(stripe, "api_key", "sk_test_global")
    monkeypatch.setattr(stripe, "api_base", emulator.url)
    monkeypatch.setattr(stripe, "max_network_retries", 0)
    prod = stripe.Product.create(name="Widget")
    assert prod.id.startswith("prod_")
    assert stripe.Product.retrieve(prod.id).name == "Widget"
