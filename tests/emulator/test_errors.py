"""Errors in Stripe's shape and status codes; idempotency keys."""

from __future__ import annotations

import httpx
import pytest
import stripe

AUTH = {"Authorization": "Bearer sk_test_raw"}


def test_unknown_parameter(emulator):
    client = emulator.stripe()
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.create(params={"emial": "typo@x.io"})  # type: ignore[typeddict-unknown-key]
    e = exc.value
    assert e.http_status == 400
    assert e.param == "emial"
    assert e.user_message == "Received unknown parameter: emial"
    assert e.error.type == "invalid_request_error"
    assert e.request_id.startswith("req_")


def test_nested_unknown_and_missing_and_type_errors(emulator):
    client = emulator.stripe()
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.create(params={"address": {"town": "x"}})  # type: ignore[typeddict-unknown-key]
    assert exc.value.param == "address[town]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create(params={"unit_amount": 5})  # type: ignore[typeddict-item]
    assert exc.value.user_message == "Missing required param: currency."
    r = httpx.post(f"{emulator.url}/v1/customers", data={"balance": "abc"}, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Invalid integer: abc"
    assert r.json()["error"]["param"] == "balance"
    r = httpx.post(f"{emulator.url}/v1/customers", data={"tax_exempt": "maybe"}, headers=AUTH)
    assert r.status_code == 400 and "must be one of" in r.json()["error"]["message"]


def test_metadata_can_be_unset(emulator):
    client = emulator.stripe()
    cus = client.v1.customers.create(params={"metadata": {"a": "1", "b": "2"}})
    out = client.v1.customers.update(cus.id, params={"metadata": {"a": ""}})
    assert out.metadata.to_dict() == {"b": "2"}
    out = client.v1.customers.update(cus.id, params={"metadata": ""})
    assert out.metadata.to_dict() == {}
    out = client.v1.customers.update(cus.id, params={"description": "x"})
    out = client.v1.customers.update(cus.id, params={"description": ""})  # type: ignore[typeddict-item]
    assert out.description is None


def test_not_found(emulator):
    client = emulator.stripe()
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve("cus_missing")
    e = exc.value
    assert e.http_status == 404
    assert e.code == "resource_missing"
    assert e.user_message == "No such customer: 'cus_missing'"


def test_auth_errors(emulator):
    r = httpx.get(f"{emulator.url}/v1/customers")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "request-id" in r.headers
    client = emulator.stripe(key="pk_test_nope")
    with pytest.raises(stripe.AuthenticationError) as exc:
        client.v1.customers.list()
    assert exc.value.http_status == 401
    assert "Invalid API Key provided" in exc.value.user_message


def test_unknown_paths_wrong_methods_and_bad_bodies(emulator):
    r = httpx.get(f"{emulator.url}/v1/nope", headers=AUTH)
    assert r.status_code == 404
    assert r.json()["error"]["message"].startswith("Unrecognized request URL (GET: /v1/nope)")
    r = httpx.put(f"{emulator.url}/v1/customers", headers=AUTH)
    assert r.status_code == 404
    r = httpx.post(
        f"{emulator.url}/v1/customers",
        content=b"a[b=1&%ff%fe",
        headers={**AUTH, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    assert set(r.json()) == {"error"}
    r = httpx.post(
        f"{emulator.url}/v1/customers",
        content=b"metadata=1&metadata[x]=2",
        headers={**AUTH, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    r = httpx.post(f"{emulator.url}/v1/customers", content=b"x=" + b"a" * (2 << 20), headers=AUTH)
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{emulator.url}/v1/customers", headers={**AUTH, "Stripe-Version": "garbage"})
    assert r.status_code == 400


def test_idempotency_replays_and_conflicts(emulator):
    client = emulator.stripe()
    opts = {"idempotency_key": "same-key"}
    a = client.v1.customers.create(params={"email": "a@x.io"}, options=opts)
    b = client.v1.customers.create(params={"email": "a@x.io"}, options=opts)
    assert a.id == b.id
    assert len(client.v1.customers.list().data) == 1
    r = httpx.post(
        f"{emulator.url}/v1/customers",
        data={"email": "a@x.io"},
        headers={**AUTH, "Idempotency-Key": "raw-key"},
    )
    r2 = httpx.post(
        f"{emulator.url}/v1/customers",
        data={"email": "a@x.io"},
        headers={**AUTH, "Idempotency-Key": "raw-key"},
    )
    assert r2.headers["idempotent-replayed"] == "true"
    assert r2.json()["id"] == r.json()["id"]
    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.customers.create(params={"email": "other@x.io"}, options=opts)
    assert exc.value.http_status == 400
    assert exc.value.error.type == "idempotency_error"


def test_request_id_on_every_response(emulator):
    ok = httpx.get(f"{emulator.url}/v1/customers", headers=AUTH)
    bad = httpx.get(f"{emulator.url}/v1/customers/cus_x", headers=AUTH)
    assert ok.headers["request-id"].startswith("req_")
    assert bad.headers["request-id"].startswith("req_")
    assert ok.headers["request-id"] != bad.headers["request-id"]
