"""The status page against a real database, over real HTTP, rendered by headless Chromium."""

import asyncio
import json
import logging
import os
import struct
import subprocess
import time

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from stripesync.catalog import build_catalog
from stripesync.http import status as status_mod
from stripesync.http.server import HttpServer, create_app
from stripesync.http.status import (
    FreshnessHistory,
    RecentErrors,
    StatusCollector,
    find_problems,
    render_page,
    status_routes,
)
from stripesync.schema.migrate import migrate

from .chromium import Chromium

CAT = build_catalog()
TABLES = [CAT[n] for n in ("customer", "charge", "product", "invoice", "event", "country_spec")]
SECRET_KEY = "sk_test_51StatusPageSecretValue0123456789"
RESTRICTED = "rk_test_51RestrictedSecretValue987654321"
DB_PASSWORD = "hunter2-db-password"
CHROMIUM = "/usr/bin/chromium"


async def _setup(database_url: str, *, customers: int = 3) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        await migrate(c, "stripe", TABLES)
        for i in range(customers):
            await c.execute(
                "INSERT INTO stripe.customer (id, _raw, _stripe_time) VALUES (%s, %s, now())",
                (f"cus_{i}", json.dumps({"id": f"cus_{i}", "object": "customer"})),
            )
        await c.execute(
            "INSERT INTO stripe.event (id, _raw, _stripe_time) VALUES ('evt_1', '{}', now())"
        )
        await c.execute(
            "INSERT INTO stripe.country_spec (id, _raw, _stripe_time) VALUES ('US', '{}', now())"
        )
        await c.execute(
            "INSERT INTO stripe._collection_state (collection, state, skipped_reason, objects, "
            "started_at, finished_at) VALUES "
            "('customer', 'done', NULL, %s, now() - interval '5 min', now() - interval '4 min'),"
            "('charge', 'skipped', %s, 0, now(), now()),"
            "('product', 'running', NULL, 0, now(), NULL),"
            "('country_spec', 'done', NULL, 1, now(), now()) "
            "ON CONFLICT (collection) DO UPDATE SET state = excluded.state, "
            "skipped_reason = excluded.skipped_reason, objects = excluded.objects, "
            "started_at = excluded.started_at, finished_at = excluded.finished_at",
            (
                customers,
                f"permission denied: The provided key '{RESTRICTED}' does not have the "
                "required permissions <script>alert('x')</script>",
            ),
        )
        # migrate() made a pending row for each table; the events' table is filled by the
        # live sync alone here
        await c.execute("DELETE FROM stripe._collection_state WHERE collection = 'event'")
        await c.execute(
            "INSERT INTO stripe._relist_state (collection, relisted_at, listed, repaired, "
            "removed) VALUES ('country_spec', now() - interval '20 min', 1, 0, 0)"
        )
        await c.execute(
            "INSERT INTO stripe._events_cursor (name, event_id, event_created) "
            "VALUES ('live', 'evt_1', %s)",
            (int(time.time()) - 3,),
        )


@pytest.fixture
async def pool(database_url):
    await _setup(database_url)
    async with AsyncConnectionPool(
        database_url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
    ) as p:
        yield p


@pytest.fixture
def errors():
    handler = RecentErrors(capacity=10).install("stripesync")
    try:
        yield handler
    finally:
        handler.uninstall()


def _history(now: float) -> FreshnessHistory:
    """An hour of samples: mostly under a second, a bump, a few minutes not caught up."""
    h = FreshnessHistory(window=3600, interval=10)
    for i in range(360):
        t = now - 3600 + 10 * i + 5
        if 100 <= i < 112:
            lag = None
        elif 200 <= i < 220:
            lag = 2.0 + (i - 200) * 0.6
        else:
            lag = 0.3 + 0.2 * ((i * 7) % 5) / 5
        h.record(lag, at=t)
    return h


async def _serve(pool, errors, history, refresh_seconds=15):
    collector = StatusCollector(
        pool,
        "stripe",
        lag=lambda: 0.42,
        history=history,
        errors=errors,
        catalog=CAT,
        collections=["customer", "charge", "product", "invoice", "country_spec", "refund"],
        lag_budget=10.0,
        phase=lambda: "live",
    )
    routes = status_routes(collector, refresh_seconds=refresh_seconds)

    async def health():
        return True, {}

    server = HttpServer(create_app(health=health, routes=routes), "127.0.0.1", 0)
    await server.start()
    return server


async def test_status_json_has_one_row_per_collection(pool, errors):
    logging.getLogger("stripesync.live").warning("poll failed: %s", "ConnectError")
    server = await _serve(pool, errors, _history(time.time()))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            r = await client.get("/status.json")
    finally:
        await server.stop()
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    data = r.json()
    rows = {c["collection"]: c for c in data["collections"]}
    # the state rows, a selected collection not migrated yet, and the events' table
    assert set(rows) == {
        "customer", "charge", "product", "invoice", "country_spec", "refund", "event",
    }
    assert rows["customer"]["rows"] == 3 and rows["customer"]["state"] == "done"
    assert rows["customer"]["rows_estimated"] is False
    assert rows["customer"]["last_change_at"].endswith("Z")
    assert rows["customer"]["backfill_finished_at"] is not None
    assert rows["charge"]["state"] == "skipped" and rows["charge"]["rows"] == 0
    assert rows["charge"]["skipped_reason"].startswith("permission denied")
    assert RESTRICTED not in r.text and "rk_test_" in rows["charge"]["skipped_reason"]
    assert rows["charge"]["last_change_at"] is None
    assert rows["product"]["state"] == "running"
    assert rows["invoice"]["state"] == "pending" and rows["invoice"]["rows"] == 0
    assert rows["refund"]["state"] == "pending" and rows["refund"]["rows"] is None
    assert rows["event"]["state"] == "live" and rows["event"]["rows"] == 1
    assert rows["country_spec"]["relisted_at"] is not None
    assert rows["country_spec"]["relist"] == {
        "listed": 1, "repaired": 0, "removed": 0, "skipped_reason": None,
    }
    assert data["summary"] == {
        "running": 1, "pending": 2, "failed": 0, "skipped": 1, "done": 2, "live": 1,
        "collections": 7, "rows": 5, "rows_estimated": False,
    }
    assert data["events_cursor"]["event_id"] == "evt_1"
    assert data["phase"] == "live" and data["database"] == {"ok": True, "error": None}
    fresh = data["freshness"]
    assert fresh["lag_seconds"] == 0.42 and fresh["lag_budget_seconds"] == 10.0
    # an hour of samples (the oldest may have just left the window), the request's own last
    assert 355 <= len(fresh["history"]) <= 361
    assert fresh["history"][-1]["lag_seconds"] is not None
    assert any(s["lag_seconds"] is None for s in fresh["history"])
    assert [e["message"] for e in data["errors"]] == ["poll failed: ConnectError"]
    assert data["errors"][0]["logger"] == "stripesync.live"


async def test_stripe_clock_offset_is_reported(pool):
    def broken() -> float:
        raise RuntimeError("no clock")

    for reader, expected in ((None, None), (lambda: None, None), (lambda: -30.12345, -30.123),
                             (broken, None)):
        data = await StatusCollector(pool, "stripe", catalog=CAT, clock_offset=reader).collect()
        assert data["stripe_clock_offset_seconds"] == expected


async def test_big_tables_are_estimated(pool, monkeypatch, database_url):
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        await c.execute("ANALYZE stripe.customer")
    monkeypatch.setattr(status_mod, "EXACT_COUNT_PAGES", 0)
    collector = StatusCollector(pool, "stripe", catalog=CAT)
    data = await collector.collect()
    customer = next(c for c in data["collections"] if c["collection"] == "customer")
    assert customer["rows_estimated"] is True and customer["rows"] == 3
    assert customer["last_change_at"] is not None
    assert data["summary"]["rows_estimated"] is True
    assert "≈3" in render_page(data)


async def test_values_are_escaped_and_secrets_redacted(pool, errors):
    log = logging.getLogger("stripesync.sync")
    log.warning("Stripe refused %s <img src=x onerror=alert(1)>", SECRET_KEY)
    log.error("cannot connect to postgresql://sync:%s@db.internal:5432/app", DB_PASSWORD)
    log.error("cannot connect to postgresql://sync:%s@db.internal:5432/app", DB_PASSWORD)
    try:
        raise ValueError(f"boom {SECRET_KEY}")
    except ValueError:
        log.exception("webhook whsec_abcdefSECRET123 failed")
    server = await _serve(pool, errors, FreshnessHistory())
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            page = await client.get("/")
            js = await client.get("/status.json")
    finally:
        await server.stop()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    for body in (text, js.text):
        assert SECRET_KEY not in body and RESTRICTED not in body
        assert DB_PASSWORD not in body and "whsec_abcdefSECRET123" not in body
        assert "boom" not in body  # an exception's text is never kept, only its type
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "sk_test_" in text and "postgresql://sync:***@db.internal" in text
    assert "&times;2" in text  # the repeated error is counted, not listed twice
    assert "(ValueError)" in text
    assert "<script" not in text.lower()  # and the page itself has no script at all
    assert 'http-equiv="refresh"' in text
    errs = js.json()["errors"]
    assert [e["count"] for e in errs] == [1, 2, 1]


async def test_the_page_survives_an_unreachable_database():
    async with AsyncConnectionPool(
        "postgresql://nobody:pw@127.0.0.1:9/none?connect_timeout=1", min_size=0, max_size=1,
        open=False,
    ) as p:
        collector = StatusCollector(p, "stripe", catalog=CAT, lag=lambda: None)
        collector.db_timeout = 0.5
        data = await collector.collect()
    assert data["database"]["ok"] is False and "unavailable" in data["database"]["error"]
    page = render_page(data)
    assert "database unavailable" in page and "not caught up yet" in page and "pw@" not in page


async def test_an_unmigrated_schema_shows_no_collection(database_url):
    async with AsyncConnectionPool(database_url, min_size=1, open=False) as p:
        data = await StatusCollector(p, "stripe", catalog=CAT).collect()
    assert data["database"]["ok"] is True and data["collections"] == []
    assert "backfill has not started" in render_page(data)


async def test_problems_come_first_then_collections_with_rows_then_the_folded_empty(
    pool, errors
):
    logging.getLogger("stripesync.live").warning("poll failed: %s", "ConnectError")
    collector = StatusCollector(
        pool, "stripe", lag=lambda: 0.42, errors=errors, catalog=CAT, lag_budget=10.0,
        collections=["customer", "charge", "product", "invoice", "country_spec", "refund"],
        phase=lambda: "live",
    )
    data = await collector.collect()
    got = [(p.kind, p.collection) for p in find_problems(data)]
    # skipped first, then the backfills not done while the live sync runs
    assert got == [
        ("skipped", "charge"), ("lagging", "invoice"), ("lagging", "product"),
        ("lagging", "refund"),
    ]
    page = render_page(data)
    problems, populated = page.index('id="problems"'), page.index('id="populated"')
    empty = page.index('id="empty"')
    assert problems < page.index('class="cards"') < populated < empty
    head, rows, fold = page[:populated], page[populated:empty], page[empty:]
    assert "permission denied" in head and "poll failed: ConnectError" in head
    assert head.index('data-problem="skipped"') < head.index("Recent warnings and errors")
    assert "backfill still running while the live sync runs" in head  # product
    assert "no table yet while the live sync runs" in head  # refund
    # the collections holding rows: most rows first, then by name
    assert [c for c in ("customer", "country_spec", "event") if f'data-collection="{c}"' in rows]
    order = [rows.index(f'data-collection="{c}"') for c in ("customer", "country_spec", "event")]
    assert order == sorted(order)
    for name in ("charge", "invoice", "product", "refund"):
        assert f'data-collection="{name}"' not in rows
        assert f'data-collection="{name}"' in fold
    # one line that opens, no script
    assert fold.startswith('id="empty"><details class="empty"><summary><b>4 empty collections')
    assert "<details open" not in fold and "<script" not in page.lower()
    assert "2 pending, 1 running, 1 skipped" in fold or "2 pending" in fold


async def test_the_page_without_problems_says_so(pool):
    async with pool.connection() as c:
        await c.execute("DELETE FROM stripe._collection_state WHERE state <> 'done'")
    data = await StatusCollector(pool, "stripe", catalog=CAT, lag=lambda: 0.2,
                                 lag_budget=10.0, phase=lambda: "live").collect()
    assert find_problems(data) == []
    page = render_page(data)
    assert 'data-count="0"' in page and "No problem" in page and "data-problem" not in page
    over = {**data, "freshness": {**data["freshness"], "lag_seconds": 42.0}}
    assert [(p.kind, p.detail) for p in find_problems(over)] == [
        ("lag", "42 s behind Stripe, over the 10 s budget"),
    ]


def test_freshness_history_keeps_the_worst_per_interval_and_one_window():
    h = FreshnessHistory(window=60, interval=10)
    h.record(1.0, at=1000.0)
    h.record(3.0, at=1004.0)
    h.record(2.0, at=1009.0)
    assert [(s.at, s.lag) for s in h.samples(now=1010)] == [(1009.0, 3.0)]
    h.record(None, at=1011.0)
    h.record(0.5, at=1012.0)
    assert h.samples(now=1012)[-1].lag is None  # not caught up beats any number
    for i in range(100):
        h.record(0.1, at=1020.0 + 10 * i)
    assert len(h._samples) <= 7
    assert all(s.at >= 2010 - 60 for s in h.samples(now=2010))
    h.record(float("nan"), at=3000.0)
    assert h.samples(now=3000)[-1].lag is None


async def test_freshness_history_samples_in_the_background():
    h = FreshnessHistory(window=60, interval=0.02)
    lags = iter([None, 1.0, 2.0, 3.0] + [4.0] * 100)
    stop = asyncio.Event()
    task = asyncio.create_task(h.sample(lambda: next(lags), stop))
    await asyncio.sleep(0.15)
    stop.set()
    await asyncio.wait_for(task, 1)
    got = [s.lag for s in h.samples()]
    assert got[0] is None and 1.0 in got and len(got) >= 3


def test_recent_errors_is_bounded_and_ignores_info():
    handler = RecentErrors(capacity=3)
    logger = logging.getLogger("stripesync.test_bounded")
    handler.install(logger)
    try:
        logger.info("not kept")
        for i in range(5):
            logger.warning("w%d", i)
    finally:
        handler.uninstall()
    assert [e.message for e in handler.entries()] == ["w4", "w3", "w2"]
    logger.warning("after uninstall")
    assert len(handler.entries()) == 3


# ---- in a real browser ---------------------------------------------------------------------


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
            "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LANG": "C.UTF-8"},
    )


async def test_headless_chromium_renders_the_page_on_a_phone_and_a_desktop(
    pool, errors, tmp_path
):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; "
            ".ci/run does it) to run the status page's browser test"
        )
    logging.getLogger("stripesync.live").warning(
        "poll failed (ConnectTimeout); retrying in 2.0 s"
    )
    logging.getLogger("stripesync.backfill").warning(
        "charge: skipped: permission denied for %s", RESTRICTED
    )
    server = await _serve(pool, errors, _history(time.time()))
    shots = {"phone": (390, 844), "desktop": (1280, 800)}
    try:
        url = server.url + "/"
        for name, (w, h) in shots.items():
            png = tmp_path / f"status-{name}.png"
            done = await asyncio.to_thread(
                _chromium, tmp_path, f"--screenshot={png}", f"--window-size={w},{h}", url
            )
            assert png.exists(), f"no screenshot: {done.stderr[-2000:]}"
            print(f"status page screenshot ({name}): {png}")
            assert _png_size(png) == (w, h)
            assert png.stat().st_size > 15_000  # a blank page is ~3 kB
        dom = await asyncio.to_thread(
            _chromium, tmp_path, "--dump-dom", "--window-size=390,844", url
        )
    finally:
        await server.stop()
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for name in ("customer", "charge", "product", "invoice", "country_spec", "event"):
        assert f'data-collection="{name}"' in html
    assert "permission denied" in html and RESTRICTED not in html
    assert "<polyline" in html and "Freshness, last hour" in html
    assert "poll failed (ConnectTimeout)" in html


LAYOUT = """(() => {
  const d = document.documentElement;
  const box = (sel) => { const e = document.querySelector(sel);
    return e ? e.getBoundingClientRect().toJSON() : null; };
  return {width: innerWidth, height: innerHeight, scrollWidth: d.scrollWidth,
          problems: box("#problems"), firstProblem: box("ul.problems li"),
          firstError: box("ul.errors li"), populated: box("#populated"),
          empty: box("#empty summary"), emptySection: box("#empty"),
          emptyListShown: document.querySelector("ul.empty").checkVisibility(),
          open: document.querySelector("details.empty").open};
})()"""


async def test_in_chromium_problems_fill_a_phones_first_screen_without_sideways_scroll(
    pool, errors, database_url
):
    """Laid out at 390 x 844 as a phone does (Chromium's device metrics: a headless
    window is never narrower than 500 px), and at 1280 x 800."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: tools/ensure-chromium installs it")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        # a long page, as a real account makes: ninety empty collections
        names = [x.name for x in CAT if x.table not in {t.table for t in TABLES}][:90]
        await migrate(c, "stripe", [CAT[n] for n in names])
        await c.execute("UPDATE stripe._collection_state SET state = 'done' "
                        "WHERE state = 'pending' AND collection <> 'invoice'")
    logging.getLogger("stripesync.live").error(
        "poll failed (ConnectTimeout); retrying in 2.0 s"
    )
    server = await _serve(pool, errors, _history(time.time()))
    try:
        url = server.url + "/"

        def measure() -> dict[str, dict]:
            out = {}
            with Chromium() as browser:
                for name, (w, h) in {"phone": (390, 844), "desktop": (1280, 800)}.items():
                    browser.open(url, w, h)
                    out[name] = browser.evaluate(LAYOUT)
                    browser.evaluate("document.querySelector('details.empty').open = true")
                    out[name + "-open"] = browser.evaluate(LAYOUT)
            return out

        got = await asyncio.to_thread(measure)
    finally:
        await server.stop()
    phone, desktop = got["phone"], got["desktop"]
    assert (phone["width"], phone["height"]) == (390, 844)
    assert (desktop["width"], desktop["height"]) == (1280, 800)
    for name, m in got.items():
        assert m["scrollWidth"] <= m["width"], f"{name}: the page scrolls sideways: {m}"
    for m in (phone, desktop):
        # the problems, their first item and the first warning are on the first screen
        assert m["problems"]["top"] < 100
        assert m["firstProblem"]["bottom"] <= m["height"]
        assert m["firstError"]["bottom"] <= m["height"]
        assert m["problems"]["bottom"] <= m["populated"]["top"] < m["empty"]["top"]
        # folded: one line, its list not laid out
        assert m["open"] is False and m["emptyListShown"] is False
        # a line (its detail may wrap on a phone), not the list
        assert m["empty"]["height"] < 90 and m["emptySection"]["height"] < 90
    for name in ("phone-open", "desktop-open"):
        m = got[name]
        assert m["open"] is True and m["emptyListShown"] is True
        assert m["emptySection"]["height"] > 200
