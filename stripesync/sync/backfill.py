"""Backfill: page every collection into its table, fast, within the rate limit, resumable.

- Top-level lists are paged 100 at a time, newest first. A list that accepts `created`
  filters and has more than one page is split into time slices paged in parallel: the
  first page gives the newest objects, a search with parallel `limit=1` probes finds the
  oldest, and the range between is cut into slices of equal width. A worker that runs
  out of slices takes the older half of the slice with the most left to read, so a
  skewed account (most objects recent) still keeps every worker busy to the end.
- Children are read through their parents, once the parent's rows are in: the list a
  parent embeds (an invoice's `lines`) is used when it is complete, otherwise the
  child list is fetched per parent.
- Every page is written through the store in one transaction with its cursor row
  (`_backfill_cursor`), so a backfill killed at any moment resumes where it stopped.
- The events cursor is recorded before anything is read, so the live sync replays
  whatever changed during the backfill.
- A collection Stripe refuses (not enabled, missing permission, endpoint gone) is
  recorded in `_collection_state` with the reason and skipped; the others finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from stripesync.catalog import (
    Catalog,
    Collection,
    Read,
    ReadKind,
    build_catalog,
    embedded_field,
)
from stripesync.obs.metrics import BACKFILL_OBJECTS
from stripesync.schema.columns import quote
from stripesync.store import Incoming, Store
from stripesync.store.store import fetch_time
from stripesync.stripe_api.client import StripeApi, StripeApiError
from stripesync.sync.paging import PAGE, ParentGone, Skip, accepts, get_page

log = logging.getLogger("stripesync.backfill")

SLICES = 16  # time slices of a large collection, paged at once
PROBES = 8  # requests per round of the search for the oldest object
MIN_SPLIT_OBJECTS = 2 * 100  # a slice is split only when this much seems left
PARENT_WORKERS = 16  # parents whose children are read at once, per collection
WHOLE = "all"  # the slice name of an unsliced list


@dataclass(slots=True)
class Progress:
    """What a progress display needs, per collection."""

    collection: str
    state: str = "pending"
    objects: int = 0
    pages: int = 0
    slices_total: int = 0
    slices_done: int = 0
    parents_total: int = 0
    parents_done: int = 0
    skipped_reason: str | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class BackfillResult:
    done: list[str]
    skipped: dict[str, str]  # collection -> reason
    objects: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.skipped


class Backfill:
    def __init__(
        self,
        api: StripeApi,
        pool: AsyncConnectionPool,  # type: ignore[type-arg]
        *,
        schema: str = "stripe",
        catalog: Catalog | None = None,
        collections: Sequence[str] | None = None,
        concurrency: int = 32,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.api = api
        self.pool = pool
        self.schema = schema
        self.catalog = catalog or build_catalog()
        self.selected = self.catalog.select(list(collections) if collections else None)
        self.store = Store(schema)
        self.progress = {c.name: Progress(c.name) for c in self.selected}
        self.on_progress = on_progress
        self._sem = asyncio.Semaphore(concurrency)
        self._done_events: dict[str, asyncio.Event] = {
            c.name: asyncio.Event() for c in self.catalog
        }

    # ---- entry point -------------------------------------------------------------------

    async def run(self) -> BackfillResult:
        started = time.monotonic()
        await self.record_events_cursor()
        states = await self._states()
        selected = {c.name for c in self.selected}
        for c in self.catalog:
            # parents that are not selected, or already complete, do not hold children up
            if c.name not in selected or states.get(c.name) in ("done", "skipped"):
                self._done_events[c.name].set()
        results = await asyncio.gather(
            *(self._collection(c, states.get(c.name)) for c in self.selected),
            return_exceptions=True,
        )
        skipped: dict[str, str] = {}
        done: list[str] = []
        for c, r in zip(self.selected, results, strict=True):
            if isinstance(r, BaseException):
                if isinstance(r, StripeApiError) and r.authentication:
                    raise r
                if isinstance(r, asyncio.CancelledError):
                    raise r
                reason = f"failed: {r}"
                log.error("%s: %s", c.name, reason)
                await self._set_state(c.name, "failed", reason)
                skipped[c.name] = reason
            elif r is None:
                done.append(c.name)
            else:
                skipped[c.name] = r
        objects = sum(p.objects for p in self.progress.values())
        return BackfillResult(done, skipped, objects, time.monotonic() - started)

    async def record_events_cursor(self) -> None:
        """Remember where the events stream stood before the first page is read."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT 1 FROM {quote(self.schema)}._events_cursor WHERE name = 'live'"
            )
            if await cur.fetchone():
                return
        try:
            page = await self.api.get("/v1/events", {"limit": 1})
        except StripeApiError as e:
            if e.authentication:
                raise
            log.warning("events are not readable (%s): the live sync will not replay", e)
            page = {"data": []}
        newest = page["data"][0] if page.get("data") else None
        async with self.pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO {quote(self.schema)}._events_cursor (name, event_id, event_created) "
                "VALUES ('live', %s, %s) ON CONFLICT (name) DO NOTHING",
                (
                    newest["id"] if newest else None,
                    newest["created"] if newest else int(self.api.clock.now()),
                ),
            )

    # ---- per collection ----------------------------------------------------------------

    async def _collection(self, c: Collection, state: str | None) -> str | None:
        p = self.progress[c.name]
        if state == "done":
            p.state = "done"
            self._emit(p)
            return None
        try:
            await self._set_state(c.name, "running")
            p.state = "running"
            self._emit(p)
            for read in c.reads:
                await self._read(c, read)
            await self._set_state(c.name, "done")
            p.state = "done"
            self._emit(p)
            log.info("%s: backfilled %d objects in %d pages", c.name, p.objects, p.pages,
                     extra={"per_collection": True})  # fmt: skip
            return None
        except Skip as s:
            reason = str(s)
            p.state, p.skipped_reason = "skipped", reason
            self._emit(p)
            await self._set_state(c.name, "skipped", reason)
            log.warning("%s: skipped: %s", c.name, reason)
            return reason
        finally:
            self._done_events[c.name].set()

    async def _read(self, c: Collection, read: Read) -> None:
        kind = read.kind
        if kind in (ReadKind.LIST, ReadKind.LEGACY) and read.path and not read.parent:
            await self._list(c, read)
        elif kind in (ReadKind.NESTED, ReadKind.LEGACY) and read.parent:
            await self._nested(c, read)
        elif kind is ReadKind.SINGLETON and read.path:
            await self._singleton(c, read)
        elif kind in (ReadKind.EVENTS, ReadKind.WRITE_ONLY, ReadKind.UPCOMING):
            return  # filled by the live sync and the proxy
        elif kind is ReadKind.REFERENCE or (kind is ReadKind.LEGACY and not read.path):
            await self._references(c, read)

    async def _singleton(self, c: Collection, read: Read) -> None:
        assert read.path
        fetched = fetch_time(self.api.clock.now())
        obj = await self._get(c, read, read.path, {})
        async with self.pool.connection() as conn, conn.transaction():
            await self.store.upsert(conn, c, [Incoming(obj, stripe_time=fetched)])
        self._count(c, 1)

    # ---- top-level lists, sliced by time -------------------------------------------------

    async def _list(self, c: Collection, read: Read) -> None:
        """Page a list with up to SLICES workers. A worker with nothing left to do splits
        the slice with the most left to read, so uneven slices never leave one worker
        paging alone at the end."""
        assert read.path
        rows = await self._cursor_rows(c, read.path)
        slices = [_Slice.of(r) for r in rows] if rows else await self._plan(c, read)
        p = self.progress[c.name]
        p.slices_total += len(slices)
        pending = deque(s for s in slices if not s.done)
        p.slices_done += len(slices) - len(pending)
        active: list[_Slice] = []
        splitting = asyncio.Lock()

        async def worker() -> None:
            while True:
                if pending:
                    s: _Slice | None = pending.popleft()
                else:
                    async with splitting:
                        s = await self._split(c, read, active)
                if s is None:
                    return
                active.append(s)
                try:
                    await self._page_slice(c, read, s)
                finally:
                    active.remove(s)

        await asyncio.gather(*(worker() for _ in range(SLICES)))

    async def _plan(self, c: Collection, read: Read) -> list[_Slice]:
        """First page, then (for a large, created-filterable list) the time slices."""
        assert read.path
        params = {**read.params, "limit": PAGE}
        fetched = fetch_time(self.api.clock.now())
        page = await self._get(c, read, read.path, params)
        data = page.get("data", [])
        head_key = _slice_key(read.path, "head")
        if not page.get("has_more"):
            await self._commit_page(c, data, fetched, head_key, "", None, True)
            return [_Slice(head_key, done=True)]
        if not read.created_filter:
            whole = _slice_key(read.path, WHOLE)
            after = data[-1]["id"]
            await self._commit_page(c, data, fetched, whole, "", after, False)
            return [_Slice(whole, after=after)]
        last_created = int(data[-1]["created"])
        oldest = await self._oldest_created(c, read, last_created)
        slices = [_Slice(head_key, done=True)]
        async with self.pool.connection() as conn, conn.transaction():
            await self._store_page(conn, c, data, fetched, None)
            await self._save_cursor(conn, c, head_key, "", None, True, len(data))
            for lo, hi in _cut(oldest, last_created + 1, SLICES):
                s = _Slice(_slice_key(read.path, f"{lo}:{hi}"), lo=lo, hi=hi)
                await self._save_cursor(conn, c, s.key, "", None, False, 0)
                slices.append(s)
        self._count(c, len(data))
        return slices

    async def _oldest_created(self, c: Collection, read: Read, upper: int) -> int:
        """The `created` of the oldest object, to the minute: each round asks PROBES
        `limit=1` pages at once, so the search costs a few round trips, not twenty."""
        assert read.path
        path = read.path
        lo, hi = 0, upper  # invariant: nothing older than lo; something at or before hi

        async def newest_before(t: int) -> int | None:
            page = await self._get(c, read, path, {**read.params, "limit": 1, "created[lte]": t})
            return int(page["data"][0]["created"]) if page.get("data") else None

        while hi - lo > 60:
            probes = sorted({lo + (hi - lo) * (i + 1) // (PROBES + 1) for i in range(PROBES)})
            found = await asyncio.gather(*(newest_before(t) for t in probes))
            for t, created in zip(probes, found, strict=True):
                if created is not None:
                    hi = min(hi, created)
                    break
                lo = t + 1
            if hi <= lo:
                return hi
        return lo

    async def _split(self, c: Collection, read: Read, active: list[_Slice]) -> _Slice | None:
        """Take the older half of what is left of the active slice with the most left to
        read, or None when nothing is worth splitting. Called by one worker at a time."""
        assert read.path
        best: tuple[float, _Slice] | None = None
        for s in active:
            left = s.left()
            if left is not None and left >= MIN_SPLIT_OBJECTS and (not best or left > best[0]):
                best = (left, s)
        if best is None:
            return None
        owner = best[1]
        async with owner.lock, self.pool.connection() as conn, conn.transaction():
            # under the owner's lock: its bounds and cursor row do not move meanwhile
            if owner.done or owner.lo is None or owner.hi is None:
                return None
            top = owner.last_created if owner.last_created is not None else owner.hi
            mid = owner.lo + (top - owner.lo) // 2
            if mid <= owner.lo:
                return None
            taken = _Slice(_slice_key(read.path, f"{owner.lo}:{mid}"), lo=owner.lo, hi=mid)
            # the owner keeps [mid, hi): its cursor row is renamed with it
            new_key = _slice_key(read.path, f"{mid}:{owner.hi}")
            await conn.execute(
                f"UPDATE {quote(self.schema)}._backfill_cursor SET slice = %s "
                "WHERE collection = %s AND slice = %s AND parent_id = ''",
                (new_key, c.name, owner.key),
            )
            await self._save_cursor(conn, c, taken.key, "", None, False, 0, page=False)
            owner.key, owner.lo = new_key, mid
        self.progress[c.name].slices_total += 1
        return taken

    async def _page_slice(self, c: Collection, read: Read, s: _Slice) -> None:
        assert read.path
        params: dict[str, Any] = {**read.params, "limit": PAGE}
        while True:
            if s.lo is not None and s.hi is not None:
                params["created[gte]"] = s.lo  # may move up when another worker splits s
                params["created[lt]"] = s.hi
            if s.after:
                params["starting_after"] = s.after
            fetched = fetch_time(self.api.clock.now())
            page = await self._get(c, read, read.path, params)
            data = page.get("data", [])
            more = bool(page.get("has_more")) and bool(data)
            if data:
                s.after = data[-1]["id"]
                s.last_created = int(data[-1]["created"])
                s.objects += len(data)
                if s.lo is not None and s.last_created < s.lo:
                    more = False  # the rest was split off to another worker
            async with s.lock:
                await self._commit_page(c, data, fetched, s.key, "", s.after, not more)
            if not more:
                break
        s.done = True
        self.progress[c.name].slices_done += 1
        self._emit(self.progress[c.name])

    # ---- children through their parents -------------------------------------------------

    async def _nested(self, c: Collection, read: Read) -> None:
        assert read.parent and read.path
        parent = self.catalog[read.parent]
        await self._done_events[parent.name].wait()
        done_parents = {r["parent_id"] for r in await self._cursor_rows(c, read.path) if r["done"]}
        field_name = (
            embedded_field(c.name) if c.name in build_catalog() and read is c.read else None
        ) or read.path.rstrip("/").rsplit("/", 1)[-1]
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {quote(parent.key)}, _raw -> %s, "
                "extract(epoch FROM _stripe_time)::float8 "
                f"FROM {quote(self.schema)}.{quote(parent.table)}",
                (field_name,),
            )
            parents = [(pid, (embedded, when)) for pid, embedded, when in await cur.fetchall()]
        p = self.progress[c.name]
        p.parents_total += len(parents)
        p.parents_done += sum(1 for pid, _ in parents if pid in done_parents)
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for pid, embedded in parents:
            if pid not in done_parents:
                queue.put_nowait((pid, embedded))

        async def worker() -> None:
            while not queue.empty():
                pid, embedded = queue.get_nowait()
                await self._children_of(c, read, pid, embedded)

        await asyncio.gather(*(worker() for _ in range(min(PARENT_WORKERS, queue.qsize()))))

    async def _children_of(
        self, c: Collection, read: Read, parent_id: str, parent: tuple[Any, float]
    ) -> None:
        """One parent's children: the list it embeds when complete (as old as the parent's
        copy), else fetched."""
        assert read.path
        key = _slice_key(read.path, WHOLE)
        embedded, parent_time = parent
        if (
            isinstance(embedded, dict)
            and embedded.get("object") == "list"
            and not embedded.get("has_more")
        ):
            items = [o for o in embedded.get("data", []) if accepts(c, o)]
            await self._commit_page(c, items, parent_time, key, parent_id, None, True)
            self.progress[c.name].parents_done += 1
            return
        if "{" in read.path:
            path = read.path.replace("{" + str(read.parent_param) + "}", parent_id)
            params: dict[str, Any] = {**read.params, "limit": PAGE}
        else:
            path = read.path
            params = {**read.params, "limit": PAGE, str(read.parent_param): parent_id}
        after: str | None = None
        while True:
            if after:
                params["starting_after"] = after
            fetched = fetch_time(self.api.clock.now())
            try:
                page = await self._get(c, read, path, params, child=True)
            except ParentGone:
                page = {"data": [], "has_more": False}
            data = page.get("data", [])
            more = bool(page.get("has_more")) and bool(data)
            after = data[-1]["id"] if data else after
            items = [o for o in data if accepts(c, o)]
            await self._commit_page(c, items, fetched, key, parent_id, after, not more)
            if not more:
                break
        self.progress[c.name].parents_done += 1
        self._emit(self.progress[c.name])

    # ---- collections reached only through references -----------------------------------

    async def _references(self, c: Collection, read: Read) -> None:
        """Retrieve the referenced ids (when Stripe has a retrieve endpoint) or take the
        expanded objects the referencing rows carry."""
        for ref in read.references:
            if ref.collection not in self.catalog:
                continue
            await self._done_events[ref.collection].wait()
        ids: set[str] = set()
        objects: list[dict[str, Any]] = []
        async with self.pool.connection() as conn:
            for ref in read.references:
                if ref.collection not in self.catalog:
                    continue
                src = self.catalog[ref.collection]
                path = "{" + ",".join(ref.field.split(".")) + "}"
                cur = await conn.execute(
                    f"SELECT DISTINCT _raw #> %s FROM {quote(self.schema)}.{quote(src.table)} "
                    f"WHERE _raw #> %s IS NOT NULL AND _raw #> %s <> 'null'::jsonb",
                    (path, path, path),
                )
                for (value,) in await cur.fetchall():
                    if isinstance(value, dict) and value.get("object") in c.objects:
                        objects.append(value)
                    elif isinstance(value, str) and read.retrieve:
                        ids.add(value)
        fetched = fetch_time(self.api.clock.now())
        if objects:
            await self._commit_page(c, objects, fetched, f"ref#{c.name}", "", None, True)
        if ids and read.retrieve:
            retrieve = read.retrieve

            async def one(i: str) -> dict[str, Any] | None:
                try:
                    return await self._get(c, read, retrieve.replace("{id}", i), {}, child=True)
                except ParentGone:
                    return None  # a dangling reference: the object is gone

            got = await asyncio.gather(*(one(i) for i in sorted(ids)))
            found = [g for g in got if g]
            await self._commit_page(c, found, fetched, f"ref#{c.name}", "", None, True)

    # ---- plumbing ------------------------------------------------------------------------

    async def _get(
        self,
        c: Collection,
        read: Read,
        path: str,
        params: dict[str, Any],
        *,
        child: bool = False,
    ) -> dict[str, Any]:
        """One list or retrieve request; a refusal skips the collection. For a child
        list or a referenced object (`child`), a 404 `resource_missing` means the parent
        or the object is gone, not that the collection is unavailable."""
        async with self._sem:
            return await get_page(self.api, read, path, params, child=child)

    async def _commit_page(
        self,
        c: Collection,
        data: list[dict[str, Any]],
        fetched: float,
        slice_key: str,
        parent_id: str,
        after: str | None,
        done: bool,
    ) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await self._store_page(conn, c, data, fetched, parent_id or None)
            await self._save_cursor(conn, c, slice_key, parent_id, after, done, len(data))
        self._count(c, len(data))

    async def _store_page(
        self,
        conn: psycopg.AsyncConnection,  # type: ignore[type-arg]
        c: Collection,
        data: list[dict[str, Any]],
        fetched: float,
        parent_id: str | None,
    ) -> None:
        if data:
            await self.store.upsert(
                conn, c, [Incoming(o, stripe_time=fetched, parent_id=parent_id) for o in data]
            )

    async def _save_cursor(
        self,
        conn: psycopg.AsyncConnection,  # type: ignore[type-arg]
        c: Collection,
        slice_key: str,
        parent_id: str,
        after: str | None,
        done: bool,
        objects: int,
        *,
        page: bool = True,
    ) -> None:
        pages = 1 if page else 0
        await conn.execute(
            f"INSERT INTO {quote(self.schema)}._backfill_cursor "
            "(collection, slice, parent_id, starting_after, done, pages, objects) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (collection, slice, parent_id) DO UPDATE SET "
            "starting_after = excluded.starting_after, done = excluded.done, "
            f"pages = {quote(self.schema)}._backfill_cursor.pages + excluded.pages, "
            f"objects = {quote(self.schema)}._backfill_cursor.objects + excluded.objects, "
            "updated_at = now()",
            (c.name, slice_key, parent_id, after, done, pages, objects),
        )
        await conn.execute(
            f"UPDATE {quote(self.schema)}._collection_state SET objects = objects + %s, "
            "pages = pages + %s, updated_at = now() WHERE collection = %s",
            (objects, pages, c.name),
        )

    async def _cursor_rows(self, c: Collection, path: str) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT slice, parent_id, starting_after, done FROM "
                f"{quote(self.schema)}._backfill_cursor WHERE collection = %s AND slice LIKE %s",
                (c.name, path + "#%"),
            )
            return [
                {"slice": s, "parent_id": p, "starting_after": a, "done": d}
                for s, p, a, d in await cur.fetchall()
            ]

    async def _states(self) -> dict[str, str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT collection, state FROM {quote(self.schema)}._collection_state"
            )
            return dict(await cur.fetchall())

    async def _set_state(self, name: str, state: str, reason: str | None = None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO {quote(self.schema)}._collection_state (collection, state, "
                "skipped_reason, started_at, finished_at) VALUES (%s, %s, %s, "
                "CASE WHEN %s = 'running' THEN now() END, "
                "CASE WHEN %s IN ('done', 'skipped', 'failed') THEN now() END) "
                "ON CONFLICT (collection) DO UPDATE SET state = excluded.state, "
                "skipped_reason = excluded.skipped_reason, "
                "started_at = coalesce(excluded.started_at, "
                f"{quote(self.schema)}._collection_state.started_at), "
                "finished_at = excluded.finished_at, updated_at = now()",
                (name, state, reason, state, state),
            )

    def _count(self, c: Collection, n: int) -> None:
        BACKFILL_OBJECTS.labels(c.name).inc(n)
        p = self.progress[c.name]
        p.objects += n
        p.pages += 1
        self._emit(p)

    def _emit(self, p: Progress) -> None:
        if self.on_progress:
            self.on_progress(p)


@dataclass(eq=False)
class _Slice:
    """A part of a list being paged: [lo, hi) of `created` (None: unbounded)."""

    key: str  # the slice's cursor row
    lo: int | None = None
    hi: int | None = None
    after: str | None = None
    done: bool = False
    last_created: int | None = None  # `created` of the last object read
    objects: int = 0  # read by this run
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Slice:
        bounds = row["slice"].rsplit("#", 1)[-1]
        lo = hi = None
        if ":" in bounds:
            a, b = bounds.split(":")
            lo, hi = int(a), int(b)
        return cls(row["slice"], lo=lo, hi=hi, after=row["starting_after"], done=row["done"])

    def left(self) -> float | None:
        """About how many objects are left to read, or None when it cannot be split."""
        if self.done or self.lo is None or self.hi is None:
            return None
        if self.last_created is None or self.objects == 0:
            return float(MIN_SPLIT_OBJECTS)  # nothing read yet: assume it is worth it
        read_span = max(1, self.hi - self.last_created)
        return self.objects / read_span * max(0, self.last_created - self.lo)


def _slice_key(path: str, name: str) -> str:
    return f"{path}#{name}"


def _cut(lo: int, hi: int, n: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into at most n slices of equal width, newest first."""
    width = max(1, -(-(hi - lo) // n))
    out = []
    start = lo
    while start < hi:
        out.append((start, min(hi, start + width)))
        start += width
    return list(reversed(out))
