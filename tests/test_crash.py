"""Kill -9 at random moments of the live sync while changes are made through the SDK;
after the last restart the database equals the emulator, object by object."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from typing import Any

import psycopg
import pytest
import stripe

from stripesync.emulator.generator import generate
from tests.test_run import Proc

KEY = "sk_test_crash"
TOP_LEVEL = {
    "customer": ("/v1/customers", {}),
    "product": ("/v1/products", {}),
    "price": ("/v1/prices", {}),
    "coupon": ("/v1/coupons", {}),
    "invoiceitem": ("/v1/invoiceitems", {}),
    "subscription": ("/v1/subscriptions", {"status": "all"}),
    "invoice": ("/v1/invoices", {}),
}
COLLECTIONS = [*TOP_LEVEL, "tax_id", "subscription_item", "event"]


class Activity(threading.Thread):
    """Creates, updates and deletes across collections until stopped."""

    def __init__(self, sdk: stripe.StripeClient, seed: int) -> None:
        super().__init__(daemon=True)
        self.sdk = sdk.v1
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.done = 0
        self.errors: list[str] = []
        self.customers: list[str] = []
        self.prices: list[str] = []

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.step()
                self.done += 1
            except stripe.StripeError as e:  # e.g. an object another step deleted
                self.errors.append(f"{type(e).__name__}: {e.user_message}")
            time.sleep(0.01)

    def step(self) -> None:
        rng, sdk = self.rng, self.sdk
        n = self.done
        roll = rng.random()
        if roll < 0.25 or not self.customers:
            c = sdk.customers.create(params={"email": f"c{n}@example.com"})
            self.customers.append(c.id)
        elif roll < 0.45:
            sdk.customers.update(rng.choice(self.customers),
                                 params={"metadata": {"step": str(n)}, "name": f"N {n}"})
        elif roll < 0.5 and len(self.customers) > 3:
            cid = self.customers.pop(rng.randrange(len(self.customers)))
            sdk.customers.delete(cid)
        elif roll < 0.6:
            p = sdk.products.create(params={"name": f"P {n}"})
            price = sdk.prices.create(params={
                "product": p.id, "currency": "usd", "unit_amount": 100 + n,
                "recurring": {"interval": "month"},
            })
            self.prices.append(price.id)
        elif roll < 0.7 and self.prices:
            sdk.subscriptions.create(params={
                "customer": rng.choice(self.customers),
                "items": [{"price": rng.choice(self.prices)}],
            })
        elif roll < 0.8:
            item = sdk.invoice_items.create(params={
                "customer": rng.choice(self.customers), "amount": 500 + n, "currency": "usd",
            })
            if rng.random() < 0.3:
                sdk.invoice_items.delete(item.id)
        elif roll < 0.9:
            sdk.customers.tax_ids.create(rng.choice(self.customers),
                                         params={"type": "eu_vat", "value": f"DE{n:09d}"})
        else:
            coupon = sdk.coupons.create(params={"percent_off": 10, "duration": "once"})
            if rng.random() < 0.5:
                sdk.coupons.delete(coupon.id)


def _list(sdk: stripe.StripeClient, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every object of a list, as the JSON Stripe sent."""
    out: dict[str, Any] = {}
    q = {**params, "limit": 100}
    while True:
        body = json.loads(sdk.raw_request("get", path, **q).body)
        data = body["data"]
        out.update({o["id"]: o for o in data})
        if not body["has_more"]:
            return out
        q["starting_after"] = data[-1]["id"]


def _differences(sdk: stripe.StripeClient, url: str) -> list[str]:
    diffs: list[str] = []
    with psycopg.connect(url) as conn:
        for name, (path, params) in TOP_LEVEL.items():
            want = _list(sdk, path, params)
            got = dict(conn.execute(f"SELECT id, _raw FROM stripe.{name}").fetchall())
            for oid in want.keys() | got.keys():
                w, g = want.get(oid), got.get(oid)
                if w == g:
                    continue
                if w is None:
                    diffs.append(f"{name} {oid}: stale row")
                elif g is None:
                    diffs.append(f"{name} {oid}: missing")
                else:
                    fields = sorted(k for k in w.keys() | g.keys() if w.get(k) != g.get(k))
                    diffs.append(f"{name} {oid}: " + ", ".join(
                        f"{k}: {g.get(k)!r} != {w.get(k)!r}" for k in fields))
        want_tax = {}
        for cid in _list(sdk, "/v1/customers", {}):
            want_tax.update(_list(sdk, f"/v1/customers/{cid}/tax_ids", {}))
        want_items = {}
        for sid in _list(sdk, "/v1/subscriptions", {"status": "all"}):
            want_items.update(_list(sdk, "/v1/subscription_items", {"subscription": sid}))
        got_items = dict(conn.execute("SELECT id, _raw FROM stripe.subscription_item").fetchall())
        diffs += [f"subscription_item {i}" for i in want_items.keys() ^ got_items.keys()]
        diffs += [f"subscription_item {i} differs" for i in want_items.keys() & got_items.keys()
                  if want_items[i] != got_items[i]]
        got_tax = dict(conn.execute("SELECT id, _raw FROM stripe.tax_id").fetchall())
        diffs += [f"tax_id {t}" for t in want_tax.keys() ^ got_tax.keys()]
        diffs += [f"tax_id {t} differs" for t in want_tax.keys() & got_tax.keys()
                  if want_tax[t] != got_tax[t]]
    return diffs


@pytest.mark.slow
def test_kill_9_at_random_moments_converges(emulator, database_url) -> None:
    generate(emulator.state, customers=20, seed=11, subscriptions=5, charges=0)
    rng = random.Random(2026)
    activity = Activity(emulator.stripe(), seed=7)
    args = ("--api-key", KEY, "--api-base", emulator.url, "--database-url", database_url,
            "--http-listen", "off", "--proxy-listen", "off", "--max-rps", "200",
            "--collections", ",".join(COLLECTIONS))
    kills = 0
    proc = Proc(*args)
    try:
        proc.wait_for("live sync: ")
        activity.start()
        for _ in range(4):
            time.sleep(rng.uniform(0.3, 1.5))
            proc.p.send_signal(signal.SIGKILL)
            proc.p.wait(10)
            kills += 1
            time.sleep(rng.uniform(0.0, 0.5))  # changes keep coming while it is down
            proc = Proc(*args)
            proc.wait_for("live sync: ")
        time.sleep(1.0)
        activity.halt.set()
        activity.join(10)
        assert activity.done > 50, activity.errors[:5]
        sdk = emulator.stripe()
        deadline = time.monotonic() + 20
        diffs = _differences(sdk, database_url)
        while diffs and time.monotonic() < deadline:
            time.sleep(0.5)
            diffs = _differences(sdk, database_url)
        assert not diffs, "\n".join(diffs[:30]) + "\n" + proc.text()
        assert proc.stop() == 0
    finally:
        activity.halt.set()
        if proc.p.poll() is None:
            proc.p.kill()
    assert kills == 4
