"""Bench: time from a change at Stripe to its row committed (issue 4, item 10).

The emulator runs in its own process with 100 ms of latency on every request;
`stripesync run` runs in its own process against it and an embedded PostgreSQL. Once
the live sync is following, this script makes 50 changes per second through the
official SDK (customer creates and updates, each carrying a sequence number in its
metadata) and listens on PostgreSQL for the commit of each row (a trigger NOTIFYs at
commit). The latency of a change is from the moment the SDK received Stripe's answer
(the change exists from then on) to the moment the notification arrived.

    python bench/live_latency.py [--seconds 30] [--rate 50]             # polling alone
    python bench/live_latency.py --webhooks                             # with nudges

Targets: p50 ≤ 600 ms and p99 ≤ 1,200 ms polling alone; p50 ≤ 250 ms with webhook
nudges. The share of the rate limit the live sync uses is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import stripe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backfill import control, embedded, start_emulator

KEY = "sk_test_bench_live"

TRIGGER = """
CREATE OR REPLACE FUNCTION stripe._bench_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('bench', NEW.id || ' ' || coalesce(NEW._raw->'metadata'->>'seq', ''));
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER bench_notify AFTER INSERT OR UPDATE ON stripe.customer
  FOR EACH ROW EXECUTE FUNCTION stripe._bench_notify();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_run(api_base: str, database_url: str, http_port: int, webhooks: bool,
              max_rps: int) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "stripesync", "run", "--no-progress", "--api-key", KEY,
            "--api-base", api_base, "--database-url", database_url, "--collections",
            "customer", "--http-listen", f"127.0.0.1:{http_port}", "--proxy-listen", "off",
            "--max-rps", str(max_rps)]
    if webhooks:
        args += ["--register-webhook", f"http://127.0.0.1:{http_port}/webhooks/stripe"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("live sync: "):
            return proc
    proc.wait()
    raise SystemExit(f"stripesync run did not start (exit {proc.returncode})")


async def changes(api_base: str, rate: float, seconds: float,
                  sent: dict[int, tuple[str, float]]) -> int:
    """`rate` changes per second for `seconds`: half creates, half updates."""
    client = stripe.StripeClient(KEY, base_addresses={"api": api_base},
                                 http_client=stripe.HTTPXClient(), max_network_retries=0)
    rng = random.Random(1)
    ids: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    n = 0

    async def one(seq: int) -> None:
        meta = {"metadata": {"seq": str(seq)}}
        if ids and rng.random() < 0.5:
            cid = rng.choice(ids)
            await client.v1.customers.update_async(cid, meta)
        else:
            c = await client.v1.customers.create_async({**meta, "email": f"b{seq}@example.com"})
            cid = c.id
            ids.append(cid)
        sent[seq] = (cid, time.time())

    start = time.monotonic()
    while time.monotonic() - start < seconds:
        n += 1
        tasks.append(asyncio.create_task(one(n)))
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    return n


async def measure(database_url: str, api_base: str, rate: float,
                  seconds: float) -> tuple[list[float], int]:
    """Latency of every change: until a row of its customer holding it, or a later
    change of that customer, was committed (changes of one object in one second are
    fetched together, so the earlier ones may never be a row of their own)."""
    sent: dict[int, tuple[str, float]] = {}
    seen: dict[int, float] = {}
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    await conn.execute("LISTEN bench")
    expected: set[int] = set()
    arrived = asyncio.Event()

    async def listen() -> None:
        async for note in conn.notifies():
            now = time.time()
            cid, _, seq = note.payload.partition(" ")
            if not seq:
                continue
            for s, (c, _t) in list(sent.items()):
                if c == cid and s <= int(seq) and s not in seen:
                    seen[s] = now
            if expected and expected <= seen.keys():
                arrived.set()

    listener = asyncio.create_task(listen())
    made = await changes(api_base, rate, seconds, sent)
    expected.update(sent)
    if not expected <= seen.keys():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), 10)
    listener.cancel()
    await conn.close()
    missing = len(sent.keys() - seen.keys())
    if missing:
        raise SystemExit(f"{missing} changes never arrived")
    return [max(0.0, seen[k] - sent[k][1]) * 1000 for k in sent], made


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rate", type=float, default=50, help="changes per second")
    ap.add_argument("--latency-ms", type=int, default=100)
    ap.add_argument("--max-rps", type=int, default=100, help="the live sync's rate limit")
    ap.add_argument("--webhooks", action="store_true", help="webhook nudges as well")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pg = embedded(tmp)
        emu, url = start_emulator("--latency-ms", str(args.latency_ms))
        run = None
        try:
            control(url, "POST", "generate", {"customers": 200, "subscriptions": 0,
                                              "charges": 0, "invoiceitems": 0})
            run = start_run(url, pg.tcp_url, free_port(), args.webhooks, args.max_rps)
            with psycopg.connect(pg.tcp_url, autocommit=True) as c:
                c.execute(TRIGGER)
            before: dict[str, Any] = control(url, "GET", "stats")
            started = time.monotonic()
            latencies, made = asyncio.run(measure(pg.tcp_url, url, args.rate, args.seconds))
            elapsed = time.monotonic() - started
            after: dict[str, Any] = control(url, "GET", "stats")
            hooks = after.get("webhooks", {})
        finally:
            if run is not None:
                run.terminate()
                run.wait(20)
            emu.terminate()
            emu.wait()
            pg.stop()
    api_requests = sum(after["responses"].values()) - sum(before["responses"].values())
    sync_rps = (api_requests - made) / elapsed
    mode = "with webhook nudges" if args.webhooks else "polling alone"
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"{mode}: {made} changes in {args.seconds:.0f} s at {args.rate:.0f}/s, "
          f"API latency {args.latency_ms} ms")
    print(f"change to committed row: p50 {p50:.0f} ms, p90 {percentile(latencies, 90):.0f} ms, "
          f"p99 {p99:.0f} ms, max {max(latencies):.0f} ms")
    target = "p50 ≤ 250 ms" if args.webhooks else "p50 ≤ 600 ms, p99 ≤ 1,200 ms"
    print(f"targets: {target}")
    print(f"the live sync's requests: {sync_rps:.1f}/s = {sync_rps / args.max_rps:.1%} of its "
          f"{args.max_rps} requests/s limit")
    if args.webhooks:
        print(f"webhook deliveries: {hooks}")
    _ = httpx  # the emulator controls above go through httpx


if __name__ == "__main__":
    main()
