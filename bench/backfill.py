"""Bench: the backfill against the emulator, and the store on its own (issue 3, item 7).

Three scenarios, each on a fresh embedded PostgreSQL in a temporary directory and the
emulator in its own process:

- `api`: the emulator answers every request after 100 ms and allows 100 requests/s;
  it holds 200,000 customers and 200,000 charges; `stripesync backfill --max-rps 100
  --collections customer,charge` copies them. The physical limit is 100 requests/s x
  100 objects per page = 10,000 objects/s; the figure is objects/s over the whole run
  and its ratio to that limit (target ≥ 0.90), with the 429s the emulator answered.
- `store`: no API at all: pages of 100 customer objects (taken from the emulator's
  generator) upserted through the store by concurrent writers, as the backfill does;
  objects/s (target ≥ 20,000).
- `rss`: latency and rate limit off, 500,000 customers and 500,000 charges, the
  backfill with a high `--max-rps`: the peak RSS of the backfill process (target under
  300 MB for 1,000,000 objects) and its objects/s.
- `efficiency`: how many requests the backfill spends per page of data, at three
  account sizes, with 100 ms of latency and 100 requests/s: `small` is 2,000 customers
  with the generator's default linked objects, every collection backfilled (target:
  under 60 s); `medium` is 20,000 customers plus 20,000 charges and `large` 200,000
  plus 200,000, `--collections customer,charge`. A page of data is 100 stored rows of
  one collection (rounded up, at least one per collection listed). Reported: requests
  sent / pages of data (target ≤ 1.05 plus a fixed handful per collection), the
  requests beyond the data per collection, objects/s against 100 requests/s x 100
  objects over the backfill's own time, from its first request to its last commit
  (targets ≥ 0.85 at 40,000 objects, ≥ 0.90 at 400,000; the command's start-up is
  shown beside it), objects served twice
  (from the emulator's request log), and where the requests went.

    python bench/backfill.py api [--customers 200000 --charges 200000]
    python bench/backfill.py store [--objects 200000 --writers 4]
    python bench/backfill.py rss [--customers 500000 --charges 500000]
    python bench/backfill.py efficiency [--sizes small,medium,large]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emulator_list import start_emulator  # the same emulator process as the list bench

KEY = "sk_test_bench"
PAGE = 100


def control(url: str, method: str, name: str, body: Any = None) -> Any:
    r = httpx.request(method, f"{url}/_emulator/{name}", json=body, timeout=600)
    r.raise_for_status()
    return r.json()


def fill(url: str, customers: int, charges: int) -> dict[str, int]:
    """Exactly `customers` customers and `charges` charges, nothing else."""
    started = time.perf_counter()
    control(
        url,
        "POST",
        "generate",
        {
            "customers": customers,
            "charges": charges,
            "card_ratio": 0.0,
            "tax_id_ratio": 0.0,
            "refund_ratio": 0.0,
            "dispute_ratio": 0.0,
            "products": 0,
            "subscriptions": 0,
            "invoiceitems": 0,
            "accounts": 0,
            "checkout_sessions": 0,
        },
    )
    counts: dict[str, int] = control(url, "GET", "stats")["objects"]
    print(f"emulator filled in {time.perf_counter() - started:.1f} s: "
          f"{counts.get('customer', 0):,} customers, {counts.get('charge', 0):,} charges")
    return counts


def run_backfill(
    api_base: str, database_url: str, max_rps: int, collections: str | None = "customer,charge"
) -> tuple[float, int, Any, float | None]:
    """`stripesync backfill` in its own process: (seconds, exit code, its rusage, the
    seconds the backfill itself reported: from its first request to its last commit)."""
    started = time.perf_counter()
    chosen = ["--collections", collections] if collections else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripesync", "backfill", "--no-progress",
         "--api-key", KEY, "--api-base", api_base, "--database-url", database_url,
         *chosen, "--max-rps", str(max_rps)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    reported = None
    for line in proc.stderr:
        sys.stderr.write(line)
        found = re.match(r"backfilled \d+ objects from \d+ collections in ([\d.]+) s", line)
        if found:
            reported = float(found.group(1))
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, proc.returncode, usage, reported


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_rows(database_url: str) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM stripe.customer) + (SELECT count(*) FROM stripe.charge)"
        ).fetchone()
        assert row is not None
        return int(row[0])


def embedded(tmp: str) -> Any:
    from stripesync.db.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(Path(tmp) / "pg", port=0, fast=True)
    pg.start()
    return pg


def backfill_scenario(args: argparse.Namespace, emulator_flags: list[str], max_rps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pg = embedded(tmp)
        emu, url = start_emulator(*emulator_flags)
        try:
            counts = fill(url, args.customers, args.charges)
            expected = counts.get("customer", 0) + counts.get("charge", 0)
            emu_cpu = cpu_seconds(emu.pid)
            seconds, code, usage, _ = run_backfill(url, pg.tcp_url, max_rps)
            emu_cpu = cpu_seconds(emu.pid) - emu_cpu
            rows = count_rows(pg.tcp_url)
            stats = control(url, "GET", "stats")["responses"]
        finally:
            emu.terminate()
            emu.wait()
            pg.stop()
    if code != 0 or rows != expected:
        raise SystemExit(f"backfill failed: exit {code}, {rows:,} rows of {expected:,}")
    rate = rows / seconds
    requests = sum(stats.values())
    print(f"backfilled {rows:,} objects in {seconds:.1f} s: {rate:,.0f} objects/s")
    print(f"API answers: {json.dumps(stats)} ({requests / seconds:.1f} requests/s)")
    if args.scenario == "api":
        limit = max_rps * PAGE
        print(f"physical limit {limit:,} objects/s ({max_rps} requests/s x {PAGE}): "
              f"ratio {rate / limit:.3f} (target ≥ 0.90)")
    print(f"CPU: backfill process {usage.ru_utime + usage.ru_stime:.1f} s, "
          f"emulator {emu_cpu:.1f} s, over {seconds:.1f} s of wall time on {os.cpu_count()} cores")
    print(f"peak RSS of the backfill process: {usage.ru_maxrss / 1024:.0f} MB (target < 300 MB)")


async def store_scenario(args: argparse.Namespace) -> None:
    from psycopg_pool import AsyncConnectionPool

    from stripesync.catalog import build_catalog
    from stripesync.emulator import Emulator
    from stripesync.emulator.generator import generate
    from stripesync.schema.migrate import migrate
    from stripesync.store import Incoming, Store

    em = Emulator(seed=1)
    generate(em, customers=args.objects, card_ratio=0.5, tax_id_ratio=0.0, subscriptions=0,
             charges=0, invoiceitems=0, accounts=0, checkout_sessions=0, products=0)
    objects = [rec.obj for rec in em.store.index("customer").records()]
    del em
    customer = build_catalog()["customer"]
    pages = [objects[i : i + PAGE] for i in range(0, len(objects), PAGE)]
    with tempfile.TemporaryDirectory() as tmp:
        pg = embedded(tmp)
        try:
            async with AsyncConnectionPool(
                pg.tcp_url, min_size=args.writers, max_size=args.writers, open=False,
                kwargs={"autocommit": True},
            ) as pool:
                async with pool.connection() as conn:
                    await migrate(conn, "stripe", [customer])
                store = Store("stripe")
                queue = list(reversed(pages))
                fetched = time.time()

                async def writer() -> None:
                    while queue:
                        page = queue.pop()
                        async with pool.connection() as conn, conn.transaction():
                            await store.upsert(
                                conn, customer, [Incoming(o, stripe_time=fetched) for o in page]
                            )

                started = time.perf_counter()
                await asyncio.gather(*(writer() for _ in range(args.writers)))
                seconds = time.perf_counter() - started
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT count(*) FROM stripe.customer")
                    row = await cur.fetchone()
                    assert row is not None
                    rows = int(row[0])
        finally:
            pg.stop()
    if rows != len(objects):
        raise SystemExit(f"store lost rows: {rows:,} of {len(objects):,}")
    rate = rows / seconds
    print(f"store: {rows:,} customers in pages of {PAGE} by {args.writers} writers in "
          f"{seconds:.1f} s: {rate:,.0f} objects/s (target ≥ 20,000, ratio {rate / 20000:.2f})")


SIZES: dict[str, dict[str, Any]] = {
    # name: (what the generator makes, which collections the backfill copies)
    "small": {"fill": {"customers": 2_000}, "collections": None},
    "medium": {"fill": {"customers": 20_000, "charges": 20_000}, "collections": "customer,charge"},
    "large": {"fill": {"customers": 200_000, "charges": 200_000},
              "collections": "customer,charge"},
}
ONLY_LINKED = {"card_ratio": 0.0, "tax_id_ratio": 0.0, "refund_ratio": 0.0,
               "dispute_ratio": 0.0, "products": 0, "subscriptions": 0, "invoiceitems": 0,
               "accounts": 0, "checkout_sessions": 0}


def table_rows(database_url: str) -> dict[str, int]:
    """Rows per collection in the copy (from the catalog's tables)."""
    import psycopg

    from stripesync.catalog import build_catalog

    out: dict[str, int] = {}
    with psycopg.connect(database_url) as conn:
        for c in build_catalog():
            found = conn.execute("SELECT to_regclass(%s)", (f"stripe.{c.table}",)).fetchone()
            if found and found[0]:
                row = conn.execute(f'SELECT count(*) FROM stripe."{c.table}"').fetchone()
                out[c.name] = int(row[0]) if row else 0
    return out


def print_slices(database_url: str) -> None:
    """The cursor rows of the top-level lists: pages and objects per slice."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        for name, key, pages, objects in conn.execute(
            "SELECT collection, slice, pages, objects FROM stripe._backfill_cursor "
            "WHERE parent_id = '' ORDER BY collection, slice"
        ):
            print(f"  {name} {key} pages {pages} objects {objects}")


def efficiency_size(name: str, args: argparse.Namespace) -> dict[str, Any]:
    size = SIZES[name]
    fill_args = dict(size["fill"])
    if size["collections"]:
        fill_args.update(ONLY_LINKED)
    flags = ["--latency-ms", str(args.latency_ms), "--rate-limit", str(args.rate_limit)]
    with tempfile.TemporaryDirectory() as tmp:
        pg = embedded(tmp)
        emu, url = start_emulator(*flags)
        try:
            started = time.perf_counter()
            control(url, "POST", "generate", fill_args)
            print(f"[{name}] emulator filled in {time.perf_counter() - started:.1f} s")
            control(url, "DELETE", "requests")
            before = sum(control(url, "GET", "stats")["responses"].values())
            wall, code, _usage, seconds = run_backfill(
                url, pg.tcp_url, args.rate_limit, size["collections"]
            )
            stats = control(url, "GET", "stats")["responses"]
            log = control(url, "GET", "requests")
            rows = table_rows(pg.tcp_url)
            if args.slices:
                print_slices(pg.tcp_url)
        finally:
            emu.terminate()
            emu.wait()
            pg.stop()
    if code not in (0, 3) or seconds is None:  # 3: some collection skipped
        raise SystemExit(f"[{name}] backfill failed: exit {code}")
    requests = sum(stats.values()) - before
    listed = [c for c in rows if size["collections"] is None or c in size["collections"]]
    pages = sum(max(1, -(-rows[c] // PAGE)) for c in listed)
    objects = sum(rows[c] for c in listed)
    served: dict[tuple[str, str], int] = {}
    by_path: dict[str, int] = {}
    for r in log:
        if r["method"] != "GET" or r["path"].startswith("/_emulator"):
            continue
        shape = re.sub(r"/[a-z]+_[A-Za-z0-9]*[A-Z0-9][A-Za-z0-9]*(?=/|$)", "/{id}", r["path"])
        by_path[shape] = by_path.get(shape, 0) + 1
        for oid in r.get("listed") or []:
            served[(shape, oid)] = served.get((shape, oid), 0) + 1
    twice = sum(n - 1 for n in served.values() if n > 1)
    # a child list read per parent (decision 21 names which, and why)
    per_parent = sum(n for p, n in by_path.items() if "{id}/" in p)
    limit = args.rate_limit * PAGE
    rate = objects / seconds
    complete_log = len(log) >= requests
    print(f"[{name}] backfilled {objects:,} objects of {len(listed)} collections in "
          f"{seconds:.1f} s ({wall:.1f} s with the command's start-up: Python, the "
          f"key check, the schema; exit {code})")
    lists = requests - per_parent
    print(f"[{name}] requests {requests:,} for {pages:,} pages of data: ratio "
          f"{requests / pages:.3f}; {(requests - pages) / len(listed):.1f} beyond the data "
          "per collection")
    print(f"[{name}] of which {per_parent:,} read a child list per parent; the other "
          f"{lists:,}: ratio {lists / pages:.3f}, {(lists - pages) / len(listed):.1f} "
          "beyond the data per collection")
    print(f"[{name}] objects/s {rate:,.0f} of the {limit:,}/s limit: ratio {rate / limit:.3f}")
    if complete_log:
        print(f"[{name}] objects served more than once: {twice:,}")
        if args.slices and log:
            t0 = log[0]["at"]
            per: dict[int, int] = {}
            for r in log:
                per[int((r["at"] - t0) * 4)] = per.get(int((r["at"] - t0) * 4), 0) + 1
            print(f"[{name}] requests per 0.25 s: "
                  + " ".join(str(per.get(i, 0)) for i in range(max(per) + 1)))
        top = sorted(by_path.items(), key=lambda kv: -kv[1])[:8]
        print(f"[{name}] requests by path: " + ", ".join(f"{p} {n}" for p, n in top))
    return {"size": name, "objects": objects, "seconds": seconds, "wall": wall,
            "requests": requests, "per_parent": per_parent,
            "pages": pages, "collections": len(listed), "rate": rate, "twice": twice}


def efficiency_scenario(args: argparse.Namespace) -> None:
    results = [efficiency_size(n, args) for n in args.sizes.split(",")]
    print()
    print("| account | objects | seconds (command) | requests (per parent) | pages of data | "
          "requests/pages | extra per collection | objects/s | of limit | served twice |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['size']} | {r['objects']:,} | {r['seconds']:.1f} ({r['wall']:.1f}) | "
              f"{r['requests']:,} ({r['per_parent']:,}) | "
              f"{r['pages']:,} | {r['requests'] / r['pages']:.3f} | "
              f"{(r['requests'] - r['pages']) / r['collections']:.1f} | {r['rate']:,.0f} | "
              f"{r['rate'] / (args.rate_limit * PAGE):.3f} | {r['twice']:,} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="scenario", required=True)
    a = sub.add_parser("api")
    a.add_argument("--customers", type=int, default=200_000)
    a.add_argument("--charges", type=int, default=200_000)
    a.add_argument("--latency-ms", type=int, default=100)
    a.add_argument("--rate-limit", type=int, default=100)
    s = sub.add_parser("store")
    s.add_argument("--objects", type=int, default=200_000)
    s.add_argument("--writers", type=int, default=4)
    r = sub.add_parser("rss")
    r.add_argument("--customers", type=int, default=500_000)
    r.add_argument("--charges", type=int, default=500_000)
    r.add_argument("--max-rps", type=int, default=5_000)
    e = sub.add_parser("efficiency")
    e.add_argument("--sizes", default="small,medium,large")
    e.add_argument("--latency-ms", type=int, default=100)
    e.add_argument("--rate-limit", type=int, default=100)
    e.add_argument("--slices", action="store_true", help="print every slice's pages")
    args = ap.parse_args()
    if args.scenario == "efficiency":
        efficiency_scenario(args)
    elif args.scenario == "api":
        flags = ["--latency-ms", str(args.latency_ms), "--rate-limit", str(args.rate_limit)]
        backfill_scenario(args, flags, args.rate_limit)
    elif args.scenario == "store":
        asyncio.run(store_scenario(args))
    else:
        backfill_scenario(args, [], args.max_rps)


if __name__ == "__main__":
    main()
