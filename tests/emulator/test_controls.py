"""The /_emulator/ controls: rate limit, injected failures, clock, restricted keys,
latency, reset."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import httpx
import pytest
import stripe


def test_rate_limit_answers_429(emulator):
    emulator.controls.configure(rate_limit=5)
    client = emulator.stripe()
    statuses = []
    for _ in range(12):
        try:
            client.v1.customers.list()
            statuses.append(200)
        except stripe.RateLimitError as e:
            statuses.append(e.http_status)
            assert e.error.code == "rate_limit"
    assert statuses[:5] == [200] * 5
    assert 429 in statuses
    # another key has its own budget
    emulator.stripe(key="sk_test_other").v1.customers.list()


def test_injected_500_on_nth_matching_request(emulator):
    emulator.controls.fault("500", "/v1/customers", method="GET", nth=2)
    client = emulator.stripe()
    client.v1.customers.list()
    with pytest.raises(stripe.APIError) as exc:
        client.v1.customers.list()
    assert exc.value.http_status == 500
    client.v1.customers.list()
    client.v1.products.list()  # other paths unaffected


def test_injected_503_at_a_rate_and_sdk_retries(emulator):
    emulator.controls.fault("503", "/v1/products*", rate=1.0, times=1)
    client = emulator.stripe(max_network_retries=1)
    start = time.monotonic()
    assert client.v1.products.list().data == []  # the SDK retried past the 503
    assert time.monotonic() - start < 5


def test_injected_reset_and_timeout(emulator):
    emulator.controls.fault("reset", "/v1/customers", nth=1)
    client = emulator.stripe()
    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.list()
    client.v1.customers.list()
    emulator.controls.fault("timeout", "/v1/customers/{id}", nth=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(
            f"{emulator.url}/v1/customers/cus_1",
            headers={"Authorization": "Bearer sk_test_x"},
            timeout=0.3,
        )


def test_clock_moves_created(emulator):
    client = emulator.stripe()
    before = client.v1.customers.create().created
    now = emulator.advance(3600)
    after = client.v1.customers.create().created
    assert after - before >= 3600
    assert abs(now - after) <= 2
    with pytest.raises(RuntimeError):
        emulator.controls.control("POST", "clock", {"advance": -5})


def test_a_skewed_clock_dates_objects_and_responses(emulator):
    now = emulator.controls.skew(-90)  # Stripe's clock 90 s behind this machine's
    assert abs(now - (time.time() - 90)) <= 2
    r = httpx.get(f"{emulator.url}/v1/customers", headers={"Authorization": "Bearer sk_test_x"})
    dated = parsedate_to_datetime(r.headers["date"]).timestamp()
    assert abs(dated - (time.time() - 90)) <= 2
    assert abs(emulator.stripe().v1.customers.create().created - dated) <= 2
    with pytest.raises(RuntimeError):
        emulator.controls.control("POST", "clock", {"skew": "soon"})
    assert abs(emulator.controls.skew(0) - time.time()) <= 2


def test_restricted_keys(emulator):
    emulator.controls.restrict("rk_test_reader", {"customer": "read", "product": "write"})
    admin = emulator.stripe()
    cus = admin.v1.customers.create()
    rk = emulator.stripe(key="rk_test_reader")
    assert rk.v1.customers.retrieve(cus.id).id == cus.id
    rk.v1.products.create(params={"name": "ok"})
    with pytest.raises(stripe.PermissionError) as exc:
        rk.v1.customers.create()
    assert exc.value.http_status == 403
    assert "rak_customer_write" in exc.value.user_message
    with pytest.raises(stripe.PermissionError):
        rk.v1.charges.list()


def test_allowed_keys(emulator):
    emulator.controls.configure(allowed_keys=["sk_test_only"])
    emulator.stripe(key="sk_test_only").v1.customers.list()
    with pytest.raises(stripe.AuthenticationError):
        emulator.stripe(key="sk_test_else").v1.customers.list()


def test_latency(emulator):
    emulator.controls.configure(latency_ms=80, latency_jitter_ms=10)
    client = emulator.stripe()
    start = time.monotonic()
    client.v1.customers.list()
    assert time.monotonic() - start >= 0.06


def test_reset_forgets_everything(emulator):
    client = emulator.stripe()
    client.v1.customers.create()
    emulator.controls.configure(latency_ms=5)
    emulator.controls.reset()
    assert client.v1.customers.list().data == []
    assert client.v1.events.list().data == []
    assert emulator.controls.control("GET", "config")["latency_ms"] == 0


def test_bad_control_requests(emulator):
    r = httpx.post(f"{emulator.url}/_emulator/config", json={"nope": 1})
    assert r.status_code == 400
    r = httpx.post(f"{emulator.url}/_emulator/faults", json={"kind": "418"})
    assert r.status_code == 400
    r = httpx.get(f"{emulator.url}/_emulator/unknown")
    assert r.status_code == 404
