"""Bench: list pages of 100 customers from the emulator, latency off.

Starts `stripesync emulator` in its own process on a free port, loads 10,000
customers through POST /_emulator/load, then hammers GET /v1/customers?limit=100
(following starting_after cursors) from concurrent httpx clients for a fixed time,
and prints requests/s and the ratio to the 1,000 req/s target (issue 2, item 8).

    python bench/emulator_list.py [--seconds 10] [--clients 16] [--customers 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import httpx

TARGET = 1000.0
AUTH = {"Authorization": "Bearer sk_test_bench"}


def start_emulator(*flags: str) -> tuple[subprocess.Popen[str], str]:
    """`stripesync emulator` in its own process on a free port: (process, its URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripesync", "emulator", "--host", "127.0.0.1", "--port", "0",
         *flags],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    return proc, line.removeprefix("listening on ")


def customers(n: int) -> list[dict[str, object]]:
    from stripesync.emulator import Emulator
    from stripesync.emulator.generator import generate

    em = Emulator(seed=1)
    generate(
        em,
        customers=n,
        card_ratio=0.5,
        tax_id_ratio=0.0,
        subscriptions=0,
        charges=0,
        invoiceitems=0,
        accounts=0,
        checkout_sessions=0,
        products=0,
    )
    return [rec.obj for rec in em.store.index("customer").records()]


async def worker(url: str, deadline: float, counts: list[int], first_ids: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
        cursor: str | None = None
        while time.perf_counter() < deadline:
            params = {"limit": "100"}
            if cursor:
                params["starting_after"] = cursor
            r = await client.get("/v1/customers", params=params)
            if r.status_code != 200:
                raise SystemExit(f"unexpected {r.status_code}: {r.text[:200]}")
            counts[0] += 1
            body = r.content
            # the last id of the page, without parsing 100 objects on the client
            at = body.rfind(b'"id":"cus_')
            cursor = body[at + 6 : body.index(b'"', at + 6)].decode() if at >= 0 else None
            if b'"has_more":false' in body[-200:]:
                cursor = None


async def hammer(url: str, clients: int, seconds: float) -> tuple[int, float]:
    counts = [0]
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(worker(url, deadline, counts, []) for _ in range(clients)))
    return counts[0], time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--customers", type=int, default=10_000)
    args = ap.parse_args()
    proc, url = start_emulator()
    try:
        objs = customers(args.customers)
        r = httpx.post(f"{url}/_emulator/load", json=objs, timeout=120)
        r.raise_for_status()
        page = httpx.get(f"{url}/v1/customers", params={"limit": 100}, headers=AUTH).content
        print(
            f"emulator {url}: loaded {r.json()['loaded']} objects; page of 100 = "
            f"{len(page) / 1024:.0f} KiB"
        )
        asyncio.run(hammer(url, args.clients, 1.0))  # warm-up
        n, elapsed = asyncio.run(hammer(url, args.clients, args.seconds))
        rps = n / elapsed
        print(
            f"GET /v1/customers?limit=100: {n} requests in {elapsed:.1f} s with "
            f"{args.clients} concurrent clients = {rps:,.0f} req/s "
            f"({rps / TARGET:.2f}x the {TARGET:,.0f} req/s target)"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
