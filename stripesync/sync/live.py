"""The live sync: poll GET /v1/events, apply new events oldest first, crash-safe.

The cursor (`_events_cursor`, name 'live') is the newest event applied. Each poll pages
forward from it with `ending_before` (Stripe returns the events just newer than the
cursor, newest first within a page), applies them oldest first, and commits the rows
with the new cursor in one transaction: after a crash the same events are fetched
again, and the ones already in the `event` table are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from stripesync.catalog import Catalog, Collection, build_catalog
from stripesync.catalog.entries import embedded_field
from stripesync.obs.metrics import EVENTS_APPLIED
from stripesync.schema.columns import quote
from stripesync.store import Store
from stripesync.store.store import fetch_time
from stripesync.stripe_api.client import StripeApi, StripeApiError, redact
from stripesync.sync.events import (
    Plan,
    Refetch,
    add_object,
    apply_plan,
    items_on_lines,
    plan_events,
)

log = logging.getLogger("stripesync.live")

RETENTION_SECONDS = 30 * 24 * 3600
MAX_EVENTS_PER_POLL = 1000
APPLIED_LOG_INTERVAL = 10.0  # seconds between "applied N events" info lines


@dataclass(slots=True)
class Fetched:
    """An object fetched again (None: gone), with the children it embeds in truncated
    lists listed in full."""

    ref: Refetch
    obj: dict[str, Any] | None
    fetched: float  # the Stripe-side time of the copy
    listed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class CursorExpired(Exception):
    """The saved cursor is older than Stripe keeps events: a re-backfill is needed."""


@dataclass(slots=True)
class PollResult:
    events: int
    applied: int
    refetched: int
    lag_seconds: float | None  # now - created of the newest event applied


class LiveSync:
    def __init__(
        self,
        api: StripeApi,
        pool: AsyncConnectionPool,  # type: ignore[type-arg]
        *,
        schema: str = "stripe",
        catalog: Catalog | None = None,
        poll_interval: float = 0.5,
        after_batch: Callable[[Plan], Awaitable[None]] | None = None,
    ) -> None:
        self.api = api
        self.pool = pool
        self.schema = schema
        self.catalog = catalog or build_catalog()
        self.store = Store(schema)
        self.poll_interval = poll_interval
        self.nudge = asyncio.Event()  # a verified webhook asks for an immediate poll
        self.events_applied = 0
        self.polls = 0
        self.last_event_created: float | None = None
        # the wall-clock time up to which every event is known to be applied: the start
        # of the last poll that was not cut short by a backlog
        self.caught_up_at: float | None = None
        # called after each applied batch, outside its transaction (upcoming invoices,
        # balance refresh); a failure there is logged, the cursor has already moved
        self.after_batch = after_batch
        # "applied N events" goes to the log at most once per APPLIED_LOG_INTERVAL
        self._unlogged = 0
        self._logged_at: float | None = None
        self.monotonic: Callable[[], float] = time.monotonic  # the log's clock

    def _log_applied(self, n: int, cursor: str) -> None:
        """At most one info line per APPLIED_LOG_INTERVAL, with the count since the last
        one (a busy account would write a line a poll); every batch at debug level."""
        self._unlogged += n
        log.debug("applied %d events (cursor %s)", n, cursor)
        now = self.monotonic()
        if self._logged_at is not None and now - self._logged_at < APPLIED_LOG_INTERVAL:
            return
        if self._unlogged:
            since = "" if self._logged_at is None else f" in {now - self._logged_at:.0f} s"
            log.info("applied %d events%s (cursor %s)", self._unlogged, since, cursor)
        self._unlogged = 0
        self._logged_at = now

    def lag_seconds(self) -> float | None:
        """How stale the copy may be: None before the first complete poll."""
        if self.caught_up_at is None:
            return None
        return max(0.0, self.api.clock.now() - self.caught_up_at)

    async def cursor(self) -> tuple[str | None, int | None]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT event_id, event_created FROM {quote(self.schema)}._events_cursor "
                "WHERE name = 'live'"
            )
            row = await cur.fetchone()
        return (row[0], row[1]) if row else (None, None)

    async def fetch_new(self, event_id: str | None, created: int | None) -> list[dict[str, Any]]:
        """Events newer than the cursor, oldest first (at most MAX_EVENTS_PER_POLL)."""
        if created is not None and created < self.api.clock.now() - RETENTION_SECONDS:
            raise CursorExpired(
                f"the events cursor is from {time.ctime(created)}, older than Stripe's "
                "30-day retention of events"
            )
        out: list[dict[str, Any]] = []
        if event_id is None:
            # no event existed when the cursor was recorded: everything since then
            params: dict[str, Any] = {"limit": 100, "created[gte]": created or 0}
            newest_first: list[dict[str, Any]] = []
            while True:
                page = await self.api.get("/v1/events", params)
                newest_first.extend(page.get("data", []))
                if not page.get("has_more") or len(newest_first) >= MAX_EVENTS_PER_POLL * 10:
                    break
                params["starting_after"] = newest_first[-1]["id"]
            return list(reversed(newest_first))
        before = event_id
        while len(out) < MAX_EVENTS_PER_POLL:
            try:
                page = await self.api.get("/v1/events", {"limit": 100, "ending_before": before})
            except StripeApiError as e:
                if e.status in (400, 404) and (e.param == "ending_before" or e.not_found):
                    raise CursorExpired(f"Stripe no longer has the cursor event: {e}") from None
                raise
            data = page.get("data", [])
            if not data:
                break
            out.extend(reversed(data))
            before = data[0]["id"]
            if not page.get("has_more"):
                break
        return out

    async def _refetch(self, items: list[Refetch]) -> list[Fetched]:
        async def one(r: Refetch) -> Fetched:
            c = self.catalog[r.collection]
            path = c.read.retrieve
            if path is None:
                return Fetched(r, None, fetch_time(self.api.clock.now()))
            # the last brace is the object's id; an earlier one is its parent's
            path = re.sub(r"\{[a-z_]+\}$", r.id, path)
            if "{" in path:
                if r.parent_id is None:
                    return Fetched(r, None, fetch_time(self.api.clock.now()))
                path = re.sub(r"\{[a-z_]+\}", r.parent_id, path, count=1)
            fetched = fetch_time(self.api.clock.now())
            try:
                obj = await self.api.get(path, stripe_version=c.read.api_version)
                return Fetched(r, obj, fetched, await self._truncated_children(c, obj))
            except StripeApiError as e:
                if e.not_found:
                    return Fetched(r, None, fetched)
                raise

        return list(await asyncio.gather(*(one(r) for r in items)))

    async def _truncated_children(
        self, c: Collection, obj: dict[str, Any]
    ) -> dict[str, list[dict[str, Any]]]:
        """The children a fetched object embeds in a truncated list (an invoice's `lines`
        past the first ten), listed in full, by child collection."""
        out: dict[str, list[dict[str, Any]]] = {}
        oid = obj.get(c.key)
        for child in self.catalog.children_of(c.name):
            name = embedded_field(child.name)
            v = obj.get(name) if name else None
            read = child.read
            if not (isinstance(v, dict) and v.get("has_more") and read.path and oid):
                continue
            param = "{" + str(read.parent_param) + "}"
            if param in read.path:
                path, params = read.path.replace(param, str(oid)), {"limit": 100}
            else:
                path, params = read.path, {"limit": 100, str(read.parent_param): str(oid)}
            items: list[dict[str, Any]] = []
            try:
                while True:
                    page = await self.api.get(
                        path, {**read.params, **params}, stripe_version=read.api_version
                    )
                    data = page.get("data", [])
                    items += [o for o in data if o.get("object") in child.objects]
                    if not (page.get("has_more") and data):
                        break
                    params["starting_after"] = data[-1]["id"]
            except StripeApiError as e:
                if e.not_found:  # the parent went meanwhile: its deletion event follows
                    continue
                raise
            out[child.name] = items
        return out

    async def poll_once(self) -> PollResult:
        started = self.api.clock.now()  # Stripe's time, as events' `created` are
        result = await self._poll()
        self.polls += 1
        if result.events < MAX_EVENTS_PER_POLL:
            self.caught_up_at = started
        elif self.last_event_created is not None:
            self.caught_up_at = self.last_event_created
        return result

    async def _poll(self) -> PollResult:
        event_id, created = await self.cursor()
        events = await self.fetch_new(event_id, created)
        if not events:
            return PollResult(0, 0, 0, None)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT id FROM {quote(self.schema)}.event WHERE id = ANY(%s)",
                ([e["id"] for e in events],),
            )
            seen = {r[0] for r in await cur.fetchall()}
        fresh = [e for e in events if e["id"] not in seen]
        plan = plan_events(fresh, catalog=self.catalog)
        refetched = await self._refetch(list(plan.refetch.values()))
        # the invoice items on the lines past those an invoice's events embedded
        more: dict[str, Refetch] = {}
        for f in refetched:
            if f.ref.collection == "invoice" and f.ref.id in plan.follow_lines:
                for item in items_on_lines(f.listed.get("line_item", [])):
                    if ("invoiceitem", item) not in plan.refetch:
                        more[item] = Refetch("invoiceitem", item, None)
        if more and "invoiceitem" in self.catalog:
            refetched += await self._refetch(list(more.values()))
        newest = events[-1]
        async with self.pool.connection() as conn, conn.transaction():
            applied = await apply_plan(conn, self.store, plan, catalog=self.catalog)
            fresh_copies = Plan()
            for f in refetched:
                # a deleted object retrieves as a stub: its deletion event does the work
                if f.obj is not None and f.obj.get("deleted") is not True:
                    # fetched after this batch was listed: newer than any of its events
                    # (ties go to the later write, and this one comes after them)
                    when = max(f.fetched, float(newest["created"]))
                    add_object(
                        fresh_copies,
                        self.catalog,
                        self.catalog[f.ref.collection],
                        f.obj,
                        when=when,
                        parent=f.ref.parent_id,
                        event_id=None,
                        listed=f.listed,
                    )
            await apply_plan(conn, self.store, fresh_copies, catalog=self.catalog)
            await conn.execute(
                f"INSERT INTO {quote(self.schema)}._events_cursor (name, event_id, event_created) "
                "VALUES ('live', %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "event_id = excluded.event_id, event_created = excluded.event_created, "
                "recorded_at = now()",
                (newest["id"], newest["created"]),
            )
        self.events_applied += len(fresh)
        self.last_event_created = float(newest["created"])
        for event_type, n in Counter(str(e.get("type")) for e in fresh).items():
            EVENTS_APPLIED.labels(event_type).inc(n)
        self._log_applied(len(fresh), str(newest["id"]))
        if self.after_batch is not None and fresh:
            try:
                await self.after_batch(plan)
            except StripeApiError as e:
                if e.authentication:
                    raise
                log.warning("after applying events: %s", e)
        lag = self.api.clock.now() - newest["created"]
        return PollResult(len(events), applied, len(refetched), lag)

    async def _back_off(self, stop: asyncio.Event, failures: int, e: Exception) -> None:
        """Wait before polling again after a failed poll: 0.5 s doubling to 30 s."""
        delay = min(30.0, self.poll_interval * 2 ** (failures - 1))
        log.error(
            "poll failed (%s: %s); retrying in %.1f s",
            type(e).__name__,
            redact(" ".join(str(e).split())),
            delay,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; a nudge (webhook) polls at once."""
        failures = 0
        while not stop.is_set():
            self.nudge.clear()  # a webhook arriving during the poll still counts
            try:
                result = await self.poll_once()
                failures = 0
            except CursorExpired:
                raise
            except StripeApiError as e:
                if e.authentication:
                    raise
                failures += 1
                await self._back_off(stop, failures, e)
                continue
            except Exception as e:  # a database hiccup must not end a months-long sync
                failures += 1
                await self._back_off(stop, failures, e)
                continue
            if result.events >= MAX_EVENTS_PER_POLL:
                continue  # a backlog: keep going without waiting
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.nudge.wait())]
            _, pending = await asyncio.wait(
                waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
            for w in pending:
                w.cancel()
