"""Backfill: page every collection into its table, fast, within the rate limit, resumable.

- Top-level lists are paged 100 at a time, newest first. A list that accepts `created`
  filters and has more than one page is split into time slices paged in parallel. The
  slices partition the list, so every object is read once: the first page goes on as
  the newest slice (from where it stopped), and the time below it is cut into slices
  whose widths double with age, starting at the time the first page spanned; the oldest
  is open below. A worker that runs out of slices takes the older half of the slice
  with the most left to read, between two of that slice's pages (never across one), so
  a skewed account still keeps every worker busy to the end.
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
import math
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
from stripesync.catalog.carry import Carry, carries_of, carry_for
from stripesync.obs.metrics import BACKFILL_OBJECTS
from stripesync.schema.columns import quote
from stripesync.store import Incoming, Store
from stripesync.store.store import fetch_time
from stripesync.stripe_api.client import StripeApi, StripeApiError
from stripesync.sync.paging import PAGE, ParentGone, Skip, accepts, get_page

log = logging.getLogger("stripesync.backfill")

SLICES = 16  # workers of one list: slices of a large collection paged at once
PLANNED = 8  # slices planned below a first page at most (the last one open below)
MIN_SPLIT_OBJECTS = 2 * 100  # a slice is split only when this much seems left
# no Stripe object is older (Stripe opened in 2011): where estimates of what an open-below
# slice holds start; the slice itself stays open below, so nothing older is ever missed
FLOOR = 1_262_304_000  # 2010-01-01
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
    # the events cursor was already there: an earlier backfill (or run) started this copy
    copy_existed: bool = False
    already: list[str] = field(default_factory=list)  # of `done`: complete before this run

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
        self.concurrency = concurrency
        self._sem = asyncio.Semaphore(concurrency)
        self._paging = 0  # slices of top-level lists being paged, over every list
        self._long_lists = 0  # top-level lists whose first page said there is more
        # per parent collection: the children its list pages carry in this backfill
        self._carrying: dict[str, list[Carry]] = {}
        self._done_events: dict[str, asyncio.Event] = {
            c.name: asyncio.Event() for c in self.catalog
        }

    # ---- entry point -------------------------------------------------------------------

    async def run(self) -> BackfillResult:
        started = time.monotonic()
        existed = not await self.record_events_cursor()
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
        already = [name for name in done if states.get(name) == "done"]
        return BackfillResult(
            done, skipped, objects, time.monotonic() - started, existed, already
        )

    async def record_events_cursor(self) -> bool:
        """Remember where the events stream stood before the first page is read; False
        when a cursor was already there (the copy was started earlier)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT 1 FROM {quote(self.schema)}._events_cursor WHERE name = 'live'"
            )
            if await cur.fetchone():
                return False
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
        return True

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
        """Page a list with up to SLICES workers. The slices partition the list by
        `created`, so no page is read twice; a worker with nothing left to do takes the
        older half of the slice with the most left to read, between two of its pages."""
        assert read.path
        rows = await self._cursor_rows(c, read.path)
        await self._carry(c, fresh=not rows)
        slices = [_Slice.of(r) for r in rows] if rows else await self._plan(c, read)
        p = self.progress[c.name]
        p.slices_total += len(slices)
        pending = deque(s for s in slices if not s.done)
        p.slices_done += len(slices) - len(pending)
        active: list[_Slice] = []
        splitting = asyncio.Lock()
        paged = _Pages()  # counts pages read, wakes workers waiting for one

        async def worker() -> None:
            while True:
                s: _Slice | None = None
                if pending:
                    s = pending.popleft()
                elif not active:
                    return
                else:
                    seen = paged.count
                    async with splitting:
                        s = await self._split(c, read, active)
                    if s is None:
                        if self._room() and all(a.left() is not None for a in active):
                            return  # nothing worth splitting, and nothing unknown
                        await paged.after(seen)  # another page, then try again
                        continue
                active.append(s)
                self._paging += 1
                try:
                    await self._page_slice(c, read, s, paged)
                finally:
                    self._paging -= 1
                    active.remove(s)
                    await paged.one()

        await asyncio.gather(*(worker() for _ in range(SLICES)))

    async def _plan(self, c: Collection, read: Read) -> list[_Slice]:
        """The first page; then, for a list that goes on and takes `created` filters, the
        newest slice going on from where that page stopped, and the time below it cut into
        PLANNED slices whose widths double with age, starting at the time the first page
        spanned. The oldest is open below: it is split as it is read (see `_split`)."""
        assert read.path
        params = self._list_params(c, read)
        fetched = fetch_time(self.api.clock.now())
        page = await self._get(c, read, read.path, params)
        data = page.get("data", [])
        more = bool(page.get("has_more")) and bool(data)
        if not read.created_filter or not more:
            whole = _Slice(_slice_key(read.path, WHOLE), after=data[-1]["id"] if more else None,
                           done=not more, splittable=False)  # fmt: skip
            await self._commit_page(c, data, fetched, whole.key, "", whole.after, whole.done)
            return [whole]
        newest, oldest_read = int(data[0]["created"]), int(data[-1]["created"])
        # the lists known to go on share the slices worth paging at once
        self._long_lists += 1
        planned = max(2, min(PLANNED, self._want() // self._long_lists))
        top = _Slice(_slice_key(read.path, f"{oldest_read}:"), lo=oldest_read, after=data[-1]["id"],
                     anchor=newest)  # fmt: skip
        top.note_page(newest, oldest_read, len(data))
        slices = [top]
        hi, width = oldest_read, max(1, newest - oldest_read)
        for i in range(planned):
            lo = None if i == planned - 1 or hi - width <= FLOOR else hi - width
            slices.append(_Slice(_slice_key(read.path, f"{_bound(lo)}:{hi}"), lo=lo, hi=hi,
                                 anchor=newest))  # fmt: skip
            if lo is None:
                break
            hi, width = lo, width * 2
        async with self.pool.connection() as conn, conn.transaction():
            carried = await self._store_carried(conn, c, data, fetched)
            await self._store_page(conn, c, data, fetched, None)
            await self._save_cursor(conn, c, top.key, "", top.after, False, len(data))
            for s in slices[1:]:
                await self._save_cursor(conn, c, s.key, "", None, False, 0, page=False)
        self._count(c, len(data))
        self._count_carried(carried)
        return slices

    def _want(self) -> int:
        """Slices worth paging at once, over every list: enough requests in flight to
        use the whole rate, with room for slow answers. Each slice costs a part-empty
        last page, so more than that only wastes requests."""
        rate, latency = self.api.limiter.rate, self.api.latency or 0.3
        return max(4, min(self.concurrency, math.ceil(rate * latency * 1.5) + 2))

    def _room(self) -> bool:
        return self._paging < self._want()

    async def _split(self, c: Collection, read: Read, active: list[_Slice]) -> _Slice | None:
        """Take the older part of what is left of the active slice with the most left to
        read, or None when nothing is worth splitting (or enough slices are paged at
        once). Called by one worker of the list at a time; waits for the slice's page in
        flight, so the parts never overlap."""
        assert read.path
        if not self._room():
            return None
        best: tuple[float, _Slice] | None = None
        for s in active:
            left = s.left()
            if left is not None and left >= MIN_SPLIT_OBJECTS and (not best or left > best[0]):
                best = (left, s)
        if best is None:
            return None
        owner = best[1]
        async with owner.lock:
            await owner.committed()  # its cursor row is renamed below
            cut = owner.cut()
            if owner.done or cut is None:
                return None
            taken = _Slice(_slice_key(read.path, f"{_bound(owner.lo)}:{cut}"), lo=owner.lo,
                           hi=cut, anchor=owner.anchor)  # fmt: skip
            new_key = _slice_key(read.path, f"{cut}:{_bound(owner.hi)}")
            async with self.pool.connection() as conn, conn.transaction():
                # the owner keeps [cut, hi): its cursor row is renamed with it
                await conn.execute(
                    f"UPDATE {quote(self.schema)}._backfill_cursor SET slice = %s "
                    "WHERE collection = %s AND slice = %s AND parent_id = ''",
                    (new_key, c.name, owner.key),
                )
                await self._save_cursor(conn, c, taken.key, "", None, False, 0, page=False)
            owner.key, owner.lo = new_key, cut
        self.progress[c.name].slices_total += 1
        return taken

    async def _page_slice(self, c: Collection, read: Read, s: _Slice, paged: _Pages) -> None:
        """Page one slice to its end. Each page is read under the slice's lock, so a
        split happens between two pages, never across one; a page is committed while
        the next one is read, in order."""
        assert read.path
        params = self._list_params(c, read)
        more = True
        try:
            while more:
                async with s.lock:
                    if s.lo is not None:
                        params["created[gte]"] = s.lo  # moves up when another worker splits s
                    if s.hi is not None:
                        params["created[lt]"] = s.hi
                    if s.after:
                        params["starting_after"] = s.after
                    fetched = fetch_time(self.api.clock.now())
                    page = await self._get(c, read, read.path, params)
                    data = page.get("data", [])
                    more = bool(page.get("has_more")) and bool(data)
                    if data:
                        s.after = data[-1]["id"]
                        s.note_page(int(data[0]["created"]), int(data[-1]["created"]), len(data))
                    await s.committed()  # the pages of a slice commit in order
                    s.commit = asyncio.ensure_future(
                        self._commit_page(c, data, fetched, s.key, "", s.after, not more)
                    )
                await paged.one()
        finally:
            await s.committed()
        s.done = True
        self.progress[c.name].slices_done += 1
        self._emit(self.progress[c.name])

    # ---- children through their parents -------------------------------------------------

    async def _nested(self, c: Collection, read: Read) -> None:
        assert read.parent and read.path
        parent = self.catalog[read.parent]
        await self._done_events[parent.name].wait()
        rows = await self._cursor_rows(c, read.path)
        done_parents = {r["parent_id"] for r in rows if r["done"]}
        carry = carry_for(c.name, read.parent)
        if carry is not None and not carry.stored:
            if _slice_key(read.path, "carried") in {r["slice"] for r in rows}:
                # the parent's list pages carried these children: read in full only the
                # parents whose list was truncated, or whose hint says there may be some
                parents: list[tuple[str, Any]] = [
                    (r["parent_id"], (None, 0.0)) for r in rows if r["parent_id"] and not r["done"]
                ]
                done_parents = set()
                carry = None
            else:
                carry = None  # not carried (the parent was read earlier): per parent
                parents = await self._parent_rows(parent, read, c)
        else:
            parents = await self._parent_rows(parent, read, c, carry)
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

    async def _parent_rows(
        self, parent: Collection, read: Read, c: Collection, hint: Carry | None = None
    ) -> list[tuple[str, Any]]:
        """Every stored parent with the list it embeds (or, with a stored `hint`, the
        parents the hint says may have children) and its copy's time."""
        assert read.path
        field_name = hint.field if hint else (
            embedded_field(c.name) if c.name in build_catalog() and read is c.read else None
        ) or read.path.rstrip("/").rsplit("/", 1)[-1]  # fmt: skip
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {quote(parent.key)}, _raw -> %s, "
                "extract(epoch FROM _stripe_time)::float8 "
                f"FROM {quote(self.schema)}.{quote(parent.table)}",
                (field_name,),
            )
            found = await cur.fetchall()
        if hint is not None and hint.hint is not None:
            check = hint.hint
            return [(pid, (None, when)) for pid, value, when in found if check(value)]
        return [(pid, (embedded, when)) for pid, embedded, when in found]

    async def _children_of(
        self, c: Collection, read: Read, parent_id: str, parent: tuple[Any, float]
    ) -> None:
        """One parent's children: the list it embeds when complete (as old as the parent's
        copy), else fetched."""
        assert read.path
        key = _slice_key(read.path, WHOLE)
        embedded, parent_time = parent
        if _complete_list(embedded):
            items = [o for o in embedded.get("data", []) if accepts(c, o)]
            await self._commit_page(c, items, parent_time, key, parent_id, None, True, page=False)
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
        *,
        page: bool = True,
    ) -> None:
        """Store what one request (`page`), or one parent's embedded list, brought, with
        the children its objects carry and its cursor row, in one transaction."""
        async with self.pool.connection() as conn, conn.transaction():
            carried = await self._store_carried(conn, c, data, fetched) if not parent_id else {}
            await self._store_page(conn, c, data, fetched, parent_id or None)
            await self._save_cursor(
                conn, c, slice_key, parent_id, after, done, len(data), page=page
            )
        self._count(c, len(data), pages=1 if page else 0)
        self._count_carried(carried)

    # ---- children carried by their parents' list pages ----------------------------------

    async def _carry(self, c: Collection, *, fresh: bool) -> None:
        """Which selected children this list's pages carry: all of them when the list
        starts now (a marker row tells each child so, even after a restart), else those
        whose marker an earlier run left (a list resumed without carrying keeps not
        carrying; its children are then read per parent)."""
        carries = [
            cr for cr in carries_of(c.name)
            if cr.child in self.progress and self._child_read(cr) is not None
        ]  # fmt: skip
        if not carries:
            return
        async with self.pool.connection() as conn, conn.transaction():
            if fresh:
                for cr in carries:
                    await self._save_cursor(
                        conn, self.catalog[cr.child], self._marker(cr), "", None, True, 0,
                        page=False,
                    )  # fmt: skip
                self._carrying[c.name] = carries
                return
            cur = await conn.execute(
                f"SELECT collection, slice FROM {quote(self.schema)}._backfill_cursor "
                "WHERE slice LIKE %s",
                ("%#carried",),
            )
            marked = {(name, key) for name, key in await cur.fetchall()}
        self._carrying[c.name] = [cr for cr in carries if (cr.child, self._marker(cr)) in marked]

    def _child_read(self, cr: Carry) -> Read | None:
        return next((r for r in self.catalog[cr.child].reads if r.parent == cr.parent), None)

    def _marker(self, cr: Carry) -> str:
        read = self._child_read(cr)
        assert read is not None and read.path
        return _slice_key(read.path, "carried")

    def _list_params(self, c: Collection, read: Read) -> dict[str, Any]:
        params: dict[str, Any] = {**read.params, "limit": PAGE}
        expand = sorted({cr.expand for cr in self._carrying.get(c.name, ())})
        if expand:
            params["expand"] = expand
        return params

    async def _store_carried(
        self,
        conn: psycopg.AsyncConnection,  # type: ignore[type-arg]
        c: Collection,
        data: list[dict[str, Any]],
        fetched: float,
    ) -> dict[str, int]:
        """Take the carried fields out of a parent page's objects (its rows keep the
        object as Stripe sends it unasked) and store the children: a complete list is
        the parent's children; a truncated list, or a hint that there may be some,
        leaves a cursor row for the child to read that parent's list in full."""
        carries = self._carrying.get(c.name)
        if not carries:
            return {}
        found: dict[str, list[Incoming]] = {cr.child: [] for cr in carries}
        fetch: list[tuple[Carry, str]] = []
        for obj in data:
            taken = {f: obj.pop(f, None) for f in {cr.field for cr in carries}}
            for cr in carries:
                value = taken[cr.field]
                if cr.hint is not None:
                    if cr.hint(value):
                        fetch.append((cr, obj["id"]))
                elif _complete_list(value):
                    child = self.catalog[cr.child]
                    found[cr.child] += [
                        Incoming(o, stripe_time=fetched, parent_id=obj["id"])
                        for o in value.get("data", []) if accepts(child, o)
                    ]  # fmt: skip
                else:
                    fetch.append((cr, obj["id"]))
        counts: dict[str, int] = {}
        for name, items in found.items():
            if items:
                await self.store.upsert(conn, self.catalog[name], items)
            counts[name] = len(items)
        for cr, parent_id in fetch:
            read = self._child_read(cr)
            assert read is not None and read.path
            await self._save_cursor(
                conn, self.catalog[cr.child], _slice_key(read.path, WHOLE), parent_id, None,
                False, 0, page=False,
            )  # fmt: skip
        return counts

    def _count_carried(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self._count(self.catalog[name], n, pages=0)

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

    def _count(self, c: Collection, n: int, *, pages: int = 1) -> None:
        BACKFILL_OBJECTS.labels(c.name).inc(n)
        p = self.progress[c.name]
        p.objects += n
        p.pages += pages
        self._emit(p)

    def _emit(self, p: Progress) -> None:
        if self.on_progress:
            self.on_progress(p)


class _Pages:
    """A count of pages read (and slices ended) that workers can wait on."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Condition()

    async def one(self) -> None:
        async with self._changed:
            self.count += 1
            self._changed.notify_all()

    async def after(self, seen: int) -> None:
        """Return once the count has moved past `seen`."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.count != seen)


@dataclass(eq=False)
class _Slice:
    """A part of a list being paged: [lo, hi) of `created` (None: unbounded)."""

    key: str  # the slice's cursor row
    lo: int | None = None
    hi: int | None = None
    after: str | None = None
    done: bool = False
    splittable: bool = True  # False for a list that takes no `created` filter
    anchor: int | None = None  # `created` of the list's newest object, when known
    newest: int | None = None  # `created` of the newest object this run read
    last_created: int | None = None  # `created` of the last object read
    objects: int = 0  # read by this run
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    commit: asyncio.Future[None] | None = None  # the commit of the page read last

    async def committed(self) -> None:
        """Wait for the page read last to be committed (its error raised here)."""
        if self.commit is not None:
            commit, self.commit = self.commit, None
            await commit

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Slice:
        bounds = row["slice"].rsplit("#", 1)[-1]
        lo = hi = None
        if ":" in bounds:
            a, b = bounds.split(":")
            lo, hi = (int(a) if a else None), (int(b) if b else None)
        return cls(row["slice"], lo=lo, hi=hi, after=row["starting_after"], done=row["done"],
                   splittable=":" in bounds)  # fmt: skip

    def note_page(self, newest: int, oldest: int, n: int) -> None:
        self.newest = newest if self.newest is None else max(self.newest, newest)
        self.last_created = oldest
        self.objects += n

    def left(self) -> float | None:
        """About how many objects are left to read; None while unknown (no page read
        yet); 0 when it cannot be split."""
        if self.done or not self.splittable:
            return 0.0
        if self.last_created is None or self.newest is None:
            return None
        density = self.objects / max(1, self.newest - self.last_created + 1)
        return density * max(0, self.last_created - (self.lo if self.lo is not None else FLOOR))

    def cut(self) -> int | None:
        """Where to split what is left, or None: the owner keeps [cut, hi), which holds
        every object not read yet that is as new as the last one read. A bounded slice
        is cut in the middle of what it has left. An open-below slice keeps as far back
        again from the list's newest object as it has reached and gives up the rest,
        still open below: the old end of a list is found in doubling steps, and only the
        last of them (older than every object) comes back empty."""
        last = self.last_created
        if last is None:
            return None
        if self.lo is not None:
            cut = self.lo + (last - self.lo) // 2
            return cut if self.lo < cut <= last else None
        if self.anchor is not None and self.anchor > last:
            cut = max(FLOOR, last - (self.anchor - last))
        else:
            lo = min(FLOOR, last)
            cut = lo + (last - lo) // 2
        return cut if cut <= last else None


def _complete_list(value: Any) -> bool:
    """A list object holding every item (`has_more` false)."""
    return isinstance(value, dict) and value.get("object") == "list" and not value.get("has_more")


def _slice_key(path: str, name: str) -> str:
    return f"{path}#{name}"


def _bound(t: int | None) -> str:  # a slice bound in a cursor row ('': open)
    return "" if t is None else str(t)
