#!/usr/bin/env python3
"""Remake docs/status-1280.png and docs/status-390.png: the status page of a realistic run.

What it runs, all offline and thrown away at the end: the Stripe emulator seeded by the
demo's generator, an embedded PostgreSQL in a temporary directory, and `stripesync run`'s
Runner (backfill, then the live sync, with the status page). The key is a restricted key
that may not read Issuing cards nor Treasury financial accounts, so the backfill skips
them with Stripe's reason; a burst of 503s from `/v1/events` once the sync is live fails
a poll (the page's error); the demo's trickle of SDK activity moves the events cursor.
Then Debian's Chromium (over the DevTools protocol: a phone's 390 px need its device
metrics) takes each picture of one answer of the page, whole.

    .venv/bin/python tools/status_screenshots.py [--customers 120] [--out docs]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stripesync.app import _trickle, connect_pool
from stripesync.db.embedded import EmbeddedPostgres
from stripesync.emulator.generator import generate
from stripesync.emulator.server import EmulatorServer
from stripesync.runner import RunConfig, Runner
from stripesync.stripe_api.client import StripeApi
from tests.http.chromium import CHROMIUM, Chromium

KEY = "rk_test_stripesync_screenshots"
DENIED = ("issuing.card", "treasury.financial_account")
WIDTHS = {"1280": 1280, "390": 390}


def shoot(url: str, out: Path) -> None:
    """The whole page at each width, laid out as on a phone below 600 px."""
    with Chromium() as browser:
        for name, width in WIDTHS.items():
            browser.open(url, width, 844 if width < 600 else 800)
            png = out / f"status-{name}.png"
            png.write_bytes(browser.screenshot(full_page=True))
            print(f"{png}: {width} px wide")


async def run(args: argparse.Namespace, out: Path, work: Path) -> None:
    pg = EmbeddedPostgres(work / "pg", port=0)
    pg.start()
    try:
        with EmulatorServer() as emu:
            generate(emu.emulator, customers=args.customers, seed=42)
            emu.emulator.permissions.set(KEY, {"*": "read", **dict.fromkeys(DENIED, "none")})
            # few retries: the burst of 503s below fails one poll, as more 503s would
            # after the default retries
            async with connect_pool(pg.tcp_url, max_size=20) as pool, StripeApi(
                KEY, api_base=emu.url, max_rps=200, max_retries=2
            ) as api:
                runner = Runner(api, pool, RunConfig(http_port=0, proxy_host=None))
                stop = asyncio.Event()
                task = asyncio.create_task(runner.run(stop))
                trickle: asyncio.Task[None] | None = None
                try:
                    while runner.state.phase != "live" and not task.done():
                        await asyncio.wait({task}, timeout=0.1)
                    if task.done():
                        task.result()
                        raise SystemExit("the run stopped before the live sync")
                    trickle = asyncio.create_task(_trickle(emu.url, stop))
                    await asyncio.sleep(3)  # some freshness samples, caught up
                    emu.emulator.faults.add({"kind": "503", "path": "/v1/events", "times": 3})
                    await asyncio.sleep(args.settle)
                    assert runner.http is not None
                    async with httpx.AsyncClient(timeout=30) as client:
                        page = (await client.get(runner.http.url + "/")).text
                    shown = work / "status.html"  # both pictures of this one answer
                    shown.write_text(page, encoding="utf-8")
                    await asyncio.to_thread(shoot, shown.as_uri(), out)
                finally:
                    stop.set()
                    await asyncio.gather(task, return_exceptions=True)
                    if trickle is not None:
                        await asyncio.gather(trickle, return_exceptions=True)
    finally:
        pg.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--customers", type=int, default=120)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs"))
    p.add_argument("--settle", type=float, default=4.0,
                   help="seconds of live sync after the failed poll")
    args = p.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        print(f"{CHROMIUM} is missing: run tools/ensure-chromium", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stripesync-shots-") as tmp:
        asyncio.run(run(args, out, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
