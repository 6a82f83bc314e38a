"""Webhook delivery: every event POSTed, signed, to the matching enabled endpoints,
promptly, in order, retried after failures; a receiver on 127.0.0.1 records them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

import httpx
import pytest
import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stripesync.emulator import Emulator, EmulatorServer
from stripesync.emulator.server import bind


@dataclass
class Hit:
    at: float  # time.monotonic() when the receiver got it
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """A Starlette app under uvicorn in a thread, on 127.0.0.1 and a free port. Each path
    answers 200 unless told otherwise (`plan`): a status, or seconds to hang first."""

    def __init__(self) -> None:
        self.hits: dict[str, list[Hit]] = defaultdict(list)
        self.plans: dict[str, deque[int | float]] = defaultdict(deque)
        self.cond = threading.Condition()
        self.released = asyncio.Event()  # set at stop(): hanging answers end
        app = Starlette(routes=[Route("/{name}", self._hook, methods=["POST"])])
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        cfg = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(cfg)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _hook(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.loop = asyncio.get_running_loop()
        body = await request.body()
        hit = Hit(time.monotonic(), body, {k.lower(): v for k, v in request.headers.items()})
        with self.cond:
            self.hits[name].append(hit)
            self.cond.notify_all()
            step = self.plans[name].popleft() if self.plans[name] else 200
        if isinstance(step, float):  # hang (but not past the receiver's own shutdown)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), step)
            step = 200
        return Response(b"{}", status_code=step, media_type="application/json")

    def plan(self, name: str, *steps: int | float) -> None:
        with self.cond:
            self.plans[name].extend(steps)

    def wait(self, name: str, n: int, timeout: float = 1.0) -> list[Hit]:
        """The first `n` hits on `name`, waiting up to `timeout` s for them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.hits[name]) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"{name}: {len(self.hits[name])} of {n} deliveries"
                self.cond.wait(left)
            return list(self.hits[name])

    def clear(self) -> None:
        with self.cond:
            self.hits.clear()
            self.plans.clear()

    def start(self) -> Receiver:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.released.set)
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(scope="module")
def receiver_server():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def receiver(receiver_server):
    receiver_server.clear()
    yield receiver_server
    receiver_server.clear()


def settle(emulator, timeout: float = 2.0) -> dict:
    """The webhook stats once nothing is queued, in flight or waiting for a retry."""
    deadline = time.monotonic() + timeout
    while True:
        stats = emulator.controls.stats()["webhooks"]
        if stats["pending"] == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


def endpoint(client, url: str, events: list[str]) -> stripe.WebhookEndpoint:
    return client.v1.webhook_endpoints.create(params={"url": url, "enabled_events": events})


def test_events_arrive_at_once_in_order_signed_and_as_the_api_returns_them(emulator, receiver):
    client = emulator.stripe()
    ep = endpoint(client, receiver.url("all"), ["*"])
    assert ep.secret.startswith("whsec_")
    sent: list[float] = []
    cus = client.v1.customers.create(params={"email": "a@x.io"})
    sent.append(time.monotonic())
    client.v1.customers.update(cus.id, params={"email": "b@x.io"})
    sent.append(time.monotonic())
    client.v1.customers.delete(cus.id)
    sent.append(time.monotonic())
    hits = receiver.wait("all", 3, timeout=1.0)

    events = list(reversed(client.v1.events.list().data))
    assert [e.type for e in events] == ["customer.created", "customer.updated", "customer.deleted"]
    assert [h.event["id"] for h in hits] == [e.id for e in events]
    assert [h.event["type"] for h in hits] == [e.type for e in events]
    assert hits[0].event["data"]["object"]["id"] == cus.id
    assert hits[1].event["data"]["previous_attributes"] == {"email": "a@x.io"}
    for h, t in zip(hits, sent, strict=True):
        assert h.at - t < 1.0  # prompt (in practice a millisecond or two)
        assert h.headers["content-type"] == "application/json; charset=utf-8"
        assert h.headers["user-agent"].startswith("Stripe/1.0")
        sig = h.headers["stripe-signature"]
        assert sig.startswith("t=") and ",v1=" in sig
        verified = stripe.Webhook.construct_event(h.body.decode(), sig, ep.secret)
        assert verified.id == h.event["id"]
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(h.body.decode(), sig, "whsec_wrong")

    stats = settle(emulator)
    # the body is the event as GET /v1/events/{id} returns it; once delivered, the
    # event's pending_webhooks drops from 1 to 0, as at Stripe
    raw = httpx.get(
        f"{emulator.url}/v1/events/{hits[0].event['id']}",
        headers={"Authorization": "Bearer sk_test_x"},
    ).json()
    assert hits[0].event["pending_webhooks"] == 1
    assert raw["pending_webhooks"] == 0
    assert {**hits[0].event, "pending_webhooks": 0} == raw
    assert stats["attempted"] == 3
    assert stats["delivered"] == 3
    assert stats["failed"] == stats["retried"] == stats["abandoned"] == stats["dropped"] == 0
    assert stats["enabled"] is True and stats["running"] is True


def test_enabled_events_choose_what_each_endpoint_receives(emulator, receiver):
    client = emulator.stripe()
    endpoint(client, receiver.url("created"), ["customer.created"])
    endpoint(client, receiver.url("mixed"), ["customer.updated", "product.created"])
    endpoint(client, receiver.url("all"), ["*"])
    cus = client.v1.customers.create()
    client.v1.customers.update(cus.id, params={"name": "N"})
    client.v1.products.create(params={"name": "P"})
    all_hits = receiver.wait("all", 3)
    assert [h.event["type"] for h in all_hits] == [
        "customer.created",
        "customer.updated",
        "product.created",
    ]
    stats = settle(emulator)
    assert [h.event["type"] for h in receiver.hits["created"]] == ["customer.created"]
    assert [h.event["type"] for h in receiver.hits["mixed"]] == [
        "customer.updated",
        "product.created",
    ]
    # each event goes to two endpoints: a body shows the deliveries still pending when
    # it was sent (the other endpoint may already have had its copy), at least itself
    assert all(h.event["pending_webhooks"] in (1, 2) for h in all_hits)
    assert stats["attempted"] == stats["delivered"] == 6
    events = client.v1.events.list(params={"limit": 3})
    assert [e.pending_webhooks for e in events.data] == [0, 0, 0]


def test_a_failed_delivery_is_retried_with_backoff_until_it_succeeds(emulator, receiver):
    emulator.controls.configure(webhook_retry_seconds=0.2)
    client = emulator.stripe()
    ep = endpoint(client, receiver.url("flaky"), ["customer.created"])
    receiver.plan("flaky", 500, 503)
    client.v1.customers.create()
    hits = receiver.wait("flaky", 3, timeout=2.0)
    assert len({h.event["id"] for h in hits}) == 1
    assert hits[1].at - hits[0].at >= 0.19  # 0.2 s, then 0.4 s
    assert hits[2].at - hits[1].at >= 0.39
    for h in hits:  # each attempt is signed anew
        stripe.Webhook.construct_event(h.body.decode(), h.headers["stripe-signature"], ep.secret)
    stats = settle(emulator)
    assert stats["attempted"] == 3
    assert stats["failed"] == 2
    assert stats["retried"] == 2
    assert stats["delivered"] == 1
    assert stats["abandoned"] == 0
    assert stats["last_error"].endswith("attempt 2: HTTP 503")
    assert client.v1.events.list().data[0].pending_webhooks == 0


def test_timeouts_and_refused_connections_are_retried_then_abandoned(emulator, receiver):
    emulator.controls.configure(
        webhook_retry_seconds=0.05, webhook_max_attempts=3, webhook_timeout_seconds=0.3
    )
    client = emulator.stripe()
    closed = bind("127.0.0.1", 0)  # a port nobody listens on
    dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/gone"
    closed.close()
    endpoint(client, dead_url, ["customer.created"])
    endpoint(client, receiver.url("slow"), ["customer.created"])
    receiver.plan("slow", 1.0)  # hangs past the 0.3 s timeout once
    client.v1.customers.create()
    hits = receiver.wait("slow", 2, timeout=2.0)
    assert hits[0].event["id"] == hits[1].event["id"]
    stats = settle(emulator)
    # dead: 3 refused attempts, abandoned; slow: a timeout, then delivered
    assert stats["attempted"] == 5
    assert stats["failed"] == 4
    assert stats["retried"] == 3
    assert stats["abandoned"] == 1
    assert stats["delivered"] == 1
    assert stats["pending"] == 0
    assert client.v1.events.list().data[0].pending_webhooks == 1  # the dead one


def test_disabled_endpoints_receive_nothing(emulator, receiver):
    client = emulator.stripe()
    off = endpoint(client, receiver.url("off"), ["*"])
    off = client.v1.webhook_endpoints.update(off.id, params={"disabled": True})
    assert off.status == "disabled"
    endpoint(client, receiver.url("on"), ["*"])
    client.v1.customers.create()
    receiver.wait("on", 1)
    stats = settle(emulator)
    assert receiver.hits["off"] == []
    assert client.v1.events.list(params={"type": "customer.created"}).data[0].pending_webhooks == 0
    assert stats["attempted"] == stats["delivered"] == 1
    # enabled again, it receives what follows
    client.v1.webhook_endpoints.update(off.id, params={"disabled": False})
    client.v1.products.create(params={"name": "P"})
    assert [h.event["type"] for h in receiver.wait("off", 1)] == ["product.created"]


def test_delivery_can_be_turned_off_and_on(emulator, receiver):
    client = emulator.stripe()
    endpoint(client, receiver.url("hook"), ["customer.created"])
    assert emulator.controls.configure(webhooks=False)["webhooks"] is False
    silent = client.v1.customers.create()
    time.sleep(0.2)
    assert receiver.hits["hook"] == []
    assert emulator.controls.stats()["webhooks"]["attempted"] == 0
    emulator.controls.configure(webhooks=True)
    loud = client.v1.customers.create()
    hits = receiver.wait("hook", 1)
    assert [h.event["data"]["object"]["id"] for h in hits] == [loud.id]
    assert silent.id != loud.id
    with pytest.raises(RuntimeError, match="webhooks must be true or false"):
        emulator.controls.configure(webhooks="no")


def test_a_hanging_receiver_does_not_slow_the_api(emulator, receiver):
    client = emulator.stripe()
    endpoint(client, receiver.url("hang"), ["*"])
    receiver.plan("hang", 1.0)
    start = time.monotonic()
    for i in range(5):
        client.v1.customers.create(params={"name": f"c{i}"})
    assert time.monotonic() - start < 0.5
    hits = receiver.wait("hang", 5, timeout=3.0)
    assert [h.event["data"]["object"]["name"] for h in hits] == [f"c{i}" for i in range(5)]


def test_without_endpoints_nothing_is_queued_and_reset_forgets_deliveries(emulator, receiver):
    client = emulator.stripe()
    client.v1.customers.create()
    stats = emulator.controls.stats()["webhooks"]
    assert stats["attempted"] == stats["pending"] == stats["dropped"] == 0
    emulator.controls.configure(webhook_retry_seconds=5.0)
    endpoint(client, receiver.url("reset"), ["*"])
    receiver.plan("reset", 500)
    client.v1.customers.create()
    receiver.wait("reset", 1)
    deadline = time.monotonic() + 1
    while emulator.controls.stats()["webhooks"]["retried"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert emulator.controls.stats()["webhooks"]["pending"] == 1  # a retry in 5 s
    emulator.controls.reset()
    stats = emulator.controls.stats()["webhooks"]
    assert stats["pending"] == stats["attempted"] == 0


def test_the_server_stops_cleanly_with_deliveries_in_flight(receiver):
    srv = EmulatorServer().start()
    client = stripe.StripeClient(
        "sk_test_x", base_addresses={"api": srv.url}, max_network_retries=0
    )
    endpoint(client, receiver.url("stop"), ["*"])
    receiver.plan("stop", 1.5)
    client.v1.customers.create()
    receiver.wait("stop", 1)
    assert srv.emulator.webhooks.running
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 1.0  # the delivery (held 1.5 s) is cancelled
    assert not srv._thread.is_alive()
    assert not srv.emulator.webhooks.running


def test_cli_no_webhooks_turns_delivery_off(monkeypatch):
    from stripesync.emulator import cli, server

    served: list[Emulator] = []
    monkeypatch.setattr(server, "serve_forever", lambda em, *a, **kw: served.append(em))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    for argv, on in ((["emulator"], True), (["emulator", "--no-webhooks"], False)):
        args = parser.parse_args(argv)
        assert args.run(args) == 0
        em = served.pop()
        assert em.config.webhooks is on
        em.reset()  # reset goes back to the configuration the emulator started with
        assert em.webhooks.stats()["enabled"] is on
