"""The status page: `GET /` (HTML) and `GET /status.json` (the same data as JSON).

One row per collection (rows, backfill state, last change applied, last re-list, skipped
reason), the live sync's freshness over the last hour as a chart drawn on the server
(inline SVG), and the recent warnings and errors of the process.

- **Rows** are exact (`count(*)`) for tables up to `EXACT_COUNT_PAGES` pages on disk; a
  bigger table's count is PostgreSQL's estimate (`pg_class.reltuples` scaled to the
  table's current size, as the planner does) and is marked as such. The last change
  applied is `max(_synced_at)`, which has no index: for big tables it is computed at
  most every `SLOW_QUERY_TTL` seconds.
- **Freshness** comes from a `FreshnessHistory`, a ring buffer of (time, lag) samples
  (one per `interval`, the worst lag of each interval kept), fed by
  `FreshnessHistory.sample(lag, stop)` running beside the live sync; every page view
  records a sample too.
- **Recent errors** come from `RecentErrors`, a `logging.Handler` on the `stripesync`
  logger that keeps the last WARNING+ records, redacted.

The page is one self-contained document (inline CSS, no script, no external resource),
refreshed by `<meta http-equiv="refresh">`. Problems come first (failed, skipped or
lagging collections, the lag over its budget, the recent warnings and errors), then the
headline figures and the chart, then the collections holding rows (most rows first; the
table scrolls in its own box on a phone), then one folded `<details>` line for the empty
collections. Every value is HTML-escaped and passed through `redact`: no Stripe key,
webhook secret or database password ever reaches the page, and the database URL is not
shown at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from stripesync.catalog import Catalog, build_catalog
from stripesync.schema.columns import quote
from stripesync.stripe_api.client import redact

log = logging.getLogger("stripesync.http")

EXACT_COUNT_PAGES = 1280  # 10 MB of heap at 8 kB pages: count(*) is a few ms below that
SLOW_QUERY_TTL = 300.0  # seconds a big table's max(_synced_at) is reused
STATEMENT_TIMEOUT_MS = 5000
STATES = ("running", "pending", "failed", "skipped", "done")


# ---- freshness history ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # Unix time
    lag: float | None  # seconds; None: the live sync had not caught up


class FreshnessHistory:
    """The live sync's lag over the last `window` seconds, one sample per `interval`.

    `record(lag)` may be called as often as one likes: samples falling in the same
    interval are merged, keeping the worst (a None, "not caught up", beats any number).
    Memory is bounded by `window / interval` samples. Thread-safe.
    """

    def __init__(self, *, window: float = 3600.0, interval: float = 10.0) -> None:
        if window <= 0 or interval <= 0:
            raise ValueError("window and interval must be positive")
        self.window = window
        self.interval = interval
        self._samples: deque[Sample] = deque(maxlen=math.ceil(window / interval) + 1)
        self._lock = threading.Lock()

    def record(self, lag: float | None, *, at: float | None = None) -> None:
        at = time.time() if at is None else at
        if lag is not None and (math.isnan(lag) or lag < 0):
            lag = None if math.isnan(lag) else 0.0
        with self._lock:
            last = self._samples[-1] if self._samples else None
            if last is not None and at < last.at:
                return  # a clock step backwards: ignore rather than reorder
            if last is not None and int(last.at // self.interval) == int(at // self.interval):
                worst = None if last.lag is None or lag is None else max(last.lag, lag)
                self._samples[-1] = Sample(at, worst)
                return
            self._samples.append(Sample(at, lag))

    def samples(self, *, now: float | None = None) -> list[Sample]:
        """The samples of the last `window` seconds, oldest first."""
        now = time.time() if now is None else now
        with self._lock:
            return [s for s in self._samples if now - self.window <= s.at <= now + 1.0]

    async def sample(self, lag: Callable[[], float | None], stop: asyncio.Event) -> None:
        """Record `lag()` every `interval` seconds until `stop` is set."""
        while not stop.is_set():
            self.record(_call_lag(lag))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)


def _call_lag(lag: Callable[[], float | None] | None) -> float | None:
    if lag is None:
        return None
    try:
        value = lag()
    except Exception as e:  # a broken callable must not break the page
        log.debug("lag callable failed: %s", type(e).__name__)
        return None
    return None if value is None or math.isnan(value) else max(0.0, float(value))


# ---- recent errors -------------------------------------------------------------------------

_DB_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
MAX_MESSAGE = 500


def scrub(text: str) -> str:
    """`redact` (Stripe keys, webhook secrets) plus database passwords, on one line."""
    text = _PASSWORD_KV.sub(r"\1***", _DB_PASSWORD.sub(r"\1***@", redact(text)))
    return " ".join(text.split())


@dataclass(slots=True)
class ErrorEntry:
    at: float  # the last occurrence
    level: str
    logger: str
    message: str
    count: int = 1
    first_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "first_at": _iso(self.first_at or self.at),
            "level": self.level,
            "logger": self.logger,
            "message": self.message,
            "count": self.count,
        }


class RecentErrors(logging.Handler):
    """The last `capacity` WARNING+ log records, redacted, newest first.

    A record repeating the one before (same logger, level and message: a failing poll
    retried every few seconds) bumps its count instead of taking a new slot. Only the
    message is kept (with the exception's type, never its traceback). Install it with
    `install()` on the `stripesync` logger; `uninstall()` removes it.
    """

    def __init__(self, capacity: int = 50, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._entries: deque[ErrorEntry] = deque(maxlen=capacity)
        self._installed: list[logging.Logger] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we can
            message = str(record.msg)
        if record.exc_info and record.exc_info[0] is not None:
            message = f"{message} ({record.exc_info[0].__name__})"
        message = scrub(message)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
        entry = ErrorEntry(record.created, record.levelname, record.name, message)
        entry.first_at = record.created
        last = self._entries[-1] if self._entries else None
        if (
            last is not None
            and (last.level, last.logger, last.message) == (entry.level, entry.logger, message)
        ):
            last.count += 1
            last.at = record.created
            return
        self._entries.append(entry)

    def entries(self) -> list[ErrorEntry]:
        """Newest first (copies)."""
        with self._guard():
            return [
                ErrorEntry(e.at, e.level, e.logger, e.message, e.count, e.first_at)
                for e in reversed(self._entries)
            ]

    def clear(self) -> None:
        with self._guard():
            self._entries.clear()

    def _guard(self) -> contextlib.AbstractContextManager[Any]:
        return self.lock if self.lock is not None else contextlib.nullcontext()

    def install(self, logger: logging.Logger | str = "stripesync") -> RecentErrors:
        target = logging.getLogger(logger) if isinstance(logger, str) else logger
        if self not in target.handlers:
            target.addHandler(self)
            self._installed.append(target)
        return self

    def uninstall(self) -> None:
        for target in self._installed:
            target.removeHandler(self)
        self._installed.clear()


# ---- collecting the data -------------------------------------------------------------------


class StatusCollector:
    """Reads what the page shows. One per page: it caches the slow queries of big
    tables between requests."""

    def __init__(
        self,
        pool: AsyncConnectionPool,  # type: ignore[type-arg]
        schema: str = "stripe",
        *,
        lag: Callable[[], float | None] | None = None,
        history: FreshnessHistory | None = None,
        errors: RecentErrors | None = None,
        catalog: Catalog | None = None,
        collections: Sequence[str] | None = None,
        lag_budget: float | None = None,
        phase: Callable[[], str] | None = None,
        clock_offset: Callable[[], float | None] | None = None,
    ) -> None:
        self.pool = pool
        self.clock_offset = clock_offset  # Stripe's clock minus this machine's
        self.schema = schema
        self.lag = lag
        self.history = history if history is not None else FreshnessHistory()
        self.errors = errors
        self.catalog = catalog or build_catalog()
        self.collections = list(collections or [])
        self.lag_budget = lag_budget
        self.phase = phase
        self.db_timeout = 3.0  # seconds to wait for a pooled connection
        self._slow: dict[str, tuple[float, datetime | None]] = {}

    async def collect(self) -> dict[str, Any]:
        now = time.time()
        lag = _call_lag(self.lag) if self.lag is not None else None
        if self.lag is not None:
            self.history.record(lag, at=now)
        phase: str | None = None
        if self.phase is not None:
            with contextlib.suppress(Exception):
                phase = str(self.phase())
        data: dict[str, Any] = {
            "generated_at": _iso(now),
            "schema": self.schema,
            "phase": phase,
            "stripe_clock_offset_seconds": _clock_offset(self.clock_offset),
            "database": {"ok": True, "error": None},
            "freshness": {
                "lag_seconds": None if lag is None else round(lag, 3),
                "lag_budget_seconds": self.lag_budget,
                "window_seconds": self.history.window,
                "interval_seconds": self.history.interval,
                "history": [
                    {
                        "at": _iso(s.at),
                        "t": round(s.at, 3),
                        "lag_seconds": None if s.lag is None else round(s.lag, 3),
                    }
                    for s in self.history.samples(now=now)
                ],
            },
            "events_cursor": None,
            "summary": {},
            "collections": [],
            "errors": [e.as_json() for e in self.errors.entries()] if self.errors else [],
        }
        if self.lag is None:
            data["freshness"]["lag_seconds"] = None
        try:
            rows, cursor = await self._collections(now)
        except (psycopg.Error, OSError, TimeoutError) as e:
            # the reason without its text: a connection error can carry the URL
            data["database"] = {"ok": False, "error": f"database unavailable ({type(e).__name__})"}
            rows, cursor = [], None
        data["collections"] = rows
        data["events_cursor"] = cursor
        summary: dict[str, Any] = {s: 0 for s in STATES}
        for r in rows:
            summary[r["state"]] = summary.get(r["state"], 0) + 1
        summary["collections"] = len(rows)
        summary["rows"] = sum(r["rows"] or 0 for r in rows)
        summary["rows_estimated"] = any(r["rows_estimated"] for r in rows)
        data["summary"] = summary
        return data

    async def _collections(self, now: float) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        s = quote(self.schema)
        async with self.pool.connection(timeout=self.db_timeout) as conn, conn.transaction():
            await conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            cur = await conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f"{s}._collection_state",)
            )
            migrated = (await cur.fetchone() or (False,))[0]
            states: dict[str, tuple[Any, ...]] = {}
            relists: dict[str, tuple[Any, ...]] = {}
            cursor: dict[str, Any] | None = None
            if migrated:
                cur = await conn.execute(
                    "SELECT collection, state, skipped_reason, objects, started_at, "
                    f"finished_at FROM {s}._collection_state"  # type: ignore[arg-type]
                )
                states = {r[0]: r for r in await cur.fetchall()}
                with contextlib.suppress(psycopg.errors.UndefinedTable):
                    async with conn.transaction():  # a savepoint: older schemas lack it
                        cur = await conn.execute(
                            "SELECT collection, relisted_at, listed, repaired, removed, "
                            f"skipped_reason FROM {s}._relist_state"  # type: ignore[arg-type]
                        )
                        relists = {r[0]: r for r in await cur.fetchall()}
                cur = await conn.execute(
                    f"SELECT event_id, event_created FROM {s}._events_cursor "  # type: ignore[arg-type]
                    "WHERE name = 'live'"
                )
                row = await cur.fetchone()
                if row is not None:
                    cursor = {
                        "event_id": row[0],
                        "event_created": _iso(row[1]) if row[1] is not None else None,
                    }
            cur = await conn.execute(
                "SELECT c.relname, c.reltuples::float8, c.relpages, "
                "pg_relation_size(c.oid) / current_setting('block_size')::int "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                (self.schema,),
            )
            tables = {r[0]: r[1:] for r in await cur.fetchall()}
            names = list(dict.fromkeys([*states, *self.collections]))
            for c in self.catalog:  # tables filled without a backfill (events, proxy)
                if c.name not in states and c.table in tables and tables[c.table][2] > 0:
                    names.append(c.name)
            names = sorted(n for n in set(names) if n in self.catalog)
            small = [
                n
                for n in names
                if self.catalog[n].table in tables
                and tables[self.catalog[n].table][2] <= EXACT_COUNT_PAGES
            ]
            counts = await _exact_counts(conn, s, [self.catalog[n].table for n in small])
            out: list[dict[str, Any]] = []
            for name in names:
                c = self.catalog[name]
                st = states.get(name)
                rows: int | None = None
                estimated = False
                last: datetime | None = None
                if c.table in counts:
                    rows, last = counts[c.table]
                elif c.table in tables:
                    reltuples, relpages, pages = tables[c.table]
                    if reltuples >= 0 and relpages > 0:
                        rows = round(reltuples / relpages * pages)
                    else:
                        rows = max(0, round(reltuples))
                    estimated = True
                    last = await self._slow_last(conn, s, c.table, now)
                state = st[1] if st else ("live" if rows else "pending")
                rl = relists.get(name)
                out.append(
                    {
                        "collection": name,
                        "table": c.table,
                        "rows": rows,
                        "rows_estimated": estimated,
                        "state": state,
                        "skipped_reason": scrub(st[2]) if st and st[2] else None,
                        "objects_backfilled": st[3] if st else 0,
                        "backfill_started_at": _iso(st[4]) if st and st[4] else None,
                        "backfill_finished_at": _iso(st[5]) if st and st[5] else None,
                        "last_change_at": _iso(last) if last else None,
                        "relisted_at": _iso(rl[1]) if rl else None,
                        "relist": (
                            {
                                "listed": rl[2],
                                "repaired": rl[3],
                                "removed": rl[4],
                                "skipped_reason": scrub(rl[5]) if rl[5] else None,
                            }
                            if rl
                            else None
                        ),
                    }
                )
        return out, cursor

    async def _slow_last(
        self,
        conn: psycopg.AsyncConnection[Any],
        s: str,
        table: str,
        now: float,
    ) -> datetime | None:
        cached = self._slow.get(table)
        if cached is not None and now - cached[0] < SLOW_QUERY_TTL:
            return cached[1]
        try:
            async with conn.transaction():
                cur = await conn.execute(
                    f"SELECT max(_synced_at) FROM {s}.{quote(table)}"  # type: ignore[arg-type]
                )
                row = await cur.fetchone()
        except psycopg.errors.QueryCanceled:  # over the statement timeout: unknown
            row = None
        value = row[0] if row else None
        self._slow[table] = (now, value)
        return value


async def _exact_counts(
    conn: psycopg.AsyncConnection[Any], s: str, tables: list[str]
) -> dict[str, tuple[int, datetime | None]]:
    if not tables:
        return {}
    parts = [
        f"SELECT %s::text, count(*), max(_synced_at) FROM {s}.{quote(t)}" for t in tables
    ]
    cur = await conn.execute(" UNION ALL ".join(parts), tables)  # type: ignore[arg-type]
    return {r[0]: (int(r[1]), r[2]) for r in await cur.fetchall()}


# ---- routes --------------------------------------------------------------------------------


def status_routes(collector: StatusCollector, *, refresh_seconds: int = 15) -> list[Route]:
    """`GET /` (the HTML page) and `GET /status.json` of what `collector` reads, for
    `create_app(routes=...)`."""

    async def page(request: Request) -> Response:
        data = await collector.collect()
        return HTMLResponse(
            render_page(data, refresh_seconds=refresh_seconds),
            headers={"Cache-Control": "no-store"},
        )

    async def as_json(request: Request) -> Response:
        text = json.dumps(data_safe(await collector.collect()), default=str)
        return Response(
            text, media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    return [
        Route("/", page, methods=["GET"]),
        Route("/status.json", as_json, methods=["GET"]),
    ]


def data_safe(value: Any) -> Any:
    """Every string of the data through `scrub` (defence in depth: the sources are
    redacted already)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: data_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [data_safe(v) for v in value]
    return value


# ---- HTML ------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Escaped, redacted text of any value."""
    return html.escape(scrub(str(value)), quote=True)


def _iso(value: float | datetime) -> str:
    if isinstance(value, datetime):
        dt = value.astimezone(UTC)
    else:
        dt = datetime.fromtimestamp(value, UTC)
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _ago(text: str | None, now: float) -> str:
    if not text:
        return "—"
    secs = max(0.0, now - _parse_iso(text))
    if secs < 90:
        return f"{secs:.0f} s ago"
    if secs < 90 * 60:
        return f"{secs / 60:.0f} min ago"
    if secs < 36 * 3600:
        return f"{secs / 3600:.0f} h ago"
    return f"{secs / 86400:.0f} d ago"


def _when(text: str | None, now: float) -> str:
    if not text:
        return '<span class="muted">—</span>'
    return f'<time datetime="{_e(text)}" title="{_e(text)}">{_e(_ago(text, now))}</time>'


def _seconds(lag: float | None) -> str:
    if lag is None:
        return "—"
    if lag < 10:
        return f"{lag:.1f} s"
    if lag < 120:
        return f"{lag:.0f} s"
    if lag < 7200:
        return f"{lag / 60:.0f} min"
    return f"{lag / 3600:.1f} h"


def _rows(r: dict[str, Any]) -> str:
    if r["rows"] is None:
        return '<span class="muted">no table</span>'
    text = f"{r['rows']:,}"
    if r["rows_estimated"]:
        return f'<span title="estimate from pg_class">≈{_e(text)}</span>'
    return _e(text)


@dataclass(frozen=True, slots=True)
class Problem:
    """One line of the page's problems section."""

    kind: str  # database, lag, failed, skipped, lagging
    title: str
    detail: str
    collection: str | None = None
    state: str | None = None


def find_problems(data: dict[str, Any]) -> list[Problem]:
    """What needs a look, worst first: the database, the live sync's lag, then the
    collections whose backfill failed, was skipped (or their re-list), or is still not
    done while the live sync runs (it lags: the backfill should be over by then)."""
    out: list[Problem] = []
    if not data["database"]["ok"]:
        out.append(Problem("database", "Database", str(data["database"]["error"])))
    fresh = data["freshness"]
    lag, budget = fresh["lag_seconds"], fresh["lag_budget_seconds"]
    phase = data.get("phase")
    if lag is not None and budget is not None and lag > budget:
        out.append(
            Problem("lag", "Live sync", f"{_seconds(lag)} behind Stripe, over the "
                    f"{_seconds(budget)} budget")
        )
    elif lag is None and phase == "live":
        out.append(Problem("lag", "Live sync", "not caught up with Stripe's events yet"))
    rows = data["collections"]
    for r in rows:
        if r["state"] == "failed":
            why = f": {r['skipped_reason']}" if r["skipped_reason"] else ""
            out.append(
                Problem("failed", r["collection"], f"backfill failed{why}", r["collection"],
                        r["state"])
            )
    for r in rows:
        relist = r.get("relist") or {}
        if r["state"] == "skipped":
            out.append(
                Problem("skipped", r["collection"], r["skipped_reason"] or "skipped",
                        r["collection"], r["state"])
            )
        elif relist.get("skipped_reason"):
            out.append(
                Problem("skipped", r["collection"], f"re-list: {relist['skipped_reason']}",
                        r["collection"], r["state"])
            )
    if phase == "live":
        for r in rows:
            if r["state"] in ("running", "pending"):
                what = "no table yet" if r["rows"] is None else (
                    "backfill still running" if r["state"] == "running"
                    else "backfill not started"
                )
                out.append(
                    Problem("lagging", r["collection"], f"{what} while the live sync runs",
                            r["collection"], r["state"])
                )
    return out


def split_collections(
    rows: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the collections holding rows, most rows first; the empty ones, by name)."""
    populated = sorted(
        (r for r in rows if r["rows"]), key=lambda r: (-r["rows"], r["collection"])
    )
    empty = sorted((r for r in rows if not r["rows"]), key=lambda r: r["collection"])
    return populated, empty


RECENT_SHOWN = 5  # warnings and errors shown unfolded; older ones fold


def _error_item(e: dict[str, Any], now: float) -> str:
    times = f" &times;{int(e['count'])}" if e["count"] > 1 else ""
    return (
        f'<li class="{_e(e["level"].lower())}"><div class="meta">'
        f'{_when(e["at"], now)} · <b>{_e(e["level"])}</b> · {_e(e["logger"])}'
        f"{times}</div><div class='msg'>{_e(e['message'])}</div></li>"
    )


def _badge(state: str) -> str:
    return f'<span class="badge {_e(state)}">{_e(state)}</span>'


def render_page(data: dict[str, Any], *, refresh_seconds: int = 15) -> str:
    """The page, top to bottom: problems (and the recent warnings and errors), the
    headline figures, the freshness chart, the collections holding rows, then one
    folded line for the empty collections."""
    now = _parse_iso(data["generated_at"])
    fresh = data["freshness"]
    lag = fresh["lag_seconds"]
    budget = fresh["lag_budget_seconds"]
    if lag is None:
        lag_class, lag_note = "bad", "not caught up yet"
    elif budget is not None and lag > budget:
        lag_class, lag_note = "bad", f"over the {_seconds(budget)} budget"
    else:
        lag_class, lag_note = "ok", "behind Stripe" if budget is None else (
            f"within the {_seconds(budget)} budget"
        )
    summary = data["summary"]
    phase = data.get("phase")
    problems = find_problems(data)
    errors = data["errors"]
    populated, empty = split_collections(data["collections"])
    parts: list[str] = []
    add = parts.append
    add("<!doctype html>")
    add('<html lang="en"><head><meta charset="utf-8">')
    add('<meta name="viewport" content="width=device-width, initial-scale=1">')
    if refresh_seconds > 0:
        add(f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">')
    add(f"<title>stripesync · {_e(data['schema'])}</title>")
    add(f"<style>{CSS}</style></head><body>")
    add("<header>")
    add(f"<h1>stripesync <span class='muted'>schema {_e(data['schema'])}</span></h1>")
    if phase:
        add(f'<span class="badge phase">{_e(phase)}</span>')
    add("</header>")

    count = len(problems) + len(errors)
    add(f'<section id="problems" class="problems" data-count="{count}">')
    if not count:
        add('<p class="allgood">No problem: no failed, skipped or lagging collection, '
            "no warning since the process started.</p>")
    else:
        add(f'<h2>Problems <span class="count">{count}</span></h2>')
    if problems:
        add('<ul class="problems">')
        for p in problems:
            coll = f' data-collection="{_e(p.collection)}"' if p.collection else ""
            badge = f" {_badge(p.state)}" if p.state else ""
            add(
                f'<li class="problem {_e(p.kind)}" data-problem="{_e(p.kind)}"{coll}>'
                f'<div class="what"><b class="name">{_e(p.title)}</b>{badge}</div>'
                f'<div class="msg">{_e(p.detail)}</div></li>'
            )
        add("</ul>")
    if errors:
        add('<h3>Recent warnings and errors</h3><ul class="errors">')
        for e in errors[:RECENT_SHOWN]:
            add(_error_item(e, now))
        add("</ul>")
        if len(errors) > RECENT_SHOWN:
            older = len(errors) - RECENT_SHOWN
            add(f'<details class="older"><summary>{older} older warning'
                f'{"" if older == 1 else "s"} and errors</summary><ul class="errors">')
            for e in errors[RECENT_SHOWN:]:
                add(_error_item(e, now))
            add("</ul></details>")
    add("</section>")

    add('<section class="cards">')
    add(
        f'<div class="stat {lag_class}"><div class="label">Live sync lag</div>'
        f'<div class="value" id="lag">{_e(_seconds(lag))}</div>'
        f'<div class="note">{_e(lag_note)}</div></div>'
    )
    add(
        f'<div class="stat"><div class="label">Collections</div>'
        f'<div class="value">{summary.get("collections", 0)}</div>'
        f'<div class="note">{summary.get("done", 0)} done · {summary.get("skipped", 0)} '
        f'skipped · {summary.get("running", 0) + summary.get("pending", 0)} to go</div></div>'
    )
    total = f"{summary.get('rows', 0):,}"
    add(
        f'<div class="stat"><div class="label">Rows</div>'
        f'<div class="value">{"≈" if summary.get("rows_estimated") else ""}{_e(total)}</div>'
        f'<div class="note">across the synced tables</div></div>'
    )
    cursor = data.get("events_cursor") or {}
    add(
        '<div class="stat"><div class="label">Events cursor</div>'
        f'<div class="value small">{_e(cursor.get("event_id") or "—")}</div>'
        f'<div class="note">{_when(cursor.get("event_created"), now)}</div></div>'
    )
    add("</section>")

    add('<section><h2>Freshness, last hour</h2>')
    add(render_chart(fresh, now))
    add("</section>")

    add('<section id="populated"><h2>Collections holding rows '
        f'<span class="count">{len(populated)}</span></h2>')
    if not data["collections"]:
        add('<p class="muted">No collection yet: the backfill has not started.</p>')
    elif not populated:
        add('<p class="muted">No collection holds rows yet.</p>')
    else:
        reasons = any(_reason(r) for r in populated)
        add('<div class="scroll"><table class="collections"><thead><tr>')
        heads = ["Collection", "Rows", "Backfill", "Last change", "Last re-list"]
        for h in heads + (["Skipped reason"] if reasons else []):
            cls = ' class="num"' if h == "Rows" else ""
            add(f'<th scope="col"{cls}>{h}</th>')
        add("</tr></thead><tbody>")
        for r in populated:
            add(f'<tr class="state-{_e(r["state"])}" data-collection="{_e(r["collection"])}">')
            add(f'<th scope="row" class="name">{_name(r["collection"])}</th>')
            add(f'<td class="num">{_rows(r)}</td>')
            add(f"<td>{_badge(r['state'])}</td>")
            add(f'<td>{_when(r["last_change_at"], now)}</td>')
            add(f'<td>{_when(r["relisted_at"], now)}</td>')
            if reasons:
                reason = _reason(r)
                add(f'<td class="reason">{_e(reason) if reason else "<span class=muted>—</span>"}'
                    "</td>")
            add("</tr>")
        add("</tbody></table></div>")
    add("</section>")

    if empty:
        states: dict[str, int] = {}
        for r in empty:
            states[r["state"]] = states.get(r["state"], 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in sorted(states.items(), key=lambda x: -x[1]))
        add(f'<section id="empty"><details class="empty"><summary><b>{len(empty)} empty '
            f'collection{"" if len(empty) == 1 else "s"}</b> '
            f'<span class="muted">{_e(detail)}</span></summary><ul class="empty">')
        for r in empty:
            notes = []
            if r["rows"] is None:
                notes.append("no table")
            if r["relisted_at"]:
                notes.append(f"re-listed {_when(r['relisted_at'], now)}")
            if r["last_change_at"]:
                notes.append(f"changed {_when(r['last_change_at'], now)}")
            note = f'<span class="note">{" · ".join(notes)}</span>' if notes else ""
            reason = _reason(r)
            title = f' title="{_e(reason)}"' if reason else ""
            add(
                f'<li data-collection="{_e(r["collection"])}"{title}>'
                f'<span class="name">{_name(r["collection"])}</span>{_badge(r["state"])}{note}</li>'
            )
        add("</ul></details></section>")
    add(
        f'<footer>Generated {_e(data["generated_at"])}; refreshes every '
        f'{int(refresh_seconds)} s · <a href="status.json">status.json</a> · '
        '<a href="metrics">metrics</a> · <a href="health">health</a></footer>'
    )
    add("</body></html>")
    return "\n".join(parts)


def _name(collection: str) -> str:
    """A collection's name that may wrap after its `_` and `.` on a narrow screen."""
    return _e(collection).replace("_", "_<wbr>").replace(".", ".<wbr>")


def _reason(r: dict[str, Any]) -> str | None:
    reason: str | None = r["skipped_reason"]
    relist = r.get("relist") or {}
    if not reason and relist.get("skipped_reason"):
        reason = f"re-list: {relist['skipped_reason']}"
    return reason


def render_chart(fresh: dict[str, Any], now: float) -> str:
    """The lag of the last `window` seconds: lines in an SVG stretched to the width
    (strokes keep their width), labels in HTML so they stay readable on a phone."""
    window = float(fresh["window_seconds"])
    interval = float(fresh["interval_seconds"])
    budget = fresh.get("lag_budget_seconds")
    samples = [(float(s["t"]), s["lag_seconds"]) for s in fresh["history"]]
    lags = [lag for _, lag in samples if lag is not None]
    ymax = _nice_ceiling(max([*lags, budget or 0.0, 1.0]) * 1.1)
    start = now - window

    def x(t: float) -> float:
        return round(min(max(t - start, 0.0), window), 1)

    def y(lag: float) -> float:
        return round(100.0 - min(lag, ymax) / ymax * 100.0, 2)

    body: list[str] = []
    for frac in (0.25, 0.5, 0.75):
        body.append(
            f'<line class="grid" x1="0" x2="{window:g}" y1="{100 * frac:g}" '
            f'y2="{100 * frac:g}" vector-effect="non-scaling-stroke"/>'
        )
    if budget is not None and budget <= ymax:
        body.append(
            f'<line class="budget" x1="0" x2="{window:g}" y1="{y(budget)}" y2="{y(budget)}" '
            'vector-effect="non-scaling-stroke"><title>lag budget</title></line>'
        )
    segment: list[tuple[float, float]] = []
    segments: list[list[tuple[float, float]]] = []
    down: list[list[float]] = []  # [first, last] times of runs of "not caught up"
    prev_t: float | None = None
    for t, lag in samples:
        gap = prev_t is not None and t - prev_t > 2.5 * interval
        if lag is None or gap:
            if segment:
                segments.append(segment)
            segment = []
        if lag is None:
            if down and not gap and down[-1][1] == prev_t:
                down[-1][1] = t
            else:
                down.append([t, t])
        else:
            segment.append((t, lag))
        prev_t = t
    if segment:
        segments.append(segment)
    for first, last in down:
        left, right = x(first - interval / 2), x(last + interval / 2)
        body.append(
            f'<rect class="down" x="{left}" y="92" width="{round(right - left, 1)}" '
            'height="8"><title>not caught up</title></rect>'
        )
    for seg in segments:
        if len(seg) == 1:  # one sample: a short dash around it
            t, lag = seg[0]
            seg = [(t - interval / 2, lag), (t + interval / 2, lag)]
        points = " ".join(f"{x(t)},{y(lag)}" for t, lag in seg)
        body.append(
            f'<polyline class="lag" points="{points}" vector-effect="non-scaling-stroke"/>'
        )
    latest = lags[-1] if lags else None
    label = (
        f"Live sync lag over the last {window / 60:.0f} minutes; "
        + (f"latest {_seconds(latest)}, worst {_seconds(max(lags))}" if lags else "no sample yet")
    )
    empty = "" if samples else '<div class="empty muted">no sample yet</div>'
    return (
        '<figure class="chart">'
        '<div class="plot">'
        f'<div class="ylab"><span>{_e(_seconds(ymax))}</span><span>{_e(_seconds(ymax / 2))}'
        "</span><span>0 s</span></div>"
        f'<div class="area">{empty}'
        f'<svg viewBox="0 0 {window:g} 100" preserveAspectRatio="none" role="img" '
        f'aria-label="{_e(label)}"><title>{_e(label)}</title>{"".join(body)}</svg>'
        "</div></div>"
        f'<div class="xlab"><span>{window / 60:.0f} min ago</span>'
        f"<span>{window / 120:.0f} min ago</span><span>now</span></div>"
        f'<figcaption><span class="key lag"></span> lag (worst per {interval:g} s)'
        + ('<span class="key budget"></span> budget' if budget is not None else "")
        + '<span class="key down"></span> not caught up</figcaption>'
        "</figure>"
    )


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 times 10^k at or above `value`."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        candidate = m * 10.0**exp
        if candidate >= value - 1e-9:
            return candidate
    return 10.0 ** (exp + 1)


CSS = """
:root{--fg:#1a1f36;--muted:#697386;--line:#e3e8ee;--bg:#f6f8fa;--card:#fff;
--ok:#0e7a3a;--bad:#c0123c;--warn:#a15c00;--run:#2f5bd3;--accent:#635bff}
*{box-sizing:border-box}
body{margin:0;padding:16px;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
sans-serif;color:var(--fg);background:var(--bg);max-width:1200px;margin:auto}
header{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
h1{font-size:22px;margin:4px 0 12px}h2{font-size:17px;margin:22px 0 8px}
.muted{color:var(--muted);font-weight:normal}
.alert{background:#fde8ec;color:var(--bad);padding:10px 12px;border-radius:8px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px;
margin-top:18px}
.stat{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px}
.stat .label{color:var(--muted);font-size:13px}
.stat .value{font-size:26px;font-weight:600;font-variant-numeric:tabular-nums}
.stat .value.small{font-size:15px;word-break:break-all;padding:6px 0}
.stat .note{color:var(--muted);font-size:13px}
.stat.ok .value{color:var(--ok)}.stat.bad .value{color:var(--bad)}
.chart{margin:0;background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:12px}
.plot{display:flex;gap:6px;height:180px}
.ylab{display:flex;flex-direction:column;justify-content:space-between;font-size:12px;
color:var(--muted);text-align:right;min-width:44px}
.area{position:relative;flex:1;border-left:1px solid var(--line);
border-bottom:1px solid var(--line)}
.area svg{position:absolute;inset:0;width:100%;height:100%}
.area .empty{position:absolute;inset:0;display:flex;align-items:center;
justify-content:center}
.xlab{display:flex;justify-content:space-between;font-size:12px;color:var(--muted);
margin-left:50px}
.grid{stroke:var(--line);stroke-width:1}
.budget{stroke:var(--warn);stroke-width:1.5;stroke-dasharray:6 4}
polyline.lag{fill:none;stroke:var(--accent);stroke-width:2;stroke-linejoin:round}
rect.down{fill:var(--bad)}
figcaption{font-size:12px;color:var(--muted);margin-top:6px;display:flex;gap:6px;
align-items:center;flex-wrap:wrap}
.key{display:inline-block;width:14px;height:3px;margin-left:8px}
.key.lag{background:var(--accent)}.key.budget{background:var(--warn)}
.key.down{background:var(--bad);height:8px;width:8px}
.scroll{overflow-x:auto;background:var(--card);border:1px solid var(--line);
border-radius:10px}
table{width:100%;border-collapse:separate;border-spacing:0}
th,td{padding:7px 10px;text-align:left;border-bottom:1px solid var(--line);
vertical-align:top;white-space:nowrap}
tbody tr:last-child>*{border-bottom:none}
thead th{font-size:13px;color:var(--muted);font-weight:600;background:#fafbfc}
th.num{text-align:right}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th.name{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:14px;
font-weight:normal;position:sticky;left:0;background:var(--card)}
td.reason{color:var(--warn);white-space:normal;min-width:240px;overflow-wrap:anywhere}
h2 .count{display:inline-block;min-width:22px;padding:0 7px;border-radius:999px;
font-size:13px;text-align:center;background:#eef0f4;color:var(--muted);vertical-align:2px}
.problems h2 .count{background:var(--bad);color:#fff}
.problems h2{margin-top:8px}
h3{font-size:15px;margin:14px 0 8px}
.allgood{background:#e3f6ea;color:var(--ok);padding:10px 12px;border-radius:8px;margin:0}
ul.problems{list-style:none;padding:0;margin:0}
ul.problems li{background:var(--card);border:1px solid var(--line);
border-left:4px solid var(--warn);border-radius:8px;padding:8px 10px;margin-bottom:8px}
ul.problems li.database,ul.problems li.lag,ul.problems li.failed{border-left-color:var(--bad)}
ul.problems .what{display:flex;gap:8px;align-items:center;flex-wrap:wrap}
ul.problems .name{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:14px}
ul.problems .msg{overflow-wrap:anywhere;font-size:14px;color:var(--fg)}
details.empty,details.older{background:var(--card);border:1px solid var(--line);
border-radius:10px;margin-top:22px}
details.older{margin-top:0}
details>summary{padding:10px 12px;cursor:pointer}
details.older>summary{font-size:13px;color:var(--muted)}
details.older ul.errors{padding:0 10px 2px}
ul.empty{list-style:none;margin:0;padding:4px 12px 12px;display:grid;
grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:2px 16px}
ul.empty li{display:flex;align-items:center;gap:8px;flex-wrap:wrap;padding:3px 0;
border-bottom:1px solid var(--line);min-width:0}
ul.empty .name{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;
overflow-wrap:anywhere;min-width:0}
ul.empty .note{font-size:12px;color:var(--muted)}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;
font-weight:600;background:#eef0f4;color:var(--muted)}
.badge.done{background:#e3f6ea;color:var(--ok)}
.badge.running,.badge.phase{background:#e6edfc;color:var(--run)}
.badge.skipped{background:#fff3dc;color:var(--warn)}
.badge.failed{background:#fde8ec;color:var(--bad)}
.badge.live{background:#efe9ff;color:var(--accent)}
ul.errors{list-style:none;padding:0;margin:0}
ul.errors li{background:var(--card);border:1px solid var(--line);
border-left:4px solid var(--warn);border-radius:8px;padding:8px 10px;margin-bottom:8px}
ul.errors li.error,ul.errors li.critical{border-left-color:var(--bad)}
ul.errors .meta{font-size:12px;color:var(--muted)}
ul.errors .msg{overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:13px}
footer{margin:24px 0 8px;font-size:12px;color:var(--muted)}
a{color:var(--accent)}
@media (max-width:600px){
body{padding:10px;font-size:14px}
.cards{grid-template-columns:1fr 1fr;gap:8px}
.stat .value{font-size:20px}
ul.empty{grid-template-columns:1fr}
th,td{padding:6px 8px}
th.name{white-space:normal;min-width:110px;max-width:160px}
.plot{height:140px}
}
"""


def _clock_offset(read: Callable[[], float | None] | None) -> float | None:
    """Stripe's clock minus this machine's, rounded; None before any response."""
    if read is None:
        return None
    with contextlib.suppress(Exception):
        offset = read()
        return None if offset is None else round(offset, 3)
    return None
