"""The HTTP server over real HTTP on 127.0.0.1: webhooks, /health, /metrics."""

import asyncio
import hashlib
import hmac
import json
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from stripesync.http.server import HttpServer, create_app, parse_listen
from stripesync.obs.metrics import REGISTRY
from stripesync.stripe_api.client import StripeApi, StripeApiError

SECRET = "whsec_server_test_SECRET_0123456789"
OLD_SECRET = "whsec_server_test_OLD_SECRET_42"


def signed(payload: bytes, secret: str = SECRET, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}


def event(event_id: str = "evt_1") -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": "customer.updated"}).encode()


def webhooks(outcome: str) -> float:
    return REGISTRY.get_sample_value("stripesync_webhooks_total", {"outcome": outcome}) or 0.0


class Harness:
    def __init__(self) -> None:
        self.healthy = True
        self.details: dict = {"database": "ok", "lag_seconds": 0.4}
        self.received: list[dict] = []
        self.fail_callback = False
        self.responses: list[str] = []

    async def health(self):
        return self.healthy, self.details

    async def on_webhook(self, ev):
        if self.fail_callback:
            raise RuntimeError(f"boom with {SECRET}")
        self.received.append(ev)


@pytest.fixture
async def served():
    h = Harness()
    app = create_app(
        health=h.health,
        webhook_secrets=[SECRET, OLD_SECRET],
        on_webhook=h.on_webhook,
        routes=[Route("/", lambda r: PlainTextResponse("status page"))],
    )
    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            yield h, client, server
    finally:
        await server.stop()


async def post_webhook(client, h, body, headers):
    r = await client.post("/webhooks/stripe", content=body, headers=headers)
    h.responses.append(r.text)
    return r


async def test_a_genuine_webhook_is_accepted_and_nudges_the_sync(served):
    h, client, server = served
    assert server.port != 0
    before = webhooks("accepted")
    r = await post_webhook(client, h, event("evt_a"), signed(event("evt_a")))
    assert r.status_code == 200 and r.json() == {"received": True}
    assert [e["id"] for e in h.received] == ["evt_a"]
    # signed with the previous secret, still configured during a rotation
    r = await post_webhook(client, h, event("evt_b"), signed(event("evt_b"), OLD_SECRET))
    assert r.status_code == 200
    assert webhooks("accepted") == before + 2


@pytest.mark.parametrize(
    ("outcome", "make"),
    [
        ("forged", lambda b: signed(b, "whsec_attacker")),
        ("forged", lambda b: signed(b + b" ")),
        ("stale", lambda b: signed(b, t=int(time.time()) - 301)),
        ("stale", lambda b: signed(b, t=int(time.time()) + 3600)),
        ("malformed", lambda b: {"Content-Type": "application/json"}),
        ("malformed", lambda b: {"Stripe-Signature": "t=now,v1=abc"}),
    ],
)
async def test_bad_webhooks_get_400_naming_the_reason_and_are_counted(served, outcome, make):
    h, client, _ = served
    before = {o: webhooks(o) for o in ("accepted", "forged", "stale", "malformed", "replayed")}
    body = event("evt_bad")
    r = await post_webhook(client, h, body, make(body))
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["reason"] == outcome
    assert webhooks(outcome) == before[outcome] + 1
    assert all(webhooks(o) == v for o, v in before.items() if o != outcome)
    assert h.received == []


async def test_a_replayed_webhook_gets_400_and_is_counted(served):
    h, client, _ = served
    body = event("evt_r")
    headers = signed(body)
    replayed, accepted = webhooks("replayed"), webhooks("accepted")
    assert (await post_webhook(client, h, body, headers)).status_code == 200
    r = await post_webhook(client, h, body, headers)
    assert r.status_code == 400 and r.json()["error"]["reason"] == "replayed"
    assert webhooks("replayed") == replayed + 1
    assert webhooks("accepted") == accepted + 1
    assert len(h.received) == 1


async def test_a_signed_body_that_is_not_an_event_or_too_big_is_malformed(served):
    h, client, _ = served
    before = webhooks("malformed")
    for body in (b"[]", b"not json", b"{" + b" " * (3 * 1024 * 1024) + b"}"):
        r = await post_webhook(client, h, body, signed(body))
        assert r.status_code == 400 and r.json()["error"]["reason"] == "malformed"
    assert webhooks("malformed") == before + 3


async def test_secrets_never_appear_in_responses(served):
    h, client, _ = served
    body = event("evt_s")
    await post_webhook(client, h, body, signed(body, "whsec_attacker"))
    await post_webhook(client, h, body, signed(body, t=1))
    await post_webhook(client, h, body, {"Stripe-Signature": "garbage"})
    h.fail_callback = True
    r = await post_webhook(client, h, body, signed(body))
    assert r.status_code == 500  # Stripe will retry; the poll catches up regardless
    assert len(h.responses) == 4
    for text in h.responses:
        assert SECRET not in text and OLD_SECRET not in text and "whsec_" not in text


async def test_webhooks_need_a_secret_and_a_post(served):
    _, client, _ = served
    assert (await client.get("/webhooks/stripe")).status_code == 405
    app = create_app(health=Harness().health)
    async with HttpServer(app, "127.0.0.1", 0) as server, httpx.AsyncClient() as c:
        body = event()
        r = await c.post(f"{server.url}/webhooks/stripe", content=body, headers=signed(body))
        assert r.status_code == 404 and "no signing secret" in r.json()["error"]["message"]


async def test_health_is_200_when_healthy_and_503_with_the_reason_otherwise(served):
    h, client, _ = served
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"ok": True, "database": "ok", "lag_seconds": 0.4}
    h.healthy = False
    h.details = {"database": "unreachable", "lag_seconds": 93.0, "lag_budget_seconds": 60}
    r = await client.get("/health")
    assert r.status_code == 503
    assert r.json() == {
        "ok": False,
        "database": "unreachable",
        "lag_seconds": 93.0,
        "lag_budget_seconds": 60,
    }


async def test_a_failing_or_hanging_health_check_is_503_without_its_message():
    async def broken():
        raise ConnectionError("postgresql://stripesync:hunter2@db/stripe refused")

    async def hanging():
        await asyncio.sleep(10)

    for check, expected in ((broken, "ConnectionError"), (hanging, "timed out")):
        app = create_app(health=check, health_timeout=0.1)
        async with HttpServer(app, "127.0.0.1", 0) as server, httpx.AsyncClient() as c:
            r = await c.get(f"{server.url}/health")
        assert r.status_code == 503
        assert r.json()["ok"] is False and expected in r.json()["error"]
        assert "hunter2" not in r.text


async def test_metrics_in_prometheus_text_format_with_stripe_requests(served, emulator):
    h, client, _ = served
    customer = emulator.stripe().v1.customers.create({"email": "metrics@example.com"})
    body = event("evt_m")
    await post_webhook(client, h, body, signed(body))
    await post_webhook(client, h, body, signed(body, "whsec_attacker"))

    def families():
        return {f.name: f for f in text_string_to_metric_families(text)}

    def sample(fams, family, name, **labels):
        for s in fams[family].samples:
            if s.name == name and s.labels == labels:
                return s.value
        return 0.0

    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    before = families()
    async with StripeApi(
        "sk_test_emulator", api_base=emulator.url, max_rps=500, max_retries=0
    ) as api:
        for _ in range(3):
            await api.get(f"/v1/customers/{customer.id}")
        await api.get("/v1/customers", {"limit": 1})
        with pytest.raises(StripeApiError):
            await api.get("/v1/customers/cus_nope")
    r = await client.get("/metrics")
    text = r.text
    after = families()

    def delta(family, name, **labels):
        return sample(after, family, name, **labels) - sample(before, family, name, **labels)

    req = "stripesync_stripe_requests"
    one = {"method": "GET", "endpoint": "/v1/customers/{id}"}
    assert delta(req, f"{req}_total", **one, status="200") == 3
    assert delta(req, f"{req}_total", **one, status="404") == 1
    assert delta(req, f"{req}_total", method="GET", endpoint="/v1/customers", status="200") == 1
    assert customer.id not in text
    wait = "stripesync_ratelimit_wait_seconds"
    assert sample(after, wait, f"{wait}_total") >= sample(before, wait, f"{wait}_total")
    assert sample(after, "stripesync_webhooks", "stripesync_webhooks_total", outcome="forged") >= 1
    assert (
        sample(after, "stripesync_webhooks", "stripesync_webhooks_total", outcome="accepted") >= 1
    )
    # every metric is exposed, even before anything happened
    for name in (
        "stripesync_events_lag_seconds",
        "stripesync_events_applied",
        "stripesync_backfill_objects",
        "stripesync_backfill_done",
        "stripesync_stripe_rate_limited",
        "stripesync_proxy_writes",
        "stripesync_proxy_write_seconds",
        "stripesync_store_batch_rows",
        "stripesync_store_batch_seconds",
    ):
        assert name in after
    assert after["stripesync_store_batch_seconds"].type == "histogram"


async def test_more_pages_join_the_same_app(served):
    _, client, _ = served
    r = await client.get("/")
    assert r.status_code == 200 and r.text == "status page"


async def test_the_server_binds_a_free_port_and_releases_it():
    app = create_app(health=Harness().health)
    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    port = server.port
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{server.url}/health")).status_code == 200
    # the address is taken while it runs
    with pytest.raises(OSError):
        await HttpServer(app, "127.0.0.1", port).start()
    await server.stop()
    await server.stop()  # idempotent
    with socket.create_server(("127.0.0.1", port)):
        pass  # free again
    async with httpx.AsyncClient() as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"http://127.0.0.1:{port}/health")


def test_parse_listen():
    assert parse_listen("127.0.0.1:8484") == ("127.0.0.1", 8484)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    for bad in ("8484", "host:", ":80", "host:99999", "host:http"):
        with pytest.raises(ValueError):
            parse_listen(bad)
