"""Bench: rows per second written to Stripe through the proxy (issue 5, item 3).

One SQL statement writes many rows; each row is one Stripe call, made concurrently
within the proxy's rate limiter. The physical limit is the rate limit itself: a
statement of N rows cannot finish in less than N / max_rps seconds.

The emulator runs in its own process with Stripe's manners (100 ms of latency on every
request, 429 above `--rate-limit` requests per second); an embedded PostgreSQL holds
the synced tables; `stripesync proxy` runs in its own process with `--max-rps`. Through
psycopg, the bench times:

    INSERT INTO stripe.customer (email, metadata) SELECT … FROM generate_series(1, N)
    UPDATE stripe.customer SET metadata = … WHERE email LIKE 'bench-%'
    DELETE FROM stripe.customer WHERE email LIKE 'bench-%'

and prints rows per second, their ratio to `--max-rps`, and the emulator's answers by
status (a 429 would mean the limiter let too much through).

    python bench/proxy_writes.py [--rows 1000] [--max-rps 100] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backfill import control, embedded, start_emulator
from proxy_pgbench import start_proxy

KEY = "sk_test_bench_proxy_writes"


async def migrate_customer(database_url: str) -> None:
    from stripesync.catalog import build_catalog
    from stripesync.schema.migrate import migrate

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await migrate(conn, "stripe", build_catalog().select(["customer"]))


def timed(conn: psycopg.Connection[Any], sql: str) -> tuple[int, float]:
    started = time.perf_counter()
    cur = conn.execute(sql)
    return cur.rowcount, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--max-rps", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pg = embedded(tmp)
        emu, url = start_emulator(
            "--latency-ms", str(args.latency_ms), "--rate-limit", str(args.max_rps)
        )
        proxy = None
        try:
            asyncio.run(migrate_customer(pg.tcp_url))
            proxy, port = start_proxy(
                pg.tcp_url, "--api-base", url, "--max-rps", str(args.max_rps),
                env={"STRIPE_API_KEY": KEY},
            )
            via_proxy = psycopg.conninfo.make_conninfo(pg.tcp_url, port=str(port))
            n = args.rows
            statements = [
                ("INSERT", "INSERT INTO stripe.customer (email, metadata) SELECT "
                 "'bench-' || g || '@example.com', jsonb_build_object('n', g::text) "
                 f"FROM generate_series(1, {n}) AS g"),
                ("UPDATE", "UPDATE stripe.customer SET metadata = metadata || "
                 "'{\"bench\": \"updated\"}' WHERE email LIKE 'bench-%'"),
                ("DELETE", "DELETE FROM stripe.customer WHERE email LIKE 'bench-%'"),
            ]  # fmt: skip
            print(
                f"{n:,} rows per statement through the proxy; Stripe: {args.latency_ms} ms "
                f"latency, {args.max_rps} requests/s; proxy --max-rps {args.max_rps}; "
                f"{os.cpu_count()} cores"
            )
            print(f"{'statement':>9}  {'rows':>6}  {'seconds':>7}  {'rows/s':>7}  "
                  f"{'of the limit':>12}")
            with psycopg.connect(via_proxy, autocommit=True) as conn:
                for verb, sql in statements:
                    rows, seconds = timed(conn, sql)
                    if rows != n:
                        raise SystemExit(f"{verb} wrote {rows} rows, not {n}")
                    rate = rows / seconds
                    print(
                        f"{verb:>9}  {rows:>6,}  {seconds:>7.2f}  {rate:>7.1f}  "
                        f"{rate / args.max_rps:>12.2f}"
                    )
                left = conn.execute(
                    "SELECT count(*) FROM stripe.customer WHERE email LIKE 'bench-%'"
                ).fetchone()
            stats = control(url, "GET", "stats")
            print(f"rows left in the table: {left[0] if left else '?'}")
            print(f"emulator answers by status: {stats['responses']}")
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait()
            emu.terminate()
            emu.wait()
            pg.stop()


if __name__ == "__main__":
    main()
